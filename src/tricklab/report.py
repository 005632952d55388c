"""Human-facing output: metric tables, per-class reports, the confusion-matrix PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import worst_confusions

HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "f1_positive", "micro_f1", "subset_accuracy", "mse", "pearson",
            "spearman", "loss")


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """rows: split name -> metrics. One line per split, the task's headline metrics as columns."""
    cols = [c for c in HEADLINE if any(c in m for m in rows.values())]
    lines = ["| split | " + " | ".join(cols) + " | n |", "|---" * (len(cols) + 2) + "|"]
    for split, m in rows.items():
        lines.append(f"| {split} | " + " | ".join(f"{m[c]:.4f}" if c in m else "" for c in cols) + f" | {m.get('n', '')} |")
    return "\n".join(lines)


def per_class_table(m: dict[str, Any]) -> str:
    pc = m.get("per_class")
    if not pc:
        return ""
    w = max(8, max(len(n) for n in pc))
    lines = [f"{'class':<{w}}  precision  recall  f1      support"]
    for n, v in pc.items():
        lines.append(f"{n:<{w}}  {v['precision']:.4f}     {v['recall']:.4f}  {v['f1']:.4f}  {v['support']}")
    conf = worst_confusions(m, list(pc))
    if conf:
        lines.append("most confused (gold -> predicted: count): " + ", ".join(f"{a} -> {b}: {c}" for a, b, c in conf))
    return "\n".join(lines)


def plot_confusion(cm: list[list[int]], names: list[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm_a = np.asarray(cm, dtype=float)
    norm = cm_a / np.clip(cm_a.sum(1, keepdims=True), 1, None)
    n = len(names)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title or "confusion matrix (row-normalised; counts in cells)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm_a[i, j]:
                    ax.text(j, i, int(cm_a[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
