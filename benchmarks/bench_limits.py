"""The machine's real matmul limits, per number format, as the best of the libraries that reach them.

Measures, on `--threads` threads, large square and model-shaped matrix products in fp32, bf16 and int8 with
torch (oneDNN / MKL; int8 via torch._int_mm) and onnxruntime (MLAS: MatMul, MatMulInteger), and prints the
best throughput per format with the kernel that reached it. These are the ceilings that the inference and
training benchmarks state their fraction of (RESULTS.md). Nothing here is decided from CPU flags.

    python benchmarks/bench_limits.py [--threads 2] [--seconds 1.0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Callable

import numpy as np
import torch

# (M, K, N): a square product, and the shapes of one m3e-small / BERT-base layer at 1,024 tokens (32 x 32)
SHAPES = {"square 2048": (2048, 2048, 2048), "m3e-small FFN 1024x512x2048": (1024, 512, 2048),
          "BERT-base FFN 1024x768x3072": (1024, 768, 3072)}


def best_rate(fn: Callable[[], object], ops: float, seconds: float) -> float:
    """Best-of-runs operations per second (G), after one warm-up call, for about `seconds` of calls."""
    fn()
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return ops / best / 1e9


def torch_cases(m: int, k: int, n: int) -> dict[tuple[str, str], Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    ab, bb = a.bfloat16(), b.bfloat16()
    a8 = torch.randint(-127, 127, (m, k), dtype=torch.int8, generator=g)
    b8 = torch.randint(-127, 127, (k, n), dtype=torch.int8, generator=g)
    cases = {("fp32", "torch mm (oneDNN/MKL)"): lambda: torch.mm(a, b),
             ("bf16", "torch mm bf16 (oneDNN)"): lambda: torch.mm(ab, bb)}
    if hasattr(torch, "_int_mm"):
        cases[("int8", "torch._int_mm (oneDNN s8s8s32)")] = lambda: torch._int_mm(a8, b8)
    return cases


def ort_cases(m: int, k: int, n: int, threads: int) -> dict[tuple[str, str], Callable[[], object]]:
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return {}
    rng = np.random.default_rng(0)

    def session(op: str, a_type: int, b: np.ndarray, out_type: int) -> ort.InferenceSession:
        inputs = [helper.make_tensor_value_info("a", a_type, [m, k])]
        init = [helper.make_tensor("b", {np.float32: TensorProto.FLOAT, np.int8: TensorProto.INT8,
                                         np.uint8: TensorProto.UINT8}[b.dtype.type], b.shape, b.tobytes(), raw=True)]
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "mm", inputs,
                                  [helper.make_tensor_value_info("y", out_type, [m, n])], init)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    a32 = rng.standard_normal((m, k), dtype=np.float32)
    s32 = session("MatMul", TensorProto.FLOAT, rng.standard_normal((k, n), dtype=np.float32), TensorProto.FLOAT)
    a8 = rng.integers(0, 255, (m, k), dtype=np.uint8)             # MLAS's fast path: u8 activations, s8 weights
    s8 = session("MatMulInteger", TensorProto.UINT8, rng.integers(-127, 127, (k, n), dtype=np.int8),
                 TensorProto.INT32)
    del onnx
    return {("fp32", "onnxruntime MatMul (MLAS)"): lambda: s32.run(None, {"a": a32}),
            ("int8", "onnxruntime MatMulInteger u8s8 (MLAS)"): lambda: s8.run(None, {"a": a8})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per case (best of the calls in it)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    print(f"{cpu}; {args.threads} threads; torch {torch.__version__}")
    rows = []
    probe = (256, 256, 256)        # where a format is emulated (bf16 without hardware support: ~1 GFLOPS) one
    slow = {key: best_rate(fn, 2.0 * 256 ** 3, 0.2)      # big call takes minutes: report the probe instead
            for key, fn in {**torch_cases(*probe), **ort_cases(*probe, args.threads)}.items()}
    for shape_name, (m, k, n) in SHAPES.items():
        ops = 2.0 * m * k * n
        for (fmt, kernel), fn in {**torch_cases(m, k, n), **ort_cases(m, k, n, args.threads)}.items():
            if slow[(fmt, kernel)] < max(slow.values()) / 4 and ops / (slow[(fmt, kernel)] * 1e9) > 2.0:
                print(f"  {shape_name:30s} {fmt:5s} {kernel:40s} skipped: {slow[(fmt, kernel)]:.1f} G(FL)OPS at 256^3")
                rows.append({"shape": "probe 256^3", "format": fmt, "kernel": kernel,
                             "g_ops": round(slow[(fmt, kernel)], 1)})
                continue
            try:
                rate = best_rate(fn, ops, args.seconds)
            except Exception as e:   # a kernel this build lacks: say so, measure the others
                print(f"  {shape_name:30s} {fmt:5s} {kernel:40s} unavailable ({type(e).__name__}: {e})")
                continue
            rows.append({"shape": shape_name, "format": fmt, "kernel": kernel, "g_ops": round(rate, 1)})
            print(f"  {shape_name:30s} {fmt:5s} {kernel:40s} {rate:8.1f} G(FL)OPS")
    print("\nbest per format (the limit):")
    for fmt in ("fp32", "bf16", "int8"):
        mine = [r for r in rows if r["format"] == fmt]
        if mine:
            top = max(mine, key=lambda r: r["g_ops"])
            print(f"  {fmt:5s} {top['g_ops']:8.1f} G(FL)OPS  {top['kernel']}, {top['shape']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu, "threads": args.threads, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
