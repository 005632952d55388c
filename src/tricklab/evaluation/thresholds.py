"""Multi-label decision thresholds: tuned per label on dev, applied at prediction time.

Tuning (after training, with the best model, on dev probabilities):
  - per label, the threshold that maximises that label's F1 over every distinct cut of its sorted dev
    probabilities (exact, vectorised: one sort per label, one cumulative sum);
  - one global threshold, tuned the same way for micro-F1 (all labels' decisions pooled);
  - labels with fewer than `min_support` dev positives use the global threshold (too few positives
    to trust a threshold of their own).
A tuned threshold sits halfway between the lowest probability it accepts and the next lower one,
so the dev decisions are the ones the F1 was computed for, with a margin on both sides.

The result is a plain dict stored in the model meta (`model/tricklab.json`, key "thresholds"),
which an exported bundle copies: {"per_label": {name: t}, "global": t, "min_support": k,
"fallback": [names that use the global one]}.

Deciding (`select_labels`): the labels whose probability reaches their threshold, then at least
`min_k` (the highest-probability ones are added) and at most `max_k` (the highest-probability ones
are kept), in order of decreasing probability.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

DEFAULT_THRESHOLD = 0.5


def multi_hot(gold: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Lists of label ids -> (N, C) bool."""
    Y = np.zeros((len(gold), num_labels), dtype=bool)
    for i, labs in enumerate(gold):
        Y[i, list(labs)] = True
    return Y


def best_f1_thresholds(probs: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the threshold maximising F1 of `probs >= t` against `Y`, and that F1.

    probs, Y: (N, C) -> thresholds (C,), f1 (C,). A column without positives gets F1 0 and
    threshold 0.5 (any threshold predicting nothing is as good as another). Ties keep the highest
    threshold (fewest positive predictions).
    """
    probs = np.asarray(probs, dtype=np.float64)
    Y = np.asarray(Y, dtype=bool)
    N, C = probs.shape
    if N == 0:
        return np.full(C, DEFAULT_THRESHOLD), np.zeros(C)
    order = np.argsort(-probs, axis=0, kind="stable")                      # (N, C) descending
    p = np.take_along_axis(probs, order, 0)                                 # (N, C)
    tp = np.cumsum(np.take_along_axis(Y, order, 0), axis=0)                 # (N, C): positives in the top i+1
    n_pred = np.arange(1, N + 1)[:, None]                                   # (N, 1)
    n_pos = Y.sum(0)[None, :]                                               # (1, C)
    f1 = 2 * tp / (n_pred + n_pos)                                          # (N, C)
    nxt = np.vstack([p[1:], np.full((1, C), -np.inf)])                      # (N, C) next lower probability
    f1 = np.where(p > nxt, f1, -1.0)  # cut only between distinct values: ties are decided together
    best = f1.argmax(0)                                                     # (C,) first = highest threshold
    cols = np.arange(C)
    hi, lo = p[best, cols], nxt[best, cols]
    thr = np.where(np.isfinite(lo), (hi + lo) / 2, hi / 2)
    score = f1[best, cols]
    none = n_pos[0] == 0
    thr[none], score[none] = DEFAULT_THRESHOLD, 0.0
    return thr, np.maximum(score, 0.0)


def tune_thresholds(probs: np.ndarray, gold: Sequence[Sequence[int]] | np.ndarray, names: list[str],
                    min_support: int = 5) -> dict[str, Any]:
    """Dev probabilities (N, C) and gold label lists (or (N, C) bool) -> the meta "thresholds" dict."""
    if min_support < 1:
        raise ConfigError(f"config calibration.min_support: must be at least 1, got {min_support}")
    probs = np.asarray(probs, dtype=np.float64)
    Y = gold if isinstance(gold, np.ndarray) and gold.dtype == bool else multi_hot(gold, probs.shape[1])
    per, _ = best_f1_thresholds(probs, Y)
    if Y.any():
        glob = float(best_f1_thresholds(probs.reshape(-1, 1), Y.reshape(-1, 1))[0][0])  # pooled: micro-F1
    else:
        glob = DEFAULT_THRESHOLD
    support = Y.sum(0)
    fallback = support < min_support
    per = np.where(fallback, glob, per)
    return {"per_label": {n: float(t) for n, t in zip(names, per)}, "global": glob, "min_support": int(min_support),
            "fallback": [n for n, f in zip(names, fallback) if f]}


def threshold_vector(meta: dict[str, Any], override: float | None = None) -> np.ndarray:
    """(C,) thresholds for a model meta: `override` for every label, else the tuned ones, else 0.5."""
    names = meta["labels"]["names"]
    if override is not None:
        return np.full(len(names), float(override))
    tuned = meta.get("thresholds")
    if not tuned:
        return np.full(len(names), DEFAULT_THRESHOLD)
    per = tuned.get("per_label", {})
    glob = float(tuned.get("global", DEFAULT_THRESHOLD))
    return np.array([float(per.get(n, glob)) for n in names])


def select_labels(probs: np.ndarray, thresholds: np.ndarray | float, min_k: int = 0,
                  max_k: int | None = None) -> list[list[int]]:
    """probs (N, C), thresholds (C,) or a number -> per row the chosen label ids, most probable first."""
    probs = np.asarray(probs)
    order = np.argsort(-probs, axis=1, kind="stable")                       # (N, C)
    passing = probs >= np.asarray(thresholds)                               # (N, C)
    out = []
    for i in range(len(probs)):
        on = [int(j) for j in order[i] if passing[i, j]]
        if len(on) < min_k:  # fill up with the most probable labels that did not pass
            on += [int(j) for j in order[i] if not passing[i, j]][: min_k - len(on)]
            on.sort(key=lambda j: -probs[i, j])
        out.append(on if max_k is None else on[:max_k])
    return out


def check_options(threshold: float | None, min_k: int | None, max_k: int | None) -> None:
    """Prediction-time options, checked before any text is read."""
    if threshold is not None and not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: must be a probability in [0, 1]")
    if min_k is not None and min_k < 0:
        raise ConfigError(f"--min-k {min_k}: must be 0 or more (1: always return at least the top label)")
    if max_k is not None and max_k < 1:
        raise ConfigError(f"--max-k {max_k}: must be at least 1 (leave it out for no limit)")
    if min_k is not None and max_k is not None and min_k > max_k:
        raise ConfigError(f"--min-k {min_k} is larger than --max-k {max_k}; fix: make min-k <= max-k")
