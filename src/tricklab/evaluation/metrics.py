"""Metrics per task, from logits and gold labels (numpy in, plain floats out)."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from .calibration import calibration_metrics, ece
from .thresholds import threshold_vector

DEFAULT_METRIC = {"single_label": "accuracy", "multi_label": "micro_f1", "regression": "pearson"}
TASK_METRICS = {"single_label": ("accuracy", "macro_f1", "weighted_f1", "loss", "f1_positive"),
                "multi_label": ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "subset_accuracy"),
                "regression": ("pearson", "spearman", "mse")}
LOWER_IS_BETTER = {"mse", "loss"}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=float), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=float), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return p, r, f


def confusion(gold: np.ndarray, pred: np.ndarray, C: int) -> np.ndarray:
    return np.bincount(gold * C + pred, minlength=C * C).reshape(C, C)


def compute_metrics(task: str, logits: np.ndarray, gold: Any, names: list[str],
                    threshold: float | np.ndarray = 0.5) -> dict[str, Any]:
    """accuracy/macro-F1/per-class/ECE (single), micro/macro-F1 (multi; `threshold`: a number or one per
    label (C,)), MSE/Pearson/Spearman (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "regression":
        y, p = np.asarray(gold, dtype=np.float64), logits.reshape(-1)
        const = np.std(p) == 0 or np.std(y) == 0
        return {"mse": float(np.mean((p - y) ** 2)),
                "pearson": 0.0 if const else float(stats.pearsonr(p, y)[0]),
                "spearman": 0.0 if const else float(stats.spearmanr(p, y)[0]), "n": int(len(y))}
    C = len(names)
    if task == "multi_label":
        Y = np.zeros((len(gold), C), dtype=bool)
        for i, labs in enumerate(gold):
            Y[i, labs] = True
        P = sigmoid(logits) >= threshold
        tp, fp, fn = (P & Y).sum(0), (P & ~Y).sum(0), (~P & Y).sum(0)
        p, r, f = _prf(tp, fp, fn)
        mp, mr, mf = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
        return {"micro_f1": float(mf[0]), "macro_f1": float(f.mean()), "micro_precision": float(mp[0]),
                "micro_recall": float(mr[0]), "subset_accuracy": float((P == Y).all(1).mean()), "n": int(len(Y)),
                "per_class": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                  "support": int(Y[:, i].sum())} for i, n in enumerate(names)}}
    y = np.asarray(gold, dtype=np.int64)
    pred = logits.argmax(-1)
    cm = confusion(y, pred, C)
    tp = np.diag(cm)
    p, r, f = _prf(tp, cm.sum(0) - tp, cm.sum(1) - tp)
    probs = softmax(logits)
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    seen = (cm.sum(0) + cm.sum(1)) > 0      # classes in the gold labels or the predictions, as scikit-learn averages
    out = {"accuracy": float((pred == y).mean()), "macro_f1": float(f[seen].mean()) if seen.any() else 0.0,
           "weighted_f1": float((f * cm.sum(1)).sum() / max(1, cm.sum())), "loss": nll, "ece": ece(probs, y),
           "n": int(len(y)),
           "per_class": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(cm[i].sum())} for i, n in enumerate(names)},
           "confusion_matrix": cm.tolist()}
    if C == 2:
        out["f1_positive"] = float(f[1])
    return out


def compute_run_metrics(task: str, logits: np.ndarray, gold: Any, names: list[str], meta: dict[str, Any]
                        ) -> dict[str, Any]:
    """compute_metrics plus what a saved model applies when it predicts (its meta): single-label with a
    temperature adds `ece_calibrated`, `loss_calibrated`, `temperature`; multi-label with tuned thresholds
    adds `*_tuned` copies of its metrics (the plain ones stay at threshold 0.5, the training metric)."""
    m = compute_metrics(task, logits, gold, names)
    if task == "single_label" and meta.get("temperature") is not None:
        m |= calibration_metrics(logits, gold, float(meta["temperature"]))
    if task == "multi_label" and meta.get("thresholds"):
        tuned = compute_metrics(task, logits, gold, names, threshold_vector(meta))
        m |= {f"{k}_tuned": v for k, v in tuned.items() if k != "n"}
    return m


def is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric in LOWER_IS_BETTER else new > best


def worst_confusions(metrics: dict[str, Any], names: list[str], k: int = 5) -> list[tuple[str, str, int]]:
    cm = np.asarray(metrics.get("confusion_matrix", []))
    if cm.size == 0:
        return []
    off = [(names[i], names[j], int(cm[i, j])) for i in range(len(names)) for j in range(len(names)) if i != j and cm[i, j]]
    return sorted(off, key=lambda x: -x[2])[:k]
