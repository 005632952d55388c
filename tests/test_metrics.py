"""Single-label metrics against formulas written out here: per-class precision, recall and F1 from counts, macro-F1
over the classes that occur in the gold labels or the predictions (scikit-learn's `average="macro"` default: a
class absent from both has no F1 to average), support-weighted F1, accuracy and the mean negative log-likelihood."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tricklab.evaluation.metrics import compute_metrics


def reference(logits: np.ndarray, gold: list[int], C: int) -> dict:
    pred = [int(np.argmax(row)) for row in logits]
    per = {}
    for c in range(C):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[c] = (prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0, tp + fn)
    present = sorted(set(gold) | set(pred))
    nll = 0.0
    for row, g in zip(logits, gold):
        z = row - row.max()
        nll -= z[g] - math.log(np.exp(z).sum())
    return {"accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold),
            "macro_f1": sum(per[c][2] for c in present) / len(present),
            "weighted_f1": sum(per[c][2] * per[c][3] for c in range(C)) / len(gold),
            "loss": nll / len(gold), "per": per}


@pytest.mark.parametrize("seed", range(5))
def test_single_label_metrics_match_the_formulas(seed):
    rng = np.random.default_rng(seed)
    C, n = 5, 40
    gold = [int(g) for g in rng.choice([0, 1, 3], size=n)]            # classes 2 and 4 never in gold
    logits = rng.normal(size=(n, C))
    logits[:, 4] -= 10                                                 # ... and 4 never predicted either
    names = [f"c{i}" for i in range(C)]
    got = compute_metrics("single_label", logits, gold, names)
    want = reference(logits, gold, C)
    for k in ("accuracy", "macro_f1", "weighted_f1", "loss"):
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    for c in range(C):
        pc = got["per_class"][names[c]]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(want["per"][c])
    assert 4 not in set(np.argmax(logits, 1))
    # class 4 (in neither) is left out of the macro average; class 2 counts once it is predicted
    assert got["macro_f1"] != pytest.approx(sum(want["per"][c][2] for c in range(C)) / C)
