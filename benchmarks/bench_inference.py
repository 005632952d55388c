"""Inference speed and accuracy of a fine-tuned run, side by side in one process.

Backends (same model weights, same 10k THUCNews test headlines, batch 64):
  pipeline    transformers.pipeline("text-classification") on the run's model/ folder, fp32
  torch_fp32  tricklab Predictor (torch), fp32
  torch_bf16  tricklab Predictor (torch), bf16 autocast
  onnx_fp32   tricklab Predictor.from_bundle on an fp32 ONNX bundle (`tricklab export`)
  onnx_int8   the same with `tricklab export --quantize int8` (static int8, --fuse auto: today's default)
  and, for the fusion comparison (export's --quantize/--fuse per row, see BUNDLES):
  onnx_fp32-fused, onnx_int8-unfused, onnx_int8-fused, onnx_int8-fused-noattn, onnx_int8-dynamic (run one
  text per call, as bundles do), onnx_int8-dynamic-batched (the same graph batched: answers then depend on
  batch neighbours; a reference row only)

For each: sentences/s over the whole file (median of --repeats passes, passes interleaved across
backends so that all see the same machine load), single-sentence latency p50/p99 over --latency-n
headlines sent one at a time after a warm-up, test accuracy, and throughput relative to the pipeline.

Fairness: tricklab lower-cases text when the run's meta says so (m3e-small's tokenizer keeps capitals
that its vocabulary lacks); the pipeline is fed the same lower-cased text, and truncates at the run's
max_length, so both see identical token ids. Tokenization is inside every timing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_inference.py --run runs/demo
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BACKENDS = ("pipeline", "torch_fp32", "torch_bf16", "onnx_fp32", "onnx_int8")
# backend -> (export's quantize, export's fuse)
BUNDLES = {"onnx_fp32": (None, "auto"), "onnx_int8": ("int8", "auto"), "onnx_fp32-fused": (None, "full"),
           "onnx_int8-unfused": ("int8", "false"), "onnx_int8-fused": ("int8", "full"),
           "onnx_int8-fused-noattn": ("int8", "no-attention"), "onnx_int8-dynamic": ("int8-dynamic", "false"),
           "onnx_int8-dynamic-batched": ("int8-dynamic", "false")}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return ""
    return ",".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16") if f in flags)


def versions() -> str:
    import importlib.metadata as md

    out = []
    for pkg in ("torch", "onnxruntime", "transformers", "tokenizers"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            out.append(f"{pkg} -")
    return ", ".join(out)


def read_data(data: Path) -> tuple[list[str], list[str]]:
    """(texts, gold label names) from a THUCNews folder: test.txt `text<TAB>label_id`, class.txt names."""
    names = (data / "class.txt").read_text(encoding="utf-8").split("\n")
    names = [n.strip() for n in names if n.strip()]
    texts, gold = [], []
    for line in (data / "test.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        text, label = line.rsplit("\t", 1)
        texts.append(text)
        gold.append(names[int(label)])
    return texts, gold


def ensure_bundle(run: Path, out: Path, quantize: str | None, fuse: str = "auto") -> Path:
    """Export the run once (cached in `out`; re-exported when the run's weights are newer)."""
    from tricklab.inference.export import export_bundle

    weights = run / "model" / "model.safetensors"
    if (out / "bundle.json").is_file() and (out / "model.onnx").stat().st_mtime >= weights.stat().st_mtime:
        return out
    t = time.perf_counter()
    export_bundle(run, out, quantize=quantize, log=None, fuse=fuse, min_agreement=0.0)
    info = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
    print(f"# exported {out} ({quantize or 'fp32'}, fuse {fuse}) in {time.perf_counter() - t:.0f} s; "
          f"self-check agreement {info['verify']['agreement']:.4f}; fusion {info.get('fusion')}", file=sys.stderr)
    return out


def make_backends(names: list[str], run: Path, bundles: Path, threads: int, batch_size: int
                  ) -> tuple[dict[str, Callable[[list[str]], list[str]]], dict[str, Any]]:
    """name -> predict(texts) -> label names. All models live in this one process."""
    import torch

    from tricklab.inference import Predictor

    torch.set_num_threads(threads)
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    lower, max_len = bool(meta["data"]["lowercase"]), int(meta["data"]["max_length"])
    fns: dict[str, Callable[[list[str]], list[str]]] = {}
    for name in names:
        if name == "pipeline":
            from transformers import pipeline

            pipe = pipeline("text-classification", model=str(run / "model"), device="cpu")

            def fn(texts: list[str], pipe: Any = pipe) -> list[str]:
                inputs = [t.lower() for t in texts] if lower else list(texts)
                out = pipe(inputs, batch_size=batch_size, truncation=True, max_length=max_len)
                return [o["label"] for o in out]
        elif name.startswith("torch_"):
            pred = Predictor.from_run(run, device="cpu", precision=name.split("_")[1], batch_size=batch_size,
                                      threads=threads)

            def fn(texts: list[str], pred: Any = pred) -> list[str]:
                return [p["label"] for p in pred.predict(texts)]
        elif name in BUNDLES:
            q, fuse = BUNDLES[name]
            b = ensure_bundle(run, bundles / name.removeprefix("onnx_").removesuffix("-batched"), q, fuse)
            pred = Predictor.from_bundle(b, threads=threads, batch_size=batch_size)
            if name.endswith("-batched"):
                pred.model.per_text = False

            def fn(texts: list[str], pred: Any = pred) -> list[str]:
                return [p["label"] for p in pred.predict(texts)]
        else:
            raise SystemExit(f"--backends: unknown backend {name!r} (choose from: "
                             f"{', '.join(dict.fromkeys([*BACKENDS, *BUNDLES]))})")
        fns[name] = fn
    return fns, {"lowercase": lower, "max_length": max_len}


def gemm_rates(threads: int, m: int, k: int = 512, n: int = 2048, seconds: float = 2.0) -> dict[str, float]:
    """GFLOPS (int8: GOPS) of one (m x k) @ (k x n) product, the shape of a BERT FFN layer, on each engine:
    torch fp32 and bf16-autocast F.linear, onnxruntime fp32 MatMul and onnxruntime dynamic-int8 MatMul."""
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    torch.set_num_threads(threads)

    def rate(fn: Callable[[], Any]) -> float:
        fn()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            reps += 1
        return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9

    out: dict[str, float] = {}
    a, wt = torch.randn(m, k), torch.randn(n, k)   # nn.Linear's weight layout (out, in)
    out["torch_fp32"] = rate(lambda: torch.nn.functional.linear(a, wt))
    with torch.autocast("cpu", dtype=torch.bfloat16):   # what the bf16 backend runs
        out["torch_bf16"] = rate(lambda: torch.nn.functional.linear(a, wt))
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [w])
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        f32, i8 = Path(tmp) / "f32.onnx", Path(tmp) / "i8.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(f32))
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # its pre-processing advice is for image models
        try:
            quantize_dynamic(str(f32), str(i8), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        for name, f in (("onnx_fp32", f32), ("onnx_int8", i8)):
            o = ort.SessionOptions()
            o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(f), o, providers=["CPUExecutionProvider"])
            out[name] = rate(lambda: sess.run(None, {"x": x}))
    return out


def flops_per_sentence(run: Path, texts: list[str]) -> tuple[float, float, int]:
    """(FLOPs per sentence, mean tokens, matmul parameters): 2 x (weights of every Linear) x tokens, plus
    attention's 4 x T^2 x H per layer; the embedding lookup costs no FLOPs."""
    import torch

    from tricklab.data.batching import encode
    from tricklab.model import load_model

    model, tok, meta = load_model(run / "model")
    enc = encode(tok, texts, None, meta["data"]["max_length"], meta["data"]["lowercase"])
    lengths = enc.lengths.astype(float)
    lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.encoder.config
    per = 2 * lin * lengths + 4 * lengths ** 2 * cfg.hidden_size * cfg.num_hidden_layers
    return float(per.mean()), float(lengths.mean()), lin


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    i = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[i]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="run folder with model/ (default runs/demo)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "thucnews"),
                    help="THUCNews folder with test.txt and class.txt")
    ap.add_argument("--repeats", type=int, default=3, help="full passes per backend (median reported)")
    ap.add_argument("--latency-n", type=int, default=200, help="single-sentence calls per backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list from: {', '.join(BACKENDS)}")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test headlines (0: all)")
    ap.add_argument("--slow", default="torch_bf16",
                    help="backends measured on a subset only (bf16 without AMX/avx512_bf16 is emulated and "
                         "~100x slower; a full pass would take hours); empty: none")
    ap.add_argument("--slow-limit", type=int, default=128, help="headlines per pass for --slow backends")
    ap.add_argument("--slow-latency-n", type=int, default=10, help="single-sentence calls for --slow backends")
    ap.add_argument("--bundles", default=str(ROOT / "runs" / "bench_bundles"), help="where exported bundles are cached")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the matmul-rate measurement that bounds sentences/s on this CPU")
    ap.add_argument("--int8-limit", type=float, default=0.0, metavar="GOPS",
                    help="this host's int8 matmul limit for the '%% of int8 limit' column (benchmarks/bench_limits.py; "
                         "default: the onnxruntime int8 rate measured here at the batch's FFN shape)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)

    run, data = Path(args.run), Path(args.data)
    if not (run / "model" / "tricklab.json").is_file():
        raise SystemExit(f"{run}: no model/ in this run; fix: `tricklab demo` (writes runs/demo) or give --run")
    if not (data / "test.txt").is_file():
        raise SystemExit(f"{data}: no test.txt; fix: give --data a THUCNews folder")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    texts, gold = read_data(data)
    if args.limit:
        texts, gold = texts[: args.limit], gold[: args.limit]
    uptime_before = os.getloadavg()

    slow = {b.strip() for b in args.slow.split(",") if b.strip()}
    n_of = {n: min(len(texts), args.slow_limit) if n in slow else len(texts) for n in names}
    lat_n = {n: min(args.latency_n, args.slow_latency_n) if n in slow else args.latency_n for n in names}

    fns, info = make_backends(names, run, Path(args.bundles), args.threads, args.batch_size)
    for n, fn in fns.items():  # warm-up: first calls allocate, pick kernels, spin up thread pools
        fn(texts[: 16 if n in slow else 256])

    passes: dict[str, list[float]] = {n: [] for n in fns}
    acc: dict[str, float] = {}
    sub_acc: dict[str, float] = {}   # accuracy of every backend on the --slow subset, for comparison
    for r in range(args.repeats):
        for n, fn in fns.items():   # interleaved: every backend sees the same drift in machine load
            if n in slow and r > 0:
                continue             # one pass on the subset is all the time we give it
            t = time.perf_counter()
            labels = fn(texts[: n_of[n]])
            dt = time.perf_counter() - t
            passes[n].append(dt)
            if r == 0:
                acc[n] = sum(a == b for a, b in zip(labels, gold)) / n_of[n]
                k = min(args.slow_limit, len(texts))
                sub_acc[n] = sum(a == b for a, b in zip(labels[:k], gold[:k])) / k
            print(f"# pass {r + 1} {n}: {n_of[n] / dt:.1f} sentences/s", file=sys.stderr)

    lat: dict[str, list[float]] = {}
    for n, fn in fns.items():
        for t in texts[-(2 if n in slow else 20):]:
            fn([t])
        ms = []
        for t in texts[: lat_n[n]]:
            t0 = time.perf_counter()
            fn([t])
            ms.append((time.perf_counter() - t0) * 1000)
        lat[n] = ms
    uptime_after = os.getloadavg()

    rows = []
    base = n_of["pipeline"] / statistics.median(passes["pipeline"]) if "pipeline" in passes else None
    for n in fns:
        sps = n_of[n] / statistics.median(passes[n])
        # a one-pass subset backend is compared with the pipeline's pass of the same round (the first)
        ref = n_of["pipeline"] / passes["pipeline"][0] if n in slow and base else base
        rows.append({"backend": n, "n": n_of[n], "passes": len(passes[n]), "sentences_per_s": sps,
                     "passes_s": passes[n], "latency_n": lat_n[n], "p50_ms": statistics.median(lat[n]),
                     "p99_ms": pct(lat[n], 99), "accuracy": acc[n], "subset_accuracy": sub_acc[n],
                     "x_pipeline": sps / ref if ref else None})

    desc = {"pipeline": "transformers pipeline, fp32" + (" (lower-cased input)" if info["lowercase"] else ""),
            "torch_fp32": "tricklab torch, fp32", "torch_bf16": "tricklab torch, bf16 autocast",
            "onnx_fp32": "tricklab ONNX bundle, fp32",
            "onnx_int8": "tricklab ONNX bundle, int8 (default: static, --fuse auto)",
            "onnx_fp32-fused": "ONNX fp32, fused (--fuse full)", "onnx_int8-unfused": "ONNX static int8, unfused",
            "onnx_int8-fused": "ONNX static int8, fused (full: Attention op float)",
            "onnx_int8-fused-noattn": "ONNX static int8, fused but Attention (Q/K/V int8)",
            "onnx_int8-dynamic": "ONNX dynamic int8 (one text per call, as bundles run it)",
            "onnx_int8-dynamic-batched": "ONNX dynamic int8, batched (neighbour-dependent; reference)"}
    env = (f"{versions()}; CPU {cpu_model()} ({os.cpu_count()} cores; {cpu_flags() or 'no AVX flags'}); "
           f"threads {args.threads}; batch {args.batch_size}; max_length {info['max_length']}; "
           f"lowercase {info['lowercase']}; {len(texts)} headlines; median of {args.repeats} passes; "
           f"latency over {args.latency_n} single calls; load average before {uptime_before[0]:.2f}, "
           f"after {uptime_after[0]:.2f}")
    ceiling: dict[str, Any] = {}
    if not args.no_ceiling:
        flops, tokens, lin = flops_per_sentence(run, texts)
        m_batch = int(round(tokens * args.batch_size))
        rates = {"batch": gemm_rates(args.threads, m_batch), "single": gemm_rates(args.threads, int(round(tokens)))}
        ceiling = {"flops_per_sentence": flops, "mean_tokens": tokens, "linear_params": lin, "rates": rates,
                   "m_batch": m_batch}
    limit = args.int8_limit or (ceiling["rates"]["batch"]["onnx_int8"] if ceiling else 0.0)
    print(f"environment: {env}\n")
    print_table(rows, desc, slow, acc, sub_acc, limit, ceiling.get("flops_per_sentence", 0.0))
    if ceiling:
        print_ceiling(ceiling, args.threads, args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "rows": rows, "ceiling": ceiling,
                                               "int8_limit_gops": limit}, indent=2), encoding="utf-8")
    return 0


def print_table(rows: list[dict[str, Any]], desc: dict[str, str], slow: set[str], acc: dict[str, float],
                sub_acc: dict[str, float], limit_gops: float, flops: float) -> None:
    """The markdown results table; '% int8 limit' = sentences/s x GFLOP per sentence / the int8 limit."""
    print(f"| backend | sentences/s | x pipeline | p50 ms | p99 ms | accuracy | Δacc vs pipeline (points) | "
          f"% of int8 limit ({limit_gops:.0f} GOPS) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    a0 = acc.get("pipeline")
    for r in rows:
        name, sub = desc.get(r["backend"], r["backend"]), r["backend"] in slow
        if sub:  # compare on the same subset
            a0s = sub_acc.get("pipeline")
            name += (f" [subset: first {r['n']} headlines, 1 pass, {r['latency_n']} latency calls; "
                     f"x pipeline vs its pass 1]")
            d = f"{(r['accuracy'] - a0s) * 100:+.2f} (pipeline on subset {a0s:.4f})" if a0s is not None else "-"
        else:
            d = f"{(r['accuracy'] - a0) * 100:+.2f}" if a0 is not None else "-"
        x = f"{r['x_pipeline']:.3f}x" if r["x_pipeline"] and r["x_pipeline"] < 0.1 else \
            (f"{r['x_pipeline']:.2f}x" if r["x_pipeline"] else "-")
        frac = f"{r['sentences_per_s'] * flops / (limit_gops * 1e9) * 100:.0f}%" if limit_gops and flops else "-"
        print(f"| {name} | {r['sentences_per_s']:,.1f} | {x} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['accuracy']:.4f} | {d} | {frac} |")


def print_ceiling(ceiling: dict[str, Any], threads: int, batch_size: int) -> None:
    flops, tokens, lin, rates = (ceiling[k] for k in ("flops_per_sentence", "mean_tokens", "linear_params", "rates"))
    print(f"\nceiling: {lin / 1e6:.2f}M matmul weights x {tokens:.2f} tokens per headline (with [CLS]/[SEP]) "
          f"-> {flops / 1e9:.3f} GFLOP per sentence. Measured (m x 512) @ (512 x 2048) products, "
          f"{threads} threads:\n")
    print(f"| engine | GFLOPS, m = {ceiling['m_batch']} (batch {batch_size}) | sentences/s at 100% of it | "
          f"GFLOPS, m = {int(round(tokens))} (1 sentence) | ms per sentence at 100% of it |")
    print("|---|---:|---:|---:|---:|")
    for e in rates["batch"]:
        gb, gs = rates["batch"][e], rates["single"][e]
        print(f"| {e} | {gb:,.1f} | {gb * 1e9 / flops:,.0f} | {gs:,.1f} | {flops / (gs * 1e9) * 1000:,.2f} |")


if __name__ == "__main__":
    sys.exit(main())
