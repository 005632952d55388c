"""Multi-label thresholds: the vectorised tuner against brute force, gains over 0.5 on a constructed
case, the rare-label fallback, min_k/max_k; then one tiny multi-label run end to end (meta, metrics,
bad_cases.tsv, Predictor, CLI flags, ONNX bundle) and the benchmark collector."""
from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import make_text, tiny_cfg
from tricklab.cli import main as cli_main
from tricklab.config import load_config
from tricklab.errors import ConfigError
from tricklab.evaluation.metrics import compute_metrics, sigmoid
from tricklab.inference import Predictor
from tricklab.evaluation.thresholds import best_f1_thresholds, select_labels, threshold_vector, tune_thresholds
from tricklab.training import train

ROOT = Path(__file__).resolve().parents[1]


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp, n = (pred & gold).sum(), pred.sum() + gold.sum()
    return 2 * tp / n if n else 0.0


def test_vectorised_tuner_matches_brute_force():
    rng = np.random.default_rng(0)
    probs = np.round(rng.random((60, 6)), 2)  # rounded: many ties, which must be decided together
    Y = rng.random((60, 6)) < np.linspace(0.05, 0.6, 6)
    thr, best = best_f1_thresholds(probs, Y)
    for c in range(6):
        brute = max(f1(probs[:, c] >= t, Y[:, c]) for t in np.unique(probs[:, c]))
        assert best[c] == pytest.approx(brute) and f1(probs[:, c] >= thr[c], Y[:, c]) == pytest.approx(brute)
        assert f1(probs[:, c] >= thr[c], Y[:, c]) >= f1(probs[:, c] >= 0.5, Y[:, c])


def constructed() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """low: positives at 0.30-0.45 (0.5 finds none); high: noisy around 0.5; rare: 2 positives; none: 0."""
    rng = np.random.default_rng(1)
    N = 40
    Y = np.zeros((N, 4), dtype=bool)
    Y[:15, 0] = True
    Y[10:30, 1] = True
    Y[[3, 33], 2] = True
    P = np.zeros((N, 4))
    P[:, 0] = np.where(Y[:, 0], rng.uniform(0.30, 0.45, N), rng.uniform(0.0, 0.25, N))
    P[:, 1] = np.where(Y[:, 1], rng.uniform(0.45, 0.95, N), rng.uniform(0.05, 0.6, N))
    P[:, 2] = np.where(Y[:, 2], 0.35, rng.uniform(0.0, 0.3, N))
    P[:, 3] = rng.uniform(0.0, 0.4, N)
    return P, Y, ["low", "high", "rare", "none"]


def test_tuned_thresholds_beat_fixed_and_rare_labels_fall_back():
    P, Y, names = constructed()
    t = tune_thresholds(P, [list(np.flatnonzero(r)) for r in Y], names, min_support=5)
    assert t["fallback"] == ["rare", "none"] and t["min_support"] == 5
    assert t["per_label"]["rare"] == t["per_label"]["none"] == t["global"]
    low_neg, low_pos = P[~Y[:, 0], 0].max(), P[Y[:, 0], 0].min()
    assert t["per_label"]["low"] == pytest.approx((low_neg + low_pos) / 2)  # halfway between the classes
    assert t["per_label"]["low"] != t["global"]
    meta = {"labels": {"names": names}, "thresholds": t}
    logits = np.log(P / (1 - P))
    gold = [list(np.flatnonzero(r)) for r in Y]
    fixed = compute_metrics("multi_label", logits, gold, names)
    tuned = compute_metrics("multi_label", logits, gold, names, threshold_vector(meta))
    assert tuned["micro_f1"] > fixed["micro_f1"] and tuned["macro_f1"] > fixed["macro_f1"]
    assert tuned["per_class"]["low"]["f1"] == 1.0 and fixed["per_class"]["low"]["f1"] == 0.0
    assert tuned["per_class"]["high"]["f1"] >= fixed["per_class"]["high"]["f1"]
    # the global threshold maximises pooled (micro) F1 over all labels
    glob = compute_metrics("multi_label", logits, gold, names, t["global"])["micro_f1"]
    for other in (0.2, 0.3, 0.4, 0.5, 0.6):
        assert glob >= compute_metrics("multi_label", logits, gold, names, other)["micro_f1"]
    # min_support=1: "rare" gets its own; "none" (no positives) still falls back
    t1 = tune_thresholds(P, Y, names, min_support=1)
    assert t1["fallback"] == ["none"] and t1["per_label"]["rare"] != t1["global"]
    with pytest.raises(ConfigError, match="min_support"):
        tune_thresholds(P, Y, names, min_support=0)
    with pytest.raises(ConfigError, match="calibration.min_support"):
        load_config(None, ["calibration.min_support=0"])
    assert threshold_vector({"labels": {"names": names}}).tolist() == [0.5] * 4
    assert threshold_vector(meta, 0.7).tolist() == [0.7] * 4


def test_select_labels_min_k_max_k():
    probs = np.array([[0.9, 0.8, 0.7, 0.1], [0.2, 0.3, 0.1, 0.05], [0.5, 0.2, 0.6, 0.4]])
    thr = np.array([0.5, 0.5, 0.5, 0.3])
    assert select_labels(probs, thr) == [[0, 1, 2], [], [2, 0, 3]]
    assert select_labels(probs, thr, min_k=1) == [[0, 1, 2], [1], [2, 0, 3]]  # the top one when none passes
    assert select_labels(probs, thr, min_k=2, max_k=2) == [[0, 1], [1, 0], [2, 0]]
    assert select_labels(probs, 0.95, min_k=1, max_k=1) == [[0], [1], [2]]
    # per-label thresholds: in row 3 label 3 passes (0.4 >= 0.3), label 2 (0.6) fills up; most probable first
    assert select_labels(probs, np.array([0.9, 0.9, 0.9, 0.3]), min_k=2) == [[0, 1], [1, 0], [2, 3]]


# ------------------------------------------------------------------ end to end

PATTERNS = [["sports"], ["finance"], ["sports", "game"]]


def _lines(rng: random.Random, patterns: list[list[str]]) -> str:
    return "\n".join("".join(make_text(rng, lab) for lab in labs) + "\t" + "|".join(labs) for labs in patterns) + "\n"


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("thr")
    rng = random.Random(5)
    (d / "ml").mkdir()
    (d / "ml" / "train.tsv").write_text(_lines(rng, [PATTERNS[i % 3] for i in range(90)]), encoding="utf-8")
    dev = [PATTERNS[i % 2] for i in range(37)] + [PATTERNS[2]] * 3  # "game": 3 dev positives, below min_support
    (d / "ml" / "dev.tsv").write_text(_lines(rng, dev), encoding="utf-8")
    (d / "ml" / "test.tsv").write_text(_lines(rng, [PATTERNS[i % 3] for i in range(30)]), encoding="utf-8")
    train(tiny_cfg(tiny_model, "train.epochs=2"), d / "ml", out=d / "run", progress=False)
    return d / "run"


TEXTS = ["球赛冠军队员", "股市银行基金利率", "玩家游戏球赛", "的了在是", "球赛股市", "电竞版本胜负队员", "利率", "我有"]


def test_multi_label_run_tunes_and_reports(run):
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    t = meta["thresholds"]
    names = meta["labels"]["names"]
    assert set(t["per_label"]) == set(names) == {"sports", "finance", "game"} and "temperature" not in meta
    assert t["fallback"] == ["game"] and t["per_label"]["game"] == t["global"] and t["min_support"] == 5
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["thresholds"] == t and m["evaluated_on"] == "test"
    for k in ("micro_f1", "macro_f1", "micro_f1_tuned", "macro_f1_tuned"):
        assert 0 <= m[k] <= 1 and m[k] == m["test"][k] and k in m["dev"]
    assert "ece" not in m and not (run / "reliability.png").exists()
    rows = list(csv.reader(open(run / "bad_cases.tsv", encoding="utf-8", newline=""), delimiter="\t"))
    assert rows[0] == ["text", "gold", "predicted", "confidence", "split"]
    conf = [float(r[3]) for r in rows[1:]]
    assert conf == sorted(conf, reverse=True) and all(0 <= c <= 1 for c in conf)
    assert all(r[1] != r[2] and r[4] == "test" for r in rows[1:])
    gold = dict(line.split("\t") for line in (run.parent / "ml" / "test.tsv").read_text(encoding="utf-8").splitlines())
    order = {n: i for i, n in enumerate(names)}  # sets are written in label order
    assert all(r[1] == "|".join(sorted(gold[r[0]].split("|"), key=order.get)) for r in rows[1:])
    assert len(rows) - 1 == round((1 - m["subset_accuracy_tuned"]) * m["n"])  # every wrong label set


def test_predictor_applies_tuned_thresholds(run):
    p = Predictor.from_run(run)
    t = p.meta["thresholds"]["per_label"]
    probs = sigmoid(p.logits(TEXTS).astype(np.float64))
    got = p.predict(TEXTS, top_k=3)
    for pr, g in zip(probs, got):
        want = [p.labels[j] for j in np.argsort(-pr) if pr[j] >= t[p.labels[j]]]
        assert g["labels"] == want and len(g["top_k"]) == 3
        assert g["scores"] == pytest.approx({lab: float(pr[p.labels.index(lab)]) for lab in want})
    # an override threshold replaces the tuned ones; min_k/max_k shape the answer
    fixed = Predictor.from_run(run, threshold=0.5).predict(TEXTS)
    assert [g["labels"] for g in fixed] == [[p.labels[j] for j in np.argsort(-pr) if pr[j] >= 0.5] for pr in probs]
    one = p.predict(TEXTS, top_k=2, threshold=1.0, min_k=1, max_k=1)
    assert [g["labels"] for g in one] == [[g["top_k"][0][0]] for g in one]
    assert all(r["labels"] is None and r["uncertain"] for r in p.predict(TEXTS, abstain_below=1.0))
    with pytest.raises(ConfigError, match="min-k"):
        p.predict(TEXTS, min_k=3, max_k=2)


def test_predict_cli_flags(run, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS), encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["predict", "--run", str(run), str(inp), "--threshold", "0.99", "--min-k", "1",
                     "--top-k", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(TEXTS) and all(x["labels"] == [x["top_k"][0][0]] for x in lines)
    assert cli_main(["predict", "--run", str(run), str(inp), "--threshold", "0.0", "--max-k", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all(len(x["labels"]) == 2 for x in lines)
    assert cli_main(["predict", "--run", str(run), str(inp), "--max-k", "0"]) == 2
    assert "--max-k" in capsys.readouterr().err


def test_evaluate_uses_tuned_thresholds(run, capsys):
    test_file = run.parent / "ml" / "test.tsv"
    assert cli_main(["evaluate", "--run", str(run), "--data", str(test_file)]) == 0
    out = capsys.readouterr().out
    ev = json.loads((run / "eval_test.json").read_text(encoding="utf-8"))
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    for k in ("micro_f1", "micro_f1_tuned", "macro_f1_tuned"):
        assert ev[k] == pytest.approx(m["test"][k], abs=1e-9)
    assert "micro_f1_tuned" in out and (run / "bad_cases_test.tsv").is_file()


def test_bundle_carries_thresholds(run, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the serve extra")
    pytest.importorskip("onnx", reason="ONNX export needs the serve extra")
    from tricklab.inference.export import export_bundle

    info = export_bundle(run, tmp_path / "b", log=None)
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    assert info["thresholds"] == meta["thresholds"] and info["temperature"] is None
    assert info["verify"]["agreement"] == 1.0
    onx, ref = Predictor.from_bundle(tmp_path / "b", min_k=1), Predictor.from_run(run, min_k=1)
    assert onx.meta["thresholds"] == meta["thresholds"]
    assert [x["labels"] for x in onx.predict(TEXTS)] == [x["labels"] for x in ref.predict(TEXTS)]


def test_collect_runs_table(run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("collect_runs", ROOT / "benchmarks" / "collect_runs.py")
    cr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cr)
    for seed, (a, b) in enumerate([(0.6, 0.7), (0.8, 0.9)]):
        d = tmp_path / "duee" / "tuned" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"micro_f1": a, "micro_f1_tuned": b, "evaluated_on": "test",
                                                    "test": {"micro_f1": a - 0.1}}))
    sst = tmp_path / "sst"
    sst.mkdir()
    (sst / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "ece": 0.08, "ece_calibrated": 0.02,
                                                  "temperature": 1.7, "evaluated_on": "dev"}))
    assert cr.main([str(tmp_path / "duee" / "*" / "seed*"), str(sst), str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:3] == ["variant", "runs", "split"]
    assert {"accuracy", "micro_f1", "micro_f1_tuned", "macro_f1_tuned", "ece", "ece_calibrated"} <= set(head)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[2:]}
    tuned = rows["tuned"]
    assert tuned[1] == "2" and tuned[head.index("micro_f1")] == "0.7000 ± 0.1414"
    assert tuned[head.index("micro_f1_tuned")] == "0.8000 ± 0.1414" and tuned[head.index("accuracy")] == ""
    assert rows["sst"][head.index("ece_calibrated")] == "0.0200" and rows["sst"][2] == "dev"
    assert rows["run"][head.index("micro_f1_tuned")] != ""
    assert cr.main([str(tmp_path / "duee"), "--split", "test"]) == 0
    assert "0.6000 ± 0.1414" in capsys.readouterr().out
    assert cr.main([str(tmp_path / "nothing")]) == 2
