"""Sentence pairs for train.strategy=setfit (training/setfit.py), drawn after SetFit's scheme (Tunstall et al.
2022, arXiv:2209.11055; setfit's `sentence_pairs_generation`): per iteration, every labelled row is the anchor of
one positive pair (same label, target 1) and one negative pair (another label, target 0). One difference: the
positive partner is another row of the class (setfit's draw may pick the anchor itself), unless the row is alone
in its class. numpy only."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import TrainConfig


def sample_pairs(labels: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """(2 * N * iterations, 3) int64 rows (anchor, partner, target), shuffled. Per iteration every row is the
    anchor of one positive pair (a partner drawn uniformly from the other rows of its class; itself when it is
    alone) and of one negative pair (a partner drawn uniformly from the rows of the other classes)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = []
    for _ in range(iterations):
        for c in np.unique(labels):
            same, other = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
            n = len(same)
            if n > 1:   # a position among the n - 1 others: skip the anchor's own position
                j = rng.integers(0, n - 1, size=n)
                pos = same[j + (j >= np.arange(n))]
            else:
                pos = same
            neg = other[rng.integers(0, len(other), size=n)]
            out.append(np.stack([same, pos, np.ones(n, dtype=np.int64)], 1))
            out.append(np.stack([same, neg, np.zeros(n, dtype=np.int64)], 1))
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[rng.permutation(len(pairs))]


def epoch_pair_batches(labels: list[Any], tc: TrainConfig, epoch: int, rank: int = 0, world: int = 1
                       ) -> list[np.ndarray]:
    """This process's batches of pairs (k, 3) for one epoch: pairs drawn afresh every epoch (seeded by train.seed
    and the epoch), train.batch_size pairs per global batch, each split across the processes."""
    pairs = sample_pairs(np.asarray(labels), tc.setfit_iterations, tc.seed * 100_003 + epoch)
    batches = [pairs[i:i + tc.batch_size] for i in range(0, len(pairs), tc.batch_size)]
    if world > 1:
        batches = [np.array_split(b, world)[rank] for b in batches if len(b) >= world]
    return batches
