"""SupCon across processes (DDP): `train.batch_size` is the global batch, so with W processes each
holding its np.array_split share (sizes may differ by one), every process must report the
single-process SupCon loss of the whole global batch, and the gradients must come out equal to the
single-process ones after DDP's averaging (encoder, here a shared nn.Linear wrapped in DDP) and after
the loop's all_reduce / W (the projection head in the loss module, outside DDP; see train.py).

Reference: the same SupCon module run in this (single) process on the global batch, stacked as R-Drop
stacks it (rows [v*N:(v+1)*N] are view v of the N examples). The single-process loss itself is checked
against a loop over the paper's formula (Khosla et al. 2020, arXiv:2004.11362) in test_losses.py.
Two CPU processes, gloo backend, loopback only; all cases run in one spawn to keep it fast.
"""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from tricklab.losses.supcon import SupCon
from tricklab.types import Batch, Output

WORLD, D, F, C = 2, 6, 5, 3
# (global batch, views, contrast_mode, projection size or None): even and uneven splits, R-Drop views
CASES = [(8, 1, "all", 4), (7, 2, "all", 4), (5, 2, "one", None), (9, 3, "all", 3)]


def case(i: int) -> tuple[nn.Linear, SupCon, torch.Tensor, torch.Tensor]:
    """Encoder, loss (with its projection head), inputs x (V, N, D): view v of example j is x[v, j]
    (stands for R-Drop's dropout passes), labels (N,) in C classes (some anchors have no positive)."""
    n, V, mode, proj = CASES[i]
    torch.manual_seed(i)
    enc = nn.Linear(D, F)
    loss = SupCon(temperature=0.1, contrast_mode=mode, projection=proj, in_dim=F)
    g = torch.Generator().manual_seed(100 + i)
    return enc, loss, torch.randn(V, n, D, generator=g), torch.randint(0, C, (n,), generator=g)


def step(enc: nn.Module, loss: SupCon, x: torch.Tensor, labels: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Forward + backward on the examples idx, stacked like R-Drop: rows [v*N:(v+1)*N] are view v."""
    V, N = x.shape[0], len(idx)
    t = torch.as_tensor(idx, dtype=torch.long)
    inp = x[:, t].reshape(V * N, D)                                       # (V*N, D)
    batch = Batch(inputs={}, labels=labels[t].repeat(V), index=torch.arange(V * N), views=V)
    value = loss(Output(torch.zeros(V * N, C), enc(inp)), batch)
    value.backward()
    return value.detach()


def _worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file store, not a tcp:// port picked in advance that the other test worker could take meanwhile
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=30))
    try:
        results = []
        for i in range(len(CASES)):
            enc, loss, x, labels = case(i)
            value = step(DDP(enc), loss, x, labels, np.array_split(np.arange(x.shape[1]), WORLD)[rank])
            head = [p.grad for p in loss.parameters()]
            for g in head:                                                # as train.py does for loss_params
                dist.all_reduce(g)
                g /= WORLD
            results.append({"loss": value, "enc": [p.grad for p in enc.parameters()], "head": head})
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_supcon_ddp_equals_single_process_on_global_batch(tmp_path):
    # forkserver: a fresh single-threaded server imports torch (and DDP's torch._dynamo) once, the two
    # workers fork from it (safe, unlike forking pytest); spawn would import everything twice
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    mp.set_forkserver_preload(["torch", "torch._dynamo", "torch.nn.parallel", __name__])
    procs = mp.start_processes(_worker, args=(str(tmp_path),), nprocs=WORLD, join=False,
                               start_method=method)
    deadline = time.monotonic() + 90
    try:
        while not procs.join(timeout=1):                                  # raises if a worker failed
            if time.monotonic() > deadline:
                pytest.fail("DDP workers did not finish within 90 s (a collective hung?)")
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for i, (n, V, mode, proj) in enumerate(CASES):
        enc, loss, x, labels = case(i)
        want = step(enc, loss, x, labels, np.arange(n))
        for r in range(WORLD):
            got = ranks[r][i]
            where = f"case {CASES[i]}, rank {r}"
            torch.testing.assert_close(got["loss"], want, rtol=1e-5, atol=1e-5, msg=lambda m: f"loss, {where}: {m}")
            for name, g, p in zip(("weight", "bias"), got["enc"], enc.parameters()):
                torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-5,
                                           msg=lambda m: f"encoder {name} grad after DDP, {where}: {m}")
            head = list(loss.parameters())
            assert len(got["head"]) == len(head) == (4 if proj else 0)
            for k, (g, p) in enumerate(zip(got["head"], head)):
                torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-5,
                                           msg=lambda m: f"projection param {k} grad after all_reduce/W, {where}: {m}")
