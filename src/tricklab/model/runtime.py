"""Device, precision and batched inference shared by training, evaluation and prediction."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data.batching import Encoded, collate, eval_batches
from ..errors import ConfigError
from ..runfiles import atomic_write, cache_dir


# precision: auto on CPU is decided by a short measurement on the machine it runs on, never by CPU flags: hosts of
# one kind differ (measured: a CPU with AVX512-BF16 ran bf16 matmuls at half its fp32 rate; another at 2.7x).
BF16_MIN_SPEEDUP = 1.25    # bf16 training also pays casts and fp32 optimizer math: below this it is not worth it
MATMUL_SHAPE = (1024, 768, 3072)   # tokens x hidden x FFN width: a BERT-base feed-forward layer's matmul
PROBE_SHAPE = (64, 768, 768)


def host_key() -> str:
    """This CPU, this torch, this many threads: what the measured speeds depend on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def measure_matmul_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = MATMUL_SHAPE, repeats: int = 5,
                          other: torch.dtype | None = None) -> dict[torch.dtype, float]:
    """Best-of-`repeats` GFLOPS of an (M, K) @ (K, N) matmul in `dtype` (and in `other`, interleaved with it so
    that both see the same load on a shared machine)."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    dtypes = [dtype] + ([other] if other is not None else [])
    mats = {d: (torch.randn(m, k, generator=gen).to(d), torch.randn(k, n, generator=gen).to(d)) for d in dtypes}
    best = dict.fromkeys(dtypes, float("inf"))
    for _ in range(repeats + 1):                      # the first round warms up kernels and caches
        for d, (a, b) in mats.items():
            t0 = time.perf_counter()
            torch.mm(a, b)
            best[d] = min(best[d], time.perf_counter() - t0)
    return {d: 2 * m * k * n / best[d] / 1e9 for d in dtypes}


def cpu_bf16_speedup(cache: Path | None = None) -> tuple[float, bool]:
    """bf16 / fp32 matmul throughput on this CPU, measured once per host (host_key) and cached in
    cache_dir()/precision.json; returns (speedup, measured now)."""
    path = (cache or cache_dir()) / "precision.json"
    key = host_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict) and "bf16_speedup" in known[key]:
        return float(known[key]["bf16_speedup"]), False
    shape = PROBE_SHAPE
    if not torch.backends.mkldnn.is_available():      # oneDNN runs CPU bf16 matmuls; without it bf16 is emulated
        speeds = {torch.float32: 1.0, torch.bfloat16: 0.0}
    else:   # a small probe first: where bf16 is emulated (~1 GFLOPS) the full shape would take a minute
        speeds = measure_matmul_gflops(torch.float32, PROBE_SHAPE, repeats=2, other=torch.bfloat16)
        if speeds[torch.bfloat16] >= speeds[torch.float32] / 2:
            shape = MATMUL_SHAPE
            speeds = measure_matmul_gflops(torch.float32, shape, other=torch.bfloat16)
    entry = {"fp32_gflops": round(speeds[torch.float32], 1), "bf16_gflops": round(speeds[torch.bfloat16], 1),
             "bf16_speedup": round(speeds[torch.bfloat16] / speeds[torch.float32], 3), "shape": list(shape)}
    known = (known if isinstance(known, dict) else {}) | {key: entry}
    with contextlib.suppress(OSError):                # a read-only home only costs a measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known, indent=1))
    return entry["bf16_speedup"], True


def resolve_precision(precision: str, device: str, notes: list[str] | None = None) -> str:
    """auto -> on CPU bf16 when measured matmuls run >= BF16_MIN_SPEEDUP x faster than fp32, else fp32; on GPU
    bf16 where supported, else fp16. `notes` gets one line saying what was measured."""
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        speedup, now = cpu_bf16_speedup()
        chosen = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
        if notes is not None:
            notes.append(f"precision auto: {chosen} (bf16 matmuls {speedup:.2f}x fp32 on this CPU, "
                         f"{'measured now' if now else 'measured before'}; cached in {cache_dir() / 'precision.json'};"
                         f" --set train.precision=fp32|bf16 to choose)")
        return chosen
    if precision == "fp16" and device != "cuda":
        raise ConfigError("train.precision=fp16 needs a GPU; on CPU use bf16 (fast where bf16 matmuls are) or fp32")
    return precision


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with ($CXX, else g++, c++, clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def resolve_compile(setting: str, device: str) -> bool:
    """train.compile: true | false as given; auto: off. On this project's 2-core CPU hosts inductor made training
    slower once its compile time is counted (benchmarks/RESULTS.md §1); on GPUs it is unmeasured here, so auto
    leaves it off there too. true on CPU needs a C++ compiler: without one it is a ConfigError before any data
    loads, not a traceback at the first step."""
    if setting == "true" and device == "cpu" and cxx_compiler() is None:
        raise ConfigError("train.compile=true: torch.compile (inductor) builds C++ kernels on CPU and no C++ compiler "
                          "was found ($CXX, g++, c++, clang++); fix: install one (e.g. apt-get install g++), or "
                          "--set train.compile=false")
    return setting == "true"


def compile_encoder(model: torch.nn.Module, notes: list[str] | None = None) -> None:
    """torch.compile the model's encoder in place (nn.Module.compile: parameter names and the saved weights stay
    the same) with dynamic shapes, so that length-grouped batches of every length share one graph instead of
    compiling once per length."""
    model.encoder.compile(dynamic=True)
    if notes is not None:
        notes.append("compile: the encoder runs under torch.compile (inductor, dynamic shapes); the first training "
                     "step and the first dev evaluation wait for it to compile; --set train.compile=false to skip")


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def iter_logits(model: torch.nn.Module, enc: Encoded, batch_size: int, pad_id: int, device: torch.device,
                precision: str, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, float32 logits) per length-sorted batch; `shard=(rank, world)` takes every world-th batch.
    Rows are chunk windows when enc.doc_index is set: all_logits aggregates them per document."""
    rank, world = shard
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device.type, precision):
            for idx in eval_batches(enc.lengths, batch_size)[rank::world]:
                b = collate(enc, idx, pad_id, None).to(device)
                yield idx, model(**b.inputs).logits.float().cpu().numpy()
    finally:
        model.train(was_training)


def all_logits(model: torch.nn.Module, enc: Encoded, batch_size: int, pad_id: int, device: torch.device,
               precision: str, shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Logits for every example (document), in input order: chunk windows' logits are aggregated per
    document (enc.agg: mean | max). With shard world > 1 the pieces are gathered."""
    parts = list(iter_logits(model, enc, batch_size, pad_id, device, precision, shard))
    if shard[1] > 1:
        gathered: list = [None] * shard[1]
        torch.distributed.all_gather_object(gathered, parts)
        parts = [p for g in gathered for p in g]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    C = parts[0][1].shape[1]
    out = np.zeros((len(enc), C), dtype=np.float32)
    for idx, lg in parts:
        out[idx] = lg
    return enc.aggregate(out)                                    # (N, C) -> (D, C)
