"""evaluation/thresholds.py at its edges, against values worked out by hand from the module's rules:
a tuned threshold lies halfway between the lowest accepted probability and the next lower one (half the
lowest one when nothing is below); a column without positives gets 0.5 and F1 0; labels with fewer than
`min_support` dev positives use the pooled (micro-F1) threshold; missing tuned values fall back to the
global threshold, then to 0.5. Probabilities are handled in float64 whatever their input type."""
from __future__ import annotations

import numpy as np
import pytest

from tricklab.errors import ConfigError
from tricklab.evaluation.thresholds import (DEFAULT_THRESHOLD, best_f1_thresholds, check_options, multi_hot,
                                            select_labels, threshold_vector, tune_thresholds)


def test_multi_hot_is_boolean():
    Y = multi_hot([[0, 2], [], [1]], 3)
    assert Y.dtype == bool
    assert Y.tolist() == [[True, False, True], [False, False, False], [False, True, False]]


def test_best_f1_no_rows_and_one_row():
    thr, f1 = best_f1_thresholds(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool))
    assert thr.dtype == np.float64 and thr.tolist() == [0.5, 0.5, 0.5] and f1.tolist() == [0.0, 0.0, 0.0]
    # one row: the positive column accepts its only probability (threshold = half of it, nothing below)
    thr, f1 = best_f1_thresholds(np.array([[0.7, 0.2]]), np.array([[True, False]]))
    assert thr.tolist() == [0.35, 0.5] and f1.tolist() == [1.0, 0.0]


def test_best_f1_single_positive_column_gets_its_own_threshold():
    probs = np.array([[0.9, 0.1], [0.6, 0.8], [0.3, 0.4]])
    Y = np.array([[False, False], [True, False], [False, False]])   # column 0: one positive; column 1: none
    thr, f1 = best_f1_thresholds(probs, Y)
    # column 0: accepting {0.9, 0.6} gives F1 2/3 > accepting {0.9} (0): the cut lies between 0.6 and 0.3
    assert thr[0] == pytest.approx(0.45) and f1[0] == pytest.approx(2 / 3)
    assert thr[1] == DEFAULT_THRESHOLD and f1[1] == 0.0


def test_best_f1_float32_probabilities_give_float64_midpoints():
    rng = np.random.default_rng(0)
    probs = rng.random((30, 4)).astype(np.float32)
    Y = rng.random((30, 4)) < 0.4
    thr, _ = best_f1_thresholds(probs, Y)
    for c in range(4):
        col = sorted({float(v) for v in probs[:, c]}, reverse=True)
        t = thr[c]
        accepted = [v for v in col if v >= t]
        below = [v for v in col if v < t]
        hi = min(accepted)
        expect = (hi + max(below)) / 2 if below else hi / 2
        assert t == expect            # exactly: the midpoint of the two float32 values, computed in float64


def test_tune_thresholds_defaults_and_boundaries():
    rng = np.random.default_rng(1)
    N = 40
    Y = np.zeros((N, 3), dtype=bool)
    Y[:5, 0] = True        # support 5 == the default min_support: tuned on its own
    Y[:4, 1] = True        # support 4: falls back to the global threshold
    Y[:20, 2] = True
    lo = np.array([0.6, 0.3, 0.3])                                   # column a separates higher up
    P = np.where(Y, rng.uniform(lo, lo + 0.2, (N, 3)), rng.uniform(0.0, lo - 0.05, (N, 3)))
    t = tune_thresholds(P, Y, ["a", "b", "c"])
    assert t["min_support"] == 5 and t["fallback"] == ["b"]
    assert t["per_label"]["b"] == t["global"]
    own = best_f1_thresholds(P, Y)[0]
    assert t["per_label"]["a"] == own[0] != t["global"] and t["per_label"]["c"] == own[2]
    pooled = best_f1_thresholds(P.reshape(-1, 1), Y.reshape(-1, 1))[0][0]
    assert t["global"] == pooled
    t5 = tune_thresholds(P, Y, ["a", "b", "c"], min_support=4)
    assert t5["fallback"] == []


def test_tune_thresholds_gold_forms_agree():
    rng = np.random.default_rng(2)
    P = rng.random((12, 4))
    ids = [[i % 4, (i + 1) % 4] for i in range(12)]                  # two labels per row
    Y = multi_hot(ids, 4)
    as_lists = tune_thresholds(P, ids, list("wxyz"), min_support=1)
    assert tune_thresholds(P, np.array(ids), list("wxyz"), min_support=1) == as_lists   # int array of ids
    assert tune_thresholds(P, Y, list("wxyz"), min_support=1) == as_lists               # (N, C) booleans


def test_tune_thresholds_without_any_positive():
    t = tune_thresholds(np.full((6, 2), 0.3), [[] for _ in range(6)], ["a", "b"])
    assert t == {"per_label": {"a": 0.5, "b": 0.5}, "global": 0.5, "min_support": 5, "fallback": ["a", "b"]}


def test_tune_thresholds_rejects_min_support_below_one():
    with pytest.raises(ConfigError, match=r"^config calibration.min_support: must be at least 1, got 0$"):
        tune_thresholds(np.zeros((2, 1)), [[0], []], ["a"], min_support=0)


def test_threshold_vector_fallbacks():
    labels = {"names": ["a", "b", "c"]}
    both = {"labels": labels, "thresholds": {"per_label": {"a": 0.2}, "global": 0.35}}
    assert threshold_vector(both).tolist() == [0.2, 0.35, 0.35]       # missing names use the global one
    only_global = {"labels": labels, "thresholds": {"global": 0.4}}
    assert threshold_vector(only_global).tolist() == [0.4, 0.4, 0.4]
    only_per = {"labels": labels, "thresholds": {"per_label": {"b": 0.6}}}
    assert threshold_vector(only_per).tolist() == [0.5, 0.6, 0.5]
    assert threshold_vector({"labels": labels, "thresholds": {}}).tolist() == [0.5] * 3
    assert threshold_vector(both, override=0.9).tolist() == [0.9] * 3
    assert threshold_vector(both, override=0).tolist() == [0.0] * 3   # 0 is an override, not "none"


def test_select_labels_ties_keep_label_order():
    # 60 labels with many tied probabilities: equal probabilities come out in label order
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((5, 60)), 1)
    got = select_labels(probs, 0.0)
    for row, on in zip(probs, got):
        assert on == sorted(range(60), key=lambda j: (-row[j], j))


@pytest.mark.parametrize("args,message", [
    ((1.5, None, None), r"^--threshold 1.5: must be a probability in \[0, 1\]$"),
    ((-0.1, None, None), r"^--threshold -0.1: must be a probability in \[0, 1\]$"),
    ((None, -1, None), r"^--min-k -1: must be 0 or more \(1: always return at least the top label\)$"),
    ((None, None, 0), r"^--max-k 0: must be at least 1 \(leave it out for no limit\)$"),
    ((None, 3, 2), r"^--min-k 3 is larger than --max-k 2; fix: make min-k <= max-k$"),
])
def test_check_options_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        check_options(*args)


@pytest.mark.parametrize("args", [(0.0, 0, 1), (1.0, None, None), (None, 2, 2), (0.5, 0, None), (None, None, 1)])
def test_check_options_accepts(args):
    check_options(*args)
