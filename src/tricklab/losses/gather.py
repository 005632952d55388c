"""Gather per-example tensors across processes (DDP) for losses over the global batch (SupCon)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def gather_examples(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Every process's (N_r, ...) tensors concatenated along dim 0 in rank order: (sum_r N_r, ...),
    the global batch as train.py's np.array_split cut it. N_r may differ between processes (sizes are
    gathered first, shards padded to the largest and stripped). A collective: every process calls it
    with the same tensors in the same order (trailing shapes and dtypes equal across processes).

    Gradient: the other processes' rows are constants; this process's rows are its own tensors, with
    their gradient multiplied by the world size W. Each process then computes the full global loss L,
    so process r's parameters get W·(dL/dθ through its rows), the sum over processes is W·dL/dθ, and
    DDP's average (sum / W; train.py does the same for loss-module parameters) leaves exactly dL/dθ.
    One process (or torch.distributed not initialised): the tensors unchanged.
    """
    W = world_size()
    if W == 1:
        return tensors
    if len({t.shape[0] for t in tensors}) != 1:
        raise ValueError(f"gather_examples: tensors must share dim 0, got {[tuple(t.shape) for t in tensors]}")
    rank = dist.get_rank()
    n = torch.tensor([tensors[0].shape[0]], dtype=torch.long, device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(W)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    m = max(counts)
    out = []
    for t in tensors:
        pad = torch.cat([t.detach(), t.new_zeros((m - t.shape[0], *t.shape[1:]))]).contiguous()  # (m, ...)
        shards = [torch.empty_like(pad) for _ in range(W)]
        dist.all_gather(shards, pad)
        parts = [s[:c] for s, c in zip(shards, counts)]
        parts[rank] = _ScaleGrad.apply(t, float(W)) if t.requires_grad else t
        out.append(torch.cat(parts))
    return tuple(out)
