"""Class imbalance: the note a run prints before training when the train labels are skewed, and the weights of the
balanced sampler (`data.sampler: balanced`, drawn in batching.train_batches).

Balanced sampler: every epoch draws as many rows as the train set has, with replacement, each row with probability
proportional to 1 / (rows of its class), so every class is drawn with probability 1/C (a class of n_c rows repeats
each of them about N / (C n_c) times per epoch; frequent classes lose rows). The draw is seeded by (train.seed,
epoch), so --resume replays the same batches; with train.group_by_length the drawn rows are grouped by length as
usual. What it does to the model: it trains under a uniform class prior, so rare classes gain recall, frequent ones
lose precision, and the probabilities over-state rare classes (their logits shift by about log(1/C) - log p_c, which
temperature scaling does not undo; the argmax moves towards rare classes). It is the sampling counterpart of
`ce:class_weights=balanced` (n / (C n_c) per class in the loss, the same expected gradient with more variance per
step); do not stack the two (or focal `alpha=balanced`): that corrects twice. Single-label tasks only.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..config import SAMPLERS
from ..errors import ConfigError

SKEW_RATIO = 4.0   # largest / smallest train class at or above this: the run says so before training
REMEDIES = ("--loss ce:class_weights=balanced (inverse-frequency class weights), --loss focal:gamma=2, or "
            "--set data.sampler=balanced (class-balanced batches); measure them with `tricklab compare --variants "
            "baseline,balanced,focal,balanced_sampler`")


def check_sampler(sampler: str, task: str) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError(f"config data.sampler: {sampler!r} is not valid (choose from: {', '.join(SAMPLERS)})")
    if sampler == "balanced" and task != "single_label":
        raise ConfigError(f"config data.sampler=balanced draws classes equally: single-label tasks only, not {task}; "
                          f"fix: --set data.sampler=shuffle (multi-label: model.prior_bias_init, focal alpha)")


def balanced_weights(labels: Sequence[Any], num_labels: int) -> np.ndarray:
    """(N,) sampling probabilities: 1 / (C' * n_c) for a row of class c, C' the classes present (sums to 1)."""
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=num_labels).astype(np.float64)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[y])


def imbalance_note(counts: Sequence[int], names: Sequence[str], sampler: str = "shuffle") -> str:
    """One line when the train classes are skewed (largest / smallest >= SKEW_RATIO): counts per class, what
    accuracy then hides, the remedies. Empty when they are not."""
    present = [(n, c) for n, c in zip(names, counts) if c > 0]
    if len(present) < 2:
        return ""
    big, small = max(c for _, c in present), min(c for _, c in present)
    if big / small < SKEW_RATIO:
        return ""
    total = sum(c for _, c in present)
    shown = sorted(present, key=lambda x: -x[1])
    per_class = ", ".join(f"{n} {c} ({c / total:.1%})" for n, c in shown[:12])
    if len(shown) > 12:
        per_class += f", ... ({len(shown) - 12} more, smallest {shown[-1][0]} {shown[-1][1]})"
    head = (f"imbalance: train classes are skewed (largest/smallest {big / small:.0f}x): {per_class}. Accuracy can "
            f"look fine while rare classes get F1 0: read macro-F1 and the per-class table.")
    if sampler == "balanced":
        return head + " data.sampler=balanced is on: batches draw every class equally."
    return head + " Remedies: " + REMEDIES


MIN_TRAIN = 10     # fewer train examples than this: the run warns before training


def coverage_warnings(counts: Sequence[int], names: Sequence[str], n_train: int, source: str) -> list[str]:
    """Warnings before training: classes without a single train example (the model cannot learn them; their
    recall will be 0) and a train set too small to learn from."""
    out = []
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        shown = ", ".join(repr(n) for n in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        out.append(f"{source}: {len(empty)} of {len(names)} classes have no train example ({shown}): the model "
                   f"cannot learn them and will never predict them; fix: add examples of them, or drop them from "
                   f"the class file")
    if n_train < MIN_TRAIN:
        out.append(f"{source}: only {n_train} train example{'s' if n_train != 1 else ''}: far too few to learn from "
                   f"(the metrics will be noise); fix: give a training file of at least a few examples per class")
    return out
