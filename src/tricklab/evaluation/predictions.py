"""Per-example predictions of a run: `predictions.npz` in the run folder, written by `train.finish()`.

The paired tests of `tricklab compare` (bootstrap, McNemar) compare two runs example by example,
so each run keeps, for every evaluated split, the gold labels and the float32 logits:

    dev_gold, dev_logits, test_gold, test_logits   (test_* only when there is a test split)

Gold by task: single_label (N,) int64 class ids; multi_label (N, C) bool; regression (N,) float64.
Logits: (N, C) float32 (regression: (N, 1)). Arrays only, no pickles: `np.load(allow_pickle=False)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..runfiles import atomic_open

FILE = "predictions.npz"


def gold_array(task: str, labels: list[Any], num_labels: int) -> np.ndarray:
    """Encoded split labels -> one array: (N,) int64 | (N, C) bool | (N,) float64."""
    if task == "multi_label":
        Y = np.zeros((len(labels), num_labels), dtype=bool)  # (N, C)
        for i, labs in enumerate(labels):
            Y[i, labs] = True
        return Y
    if task == "regression":
        return np.asarray(labels, dtype=np.float64)
    return np.asarray(labels, dtype=np.int64)


def save_predictions(path: Path, task: str, num_labels: int, splits: dict[str, tuple[np.ndarray, list[Any]]]) -> None:
    """splits: name -> (logits (N, C), encoded labels). Written to a temporary name, then renamed."""
    arrays: dict[str, np.ndarray] = {}
    for name, (logits, labels) in splits.items():
        arrays[f"{name}_gold"] = gold_array(task, labels, num_labels)
        arrays[f"{name}_logits"] = np.asarray(logits, dtype=np.float32)
    with atomic_open(Path(path), "wb") as f:
        np.savez_compressed(f, **arrays)


def load_predictions(run: Path) -> dict[str, np.ndarray]:
    """{"dev_gold": ..., "dev_logits": ..., ...} from a run folder; {} when the run has no predictions.npz."""
    p = Path(run) / FILE
    if not p.is_file():
        return {}
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
