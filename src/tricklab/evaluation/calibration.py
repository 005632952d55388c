"""Probability calibration for single-label classifiers: temperature scaling, ECE, reliability diagram.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599):
probabilities softmax(z / T) with one scalar T > 0 fitted on dev logits by minimising the negative
log-likelihood; the argmax (and so accuracy) does not change. The fit is a bounded 1-D search over
log T in [log 0.05, log 20] (scipy's bounded Brent); if the result does not lower the dev NLL
(numerically flat), T stays 1.

ECE (expected calibration error): the top-label confidence max_c p_c of every example falls into one
of 15 equal-width bins (lower, upper] over (0, 1]; ECE = sum over bins of |bin| / N * |accuracy(bin) -
mean confidence(bin)|. Empty bins add nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)


def scaled_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T): (N, C) -> (N, C)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1))


def nll(logits: np.ndarray, gold: Sequence[int] | np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(logits / T)."""
    y = np.asarray(gold, dtype=np.int64)
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)   # (N, C)
    return float(-logp[np.arange(len(y)), y].mean()) if len(y) else 0.0


def fit_temperature(logits: np.ndarray, gold: Sequence[int] | np.ndarray) -> float:
    """The T minimising dev NLL of softmax(logits / T); never raises the NLL above T = 1's."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(gold, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: nll(logits, y, float(np.exp(log_t))), method="bounded",
                          bounds=(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])), options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    return t if nll(logits, y, t) < nll(logits, y, 1.0) else 1.0


def reliability_bins(probs: np.ndarray, gold: Sequence[int] | np.ndarray, bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: (mean confidence, accuracy, count), each (bins,); empty bins 0."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(gold, dtype=np.int64)
    conf = probs.max(-1)                                                    # (N,)
    correct = (probs.argmax(-1) == y).astype(np.float64)                    # (N,)
    b = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)     # bin (lower, upper]
    count = np.bincount(b, minlength=bins).astype(np.float64)
    safe = np.maximum(count, 1)
    return np.bincount(b, conf, bins) / safe, np.bincount(b, correct, bins) / safe, count


def ece(probs: np.ndarray, gold: Sequence[int] | np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of top-label confidence, `bins` equal-width bins (see the module doc)."""
    conf, acc, count = reliability_bins(probs, gold, bins)
    n = count.sum()
    return float((count / n * np.abs(acc - conf)).sum()) if n else 0.0


def calibration_metrics(logits: np.ndarray, gold: Sequence[int] | np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE and NLL after temperature scaling (the uncalibrated `ece` and `loss` are in compute_metrics)."""
    return {"ece_calibrated": ece(scaled_probs(logits, temperature), gold),
            "loss_calibrated": nll(logits, gold, temperature), "temperature": float(temperature)}


def plot_reliability(logits: np.ndarray, gold: Sequence[int] | np.ndarray, temperature: float, path: Path,
                     title: str = "", bins: int = ECE_BINS) -> bool:
    """Reliability diagrams before (T = 1) and after temperature scaling, side by side, ECE in the titles (the
    title drawn with a font that has its characters: plots.py). False (nothing written) without matplotlib."""
    from .plots import available, pyplot

    if not available():
        return False
    with pyplot([title]) as (plt, fonts):
        _reliability_axes(plt, logits, gold, temperature, path, fonts.safe(title), bins)
    return True


def _reliability_axes(plt: Any, logits: np.ndarray, gold: Sequence[int] | np.ndarray, temperature: float, path: Path,
                      title: str, bins: int) -> None:  # pragma: no mutate block
    # plot styling (colours, sizes, labels): left out of mutation testing; the numbers drawn come from
    # reliability_bins and ece, which are tested
    from .plots import save_png

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    for ax, t, name in ((axes[0], 1.0, "before"), (axes[1], temperature, f"after (T = {temperature:.3f})")):
        probs = scaled_probs(logits, t)
        conf, acc, count = reliability_bins(probs, gold, bins)
        filled = count > 0
        ax.bar(edges[:-1][filled], acc[filled], width=1 / bins, align="edge", color="#3b7dd8", edgecolor="white",
               label="accuracy")
        lo = np.minimum(acc, conf)
        ax.bar(edges[:-1][filled], np.abs(conf - acc)[filled], bottom=lo[filled], width=1 / bins, align="edge",
               fill=False, hatch="//", edgecolor="#d62728", linewidth=0.8, label="gap: mean confidence vs accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-label probability)")
        ax.set_title(f"{name}: ECE {ece(probs, gold, bins):.4f}")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path, [])
