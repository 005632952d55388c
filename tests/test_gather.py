"""gather_examples and SupCon's multi-process path, in this process: torch.distributed's functions are
replaced by a simulated world of W processes (this one is rank r; the others' tensors are given), so that
fast unit runs (and mutation testing) reach the code that test_supcon_ddp.py checks with real processes.

The simulated all_gather fills the other ranks' padding rows with NaN (float) or -7 (long): a wrong strip
of the padding shows up in the values. References: the global batch concatenated in rank order, and for
gradients W times the single-process gradient of the global loss on this rank's rows (gather's contract).
"""
from __future__ import annotations

import pytest
import torch

from tricklab.losses import gather as gather_mod
from tricklab.losses.gather import gather_examples, world_size
from tricklab.losses.supcon import SupCon
from tricklab.types import Batch, Output


class FakeWorld:
    """W processes; `shards[i]` is rank i's tuple of tensors (rank `rank`'s are ignored: it gathers its own)."""

    def __init__(self, rank: int, shards: list[tuple[torch.Tensor, ...]]):
        self.rank, self.shards, self.calls = rank, shards, []

    def all_gather(self, out: list[torch.Tensor], t: torch.Tensor) -> None:
        assert len(out) == len(self.shards) and all(o.shape == t.shape and o.dtype == t.dtype for o in out)
        k = len(self.calls)
        self.calls.append(t.clone())
        for i, o in enumerate(out):
            if i == self.rank:
                o.copy_(t)
            elif k == 0:   # the sizes
                o.copy_(torch.tensor([self.shards[i][0].shape[0]]))
            else:
                x = self.shards[i][k - 1]
                fill = float("nan") if x.is_floating_point() else -7
                o.fill_(fill)
                o[: x.shape[0]] = x

    def install(self, monkeypatch) -> None:
        d = gather_mod.dist
        monkeypatch.setattr(d, "is_available", lambda: True)
        monkeypatch.setattr(d, "is_initialized", lambda: True)
        monkeypatch.setattr(d, "get_world_size", lambda group=None: len(self.shards))
        monkeypatch.setattr(d, "get_rank", lambda group=None: self.rank)
        monkeypatch.setattr(d, "all_gather", self.all_gather)


def shards_of(sizes: list[int], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 2, 3, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def test_world_size_without_distributed_is_one(monkeypatch):
    assert world_size() == 1
    monkeypatch.setattr(gather_mod.dist, "is_available", lambda: True)
    monkeypatch.setattr(gather_mod.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(gather_mod.dist, "get_world_size", lambda group=None: 4)
    assert world_size() == 1
    monkeypatch.setattr(gather_mod.dist, "is_initialized", lambda: True)
    assert world_size() == 4
    monkeypatch.setattr(gather_mod.dist, "is_available", lambda: False)
    assert world_size() == 1


def test_gather_one_process_returns_the_tensors_themselves():
    a, b = torch.randn(3, 2, requires_grad=True), torch.arange(3)
    out = gather_examples(a, b)
    assert out[0] is a and out[1] is b and len(out) == 2


@pytest.mark.parametrize("sizes,rank", [([3, 3], 0), ([4, 3, 4], 1), ([2, 5, 3], 2), ([5, 1], 1), ([1, 4], 0)])
def test_gather_values_in_rank_order_uneven_shards(monkeypatch, sizes, rank):
    shards = shards_of(sizes, seed=len(sizes) + rank)
    world = FakeWorld(rank, shards)
    world.install(monkeypatch)
    feats, labels = shards[rank]
    gf, gl = gather_examples(feats, labels)
    assert torch.equal(gf, torch.cat([s[0] for s in shards])) and gf.dtype == feats.dtype
    assert torch.equal(gl, torch.cat([s[1] for s in shards])) and gl.dtype == torch.long
    # three collectives: sizes, then each tensor padded to the largest shard (zeros after this rank's rows)
    assert len(world.calls) == 3 and world.calls[0].tolist() == [sizes[rank]]
    m = max(sizes)
    assert world.calls[1].shape == (m, 2, 3) and world.calls[2].shape == (m,)
    assert torch.equal(world.calls[1][: sizes[rank]], feats) and not world.calls[1][sizes[rank]:].any()
    assert torch.equal(world.calls[2][: sizes[rank]], labels)


@pytest.mark.parametrize("sizes,rank", [([3, 4], 0), ([4, 2, 3], 1), ([2, 2, 2, 3], 3)])
def test_gather_gradient_is_world_size_times_own_rows(monkeypatch, sizes, rank):
    shards = shards_of(sizes, seed=7 * rank)
    FakeWorld(rank, shards).install(monkeypatch)
    W = len(sizes)
    feats = shards[rank][0].clone().requires_grad_(True)
    (gf,) = gather_examples(feats)
    weight = torch.randn(gf.shape, generator=torch.Generator().manual_seed(3))
    (gf * weight).sum().backward()
    lo = sum(sizes[:rank])
    assert torch.allclose(feats.grad, W * weight[lo: lo + sizes[rank]])


def test_gather_rejects_tensors_of_different_lengths(monkeypatch):
    FakeWorld(0, shards_of([2, 2])).install(monkeypatch)
    with pytest.raises(ValueError, match=r"share dim 0.*\(2, 3\).*\(3,\)"):
        gather_examples(torch.zeros(2, 3), torch.zeros(3))


@pytest.mark.parametrize("sizes,rank,views,mode,proj", [([4, 3], 1, 2, "all", 4), ([3, 4, 2], 0, 1, "all", None),
                                                         ([3, 3], 1, 2, "one", None)])
def test_supcon_across_simulated_processes_is_the_global_loss(monkeypatch, sizes, rank, views, mode, proj):
    """Rank r's SupCon value is the single-process loss of the global batch; its features' gradient is W times
    the global gradient on its rows (DDP then averages over the W processes)."""
    F_dim, W = 5, len(sizes)
    torch.manual_seed(rank)
    loss = SupCon(temperature=0.1, base_temperature=0.07, contrast_mode=mode, projection=proj, in_dim=F_dim)
    g = torch.Generator().manual_seed(11)
    pooled = [torch.randn(views, n, F_dim, generator=g) for n in sizes]          # (V, N_r, F) per rank
    labels = [torch.randint(0, 3, (n,), generator=g) for n in sizes]

    def run(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.clone().requires_grad_(True)
        V, N = x.shape[0], x.shape[1]
        batch = Batch(inputs={}, labels=y.repeat(V), index=torch.arange(V * N), views=V)
        value = loss(Output(torch.zeros(V * N, 3), x.reshape(V * N, F_dim)), batch)
        value.backward()
        return value.detach(), x.grad

    ref_value, ref_grad = run(torch.cat(pooled, 1), torch.cat(labels))             # one process, global batch
    with torch.no_grad():   # what the other ranks send: their (N_r, V, P) features, after the shared head
        sent = [(p.reshape(-1, F_dim) if loss.head is None else loss.head(p.reshape(-1, F_dim)))
                .reshape(views, -1, proj or F_dim).transpose(0, 1) for p in pooled]
    FakeWorld(rank, list(zip(sent, labels))).install(monkeypatch)
    value, grad = run(pooled[rank], labels[rank])
    lo = sum(sizes[:rank])
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-5)
    assert torch.allclose(grad, W * ref_grad[:, lo: lo + sizes[rank]], atol=1e-6)
