"""Device, precision and batched inference shared by training, evaluation and prediction."""
from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

from ..data.batching import Encoded, collate, eval_batches
from ..errors import ConfigError


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """AMX: bf16 matmuls run several times faster than fp32. AVX512-BF16 alone is not enough: measured
    on such a CPU, a 2048^3 bf16 matmul ran at 151 GFLOPS against 318 for fp32."""
    if not torch.backends.mkldnn.is_available():   # oneDNN runs CPU bf16 matmuls
        return False
    caps = getattr(torch.cpu, "get_capabilities", None)   # public in torch.cpu.__all__ (2.13); older: /proc/cpuinfo
    if caps is not None:
        return bool(caps().get("amx_bf16", False))
    try:
        return "amx_bf16" in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 on fast-bf16 CPUs and bf16-capable GPUs, fp16 on older GPUs, else fp32."""
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device != "cuda":
        raise ConfigError("train.precision=fp16 needs a GPU; on CPU use bf16 (fast with AMX/AVX512-BF16) or fp32")
    return precision


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
