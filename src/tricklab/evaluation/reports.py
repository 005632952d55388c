"""Human-facing output: metric tables, per-class reports, worst confusions, bad cases, the confusion-matrix PNG."""
from __future__ import annotations

import csv
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..runfiles import atomic_open
from .calibration import scaled_probs
from .metrics import sigmoid, worst_confusions
from .thresholds import multi_hot, threshold_vector

HEADLINE = ("accuracy", "macro_f1", "macro_f1_tuned", "weighted_f1", "f1_positive", "micro_f1", "micro_f1_tuned",
            "subset_accuracy", "mse", "pearson", "spearman", "loss", "ece", "ece_calibrated")


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """rows: split name -> metrics. One line per split, the task's headline metrics as columns."""
    cols = [c for c in HEADLINE if any(c in m for m in rows.values())]
    lines = ["| split | " + " | ".join(cols) + " | n |", "|---" * (len(cols) + 2) + "|"]
    for split, m in rows.items():
        lines.append(f"| {split} | " + " | ".join(f"{m[c]:.4f}" if c in m else "" for c in cols) + f" | {m.get('n', '')} |")
    return "\n".join(lines)


def width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide and fullwidth characters (Chinese) take two, combining
    marks none (the Unicode East Asian Width property, from the standard library's unicodedata)."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def ljust(text: str, cols: int) -> str:
    """`text` padded with spaces to `cols` terminal columns (str.ljust counts characters, not columns)."""
    return text + " " * max(0, cols - width(text))


def per_class_table(m: dict[str, Any], confusions: int = 5) -> str:
    """Precision/recall/F1/support per class (multi-label: at the model's tuned thresholds when it has them),
    then the `confusions` worst confusions (confusions_table). Columns align with Chinese names (width)."""
    pc = m.get("per_class_tuned") or m.get("per_class")
    if not pc:
        return ""
    w = max(8, max(width(n) for n in pc))
    note = "   (tuned thresholds)" if "per_class_tuned" in m else ""
    lines = [f"{ljust('class', w)}  precision  recall  f1      support{note}"]
    cm = m.get("confusion_matrix")
    predicted = [sum(row[j] for row in cm) for j in range(len(cm))] if cm and len(cm) == len(pc) else None
    for j, (n, v) in enumerate(pc.items()):
        if predicted is not None and not v["support"] and predicted[j] == 0:   # (multi-label: no matrix, no '-')
            lines.append(f"{ljust(n, w)}  -          -       -       0   (neither in the gold labels nor predicted)")
            continue
        lines.append(f"{ljust(n, w)}  {v['precision']:.4f}     {v['recall']:.4f}  {v['f1']:.4f}  {v['support']}")
    conf = confusions_table(m, list(pc), confusions) if confusions else ""
    return "\n".join(lines + ([conf] if conf else []))


def zero_f1_note(m: dict[str, Any], split: str) -> str:
    """A warning when classes present in `split` got F1 0 (never predicted right): accuracy hides them."""
    pc = m.get("per_class") or {}
    zero = [(n, v["support"]) for n, v in pc.items() if v.get("support") and v.get("f1", 1.0) == 0.0]
    if not zero:
        return ""
    shown = ", ".join(f"{n} ({k} examples)" for n, k in zero[:10]) + (f", ... {len(zero) - 10} more" if len(zero) > 10 else "")
    figures = (f"accuracy {m['accuracy']:.4f} but macro-F1 {m['macro_f1']:.4f}"
               if "accuracy" in m and "macro_f1" in m else "macro-F1 counts them")
    return (f"warning: {len(zero)} class{'es' if len(zero) > 1 else ''} got F1 0.00 on {split}: {shown}; {figures}. "
            f"If they are rare in train: --loss ce:class_weights=balanced, --loss focal:gamma=2 or "
            f"--set data.sampler=balanced (README: class imbalance)")


def confusions_table(m: dict[str, Any], names: list[str], k: int = 10) -> str:
    """The `k` largest off-diagonal confusion-matrix cells: gold -> predicted, count, share of the gold class."""
    conf = worst_confusions(m, names, k)
    if not conf:
        return ""
    totals = dict(zip(names, np.asarray(m["confusion_matrix"]).sum(1).tolist()))
    title = "worst confusions (gold -> predicted)"
    w = max([width(title)] + [width(f"{a} -> {b}") for a, b, _ in conf])
    lines = [f"{ljust(title, w)}  count  share of gold"]
    for a, b, c in conf:
        lines.append(f"{ljust(f'{a} -> {b}', w)}  {c:>5}  {c / max(totals[a], 1):>6.1%}")
    return "\n".join(lines)


def write_bad_cases(path: Path, split: str, task: str, rows: Sequence[Any], gold: Sequence[Any], logits: np.ndarray,
                    names: list[str], meta: dict[str, Any]) -> int:
    """The mistakes of one labelled split as TSV, most confident first; returns how many rows it wrote.

    Columns: text (pairs: text_a, text_b), gold, predicted, confidence (regression: abs_error), split.
      single_label: wrong argmax; confidence = the predicted label's probability (with the model's temperature).
      multi_label:  predicted set (the model's thresholds) != gold set; sets joined by '|' in label order;
                    confidence = the probability behind the most confident wrong decision (p for a label
                    predicted but absent, 1 - p for a label missed).
      regression:   every example, sorted by absolute error, largest first.
    `rows` need `.text` and `.text_b` (data.readers.Row).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if task == "regression":
        y, pred = np.asarray(gold, dtype=np.float64), logits[:, 0]
        score = np.abs(pred - y)
        keep = np.arange(len(y))
        gold_s, pred_s = [f"{v:g}" for v in y], [f"{v:.4f}" for v in pred]
    elif task == "single_label":
        probs = scaled_probs(logits, float(meta.get("temperature") or 1.0))     # (N, C)
        y, pred = np.asarray(gold, dtype=np.int64), probs.argmax(1)
        score = probs.max(1)
        keep = np.flatnonzero(pred != y)
        gold_s, pred_s = [names[i] for i in y], [names[i] for i in pred]
    else:
        probs = sigmoid(logits)                                                  # (N, C)
        P, Y = probs >= threshold_vector(meta), multi_hot(gold, len(names))
        wrong = P != Y                                                           # (N, C)
        score = np.where(wrong, np.where(P, probs, 1 - probs), 0).max(1)
        keep = np.flatnonzero(wrong.any(1))
        gold_s = ["|".join(names[j] for j in np.flatnonzero(r)) for r in Y]
        pred_s = ["|".join(names[j] for j in np.flatnonzero(r)) for r in P]
    keep = keep[np.argsort(-score[keep], kind="stable")]
    pair = bool(rows) and rows[0].text_b is not None
    head = (["text_a", "text_b"] if pair else ["text"]) + ["gold", "predicted", "split"]
    head.insert(-1, "abs_error" if task == "regression" else "confidence")
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(head)
        for i in keep:
            texts = [rows[i].text, rows[i].text_b] if pair else [rows[i].text]
            w.writerow(texts + [gold_s[i], pred_s[i], f"{score[i]:.4f}", split])
    return int(len(keep))


def plot_confusion(cm: list[list[int]], names: list[str], path: Path, title: str = "") -> bool:
    """Row-normalised confusion matrix (gold rows, predicted columns) with counts in the cells; labels drawn with
    a font that has them, else numbered with a legend table (plots.py); the PNG carries the names. False (nothing
    written) without matplotlib."""
    from .plots import available, axis_labels, layout, pyplot, save_png

    if not available():
        return False
    title = title or "confusion matrix (row-normalised; counts in cells)"
    with pyplot([*names, title]) as (plt, fonts):
        cm_a = np.asarray(cm, dtype=float)
        norm = cm_a / np.clip(cm_a.sum(1, keepdims=True), 1, None)
        n = len(names)
        ticks = axis_labels(names, fonts)
        size = max(5.0, 0.55 * n + 2)
        fig, ax = plt.subplots(figsize=(size * (1.35 if ticks != list(names) else 1), size * 0.9))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), ticks, rotation=45 if ticks == list(names) else 0, ha="right" if ticks == list(names) else "center")
        ax.set_yticks(range(n), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(fonts.safe(title))
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    if cm_a[i, j]:
                        ax.text(j, i, int(cm_a[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        layout(fig, names, ticks, fonts)
        save_png(fig, path, names)
    return True
