"""Temperature scaling, ECE, abstention and error analysis: reference checks on numbers worked out by
hand or sampled from a known temperature, then one tiny single-label run end to end (meta, metrics,
reliability.png, bad_cases.tsv, Predictor, CLI, ONNX bundle)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_cfg
from tricklab.evaluation.calibration import ece, fit_temperature, nll, plot_reliability, reliability_bins, scaled_probs
from tricklab.cli import main as cli_main
from tricklab.data.readers import Row
from tricklab.errors import ConfigError
from tricklab.inference import Predictor
from tricklab.evaluation.reports import confusions_table, write_bad_cases
from tricklab.training import train


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.0, 1.0]])
    gold = np.array([0, 1, 0, 1, 0])
    # bins of width 1/15: 0.9 -> (0.867, 0.933] holds 2 (1 right): |0.5 - 0.9| * 2/5 = 0.16
    # 0.6 -> (0.533, 0.6]: |1 - 0.6| / 5 = 0.08;  0.7 -> (0.667, 0.733]: |1 - 0.7| / 5 = 0.06
    # 1.0 -> (0.933, 1]: wrong, |0 - 1| / 5 = 0.2
    assert ece(probs, gold) == pytest.approx(0.16 + 0.08 + 0.06 + 0.2)
    conf, acc, count = reliability_bins(probs, gold)
    assert count.sum() == 5 and count[14] == 1 and count[13] == 2 and acc[13] == 0.5
    assert ece(np.array([[0.75, 0.25]] * 4), np.array([0, 0, 0, 1])) == pytest.approx(0.0)  # 75% right at 0.75
    assert ece(probs, gold, bins=1) == pytest.approx(abs(3 / 5 - (0.9 + 0.9 + 0.6 + 0.7 + 1.0) / 5))


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_fit_recovers_known_temperature(t_true):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(20000, 5))
    p = scaled_probs(z, t_true)
    y = (rng.random((len(z), 1)) > p.cumsum(1)).sum(1)  # one draw from softmax(z / T_true) per row
    t = fit_temperature(z, y)
    assert t == pytest.approx(t_true, rel=0.05), t
    assert nll(z, y, t) <= nll(z, y, 1.0)
    assert ece(scaled_probs(z, t), y) < ece(scaled_probs(z, 1.0), y)


def test_temperature_fit_never_raises_nll():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, size=(50, 3))
    y = z.argmax(1)
    for logits, gold in ((z, y), (np.zeros((10, 3)), np.arange(10) % 3), (z[:1], y[:1])):
        t = fit_temperature(logits, gold)
        assert t > 0 and nll(logits, gold, t) <= nll(logits, gold, 1.0) + 1e-12
    assert fit_temperature(np.zeros((10, 3)), np.arange(10) % 3) == 1.0  # flat: nothing to gain, T stays 1
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0


def test_reliability_png(tmp_path):
    rng = np.random.default_rng(2)
    z = rng.normal(0, 4, size=(300, 4))
    plot_reliability(z, z.argmax(1) * (rng.random(300) > 0.3), 2.0, tmp_path / "r.png", "test")
    assert (tmp_path / "r.png").stat().st_size > 5000


def _rows(texts, pair=False):
    return [Row(t, f"b{i}" if pair else None, None, i + 1, "x") for i, t in enumerate(texts)]


def test_bad_cases_single_label_pairs_and_regression(tmp_path):
    names = ["a", "b", "c"]
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.85, 0.05], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]))
    gold = [0, 0, 1, 2]  # rows 2 and 3 are wrong, predicted with 0.85 and 0.5
    n = write_bad_cases(tmp_path / "s.tsv", "test", "single_label", _rows(["t1", "t2\tx", "t3", "t4"], pair=True),
                        gold, logits, names, {})
    rows = read_tsv(tmp_path / "s.tsv")
    assert n == 2 and rows[0] == ["text_a", "text_b", "gold", "predicted", "confidence", "split"]
    assert rows[1] == ["t2\tx", "b1", "a", "b", "0.8500", "test"]
    assert rows[2] == ["t3", "b2", "b", "a", "0.5000", "test"]
    # the model's temperature changes the confidences, not the order
    write_bad_cases(tmp_path / "t.tsv", "dev", "single_label", _rows(["t1", "t2", "t3", "t4"]), gold, logits, names,
                    {"temperature": 2.0})
    rows = read_tsv(tmp_path / "t.tsv")
    assert rows[0] == ["text", "gold", "predicted", "confidence", "split"]
    assert float(rows[1][3]) == pytest.approx(scaled_probs(logits[1:2], 2.0).max(), abs=1e-4)
    # regression: every row, largest absolute error first
    write_bad_cases(tmp_path / "r.tsv", "test", "regression", _rows(["x", "y", "z"]), [1.0, 2.0, 3.0],
                    np.array([[1.5], [0.0], [3.1]]), ["score"], {})
    rows = read_tsv(tmp_path / "r.tsv")
    assert rows[0] == ["text", "gold", "predicted", "abs_error", "split"]
    assert [r[0] for r in rows[1:]] == ["y", "x", "z"] and rows[1][3] == "2.0000"


def test_confusions_table_shares():
    m = {"confusion_matrix": [[8, 2, 0], [5, 5, 0], [0, 1, 9]]}
    lines = confusions_table(m, ["a", "b", "c"], k=2).splitlines()
    assert "share of gold" in lines[0] and len(lines) == 3
    assert lines[1].split() == ["b", "->", "a", "5", "50.0%"] and lines[2].split() == ["a", "->", "b", "2", "20.0%"]


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    from conftest import write_thucnews

    d = tmp_path_factory.mktemp("calib")
    write_thucnews(d / "thuc", n_train=120, n_dev=45)
    train(tiny_cfg(tiny_model, "train.epochs=3", "train.batch_size=8"), d / "thuc", out=d / "run", progress=False)
    return d / "run"


TEXTS = ["球赛冠军队员", "股市银行基金利率", "玩家游戏", "的了在是", "球赛股市", "电竞版本胜负", "利率", "我有和人"]


def test_single_label_run_calibrates_and_reports(run):
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    t = meta["temperature"]
    assert isinstance(t, float) and t > 0 and "thresholds" not in meta
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["temperature"] == t and m["evaluated_on"] == "test"
    for split in ("dev", "test"):
        s = m[split]
        assert 0 <= s["ece"] <= 1 and 0 <= s["ece_calibrated"] <= 1 and s["temperature"] == t
    assert m["dev"]["loss_calibrated"] <= m["dev"]["loss"] + 1e-9  # fitted on dev: never worse there
    assert m["ece"] == m["test"]["ece"] and m["ece_calibrated"] == m["test"]["ece_calibrated"]
    assert (run / "reliability.png").stat().st_size > 5000
    rows = read_tsv(run / "bad_cases.tsv")
    assert rows[0] == ["text", "gold", "predicted", "confidence", "split"]
    conf = [float(r[3]) for r in rows[1:]]
    assert conf == sorted(conf, reverse=True)
    assert all(r[1] != r[2] and r[4] == "test" for r in rows[1:])
    assert len(rows) - 1 == round((1 - m["accuracy"]) * m["n"])  # every test mistake, nothing else


def test_predictor_applies_temperature(run):
    p = Predictor.from_run(run)
    t = p.temperature
    z = p.logits(TEXTS).astype(np.float64)
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    want = e / e.sum(1, keepdims=True)
    got = p.predict(TEXTS, top_k=3)
    for w, g in zip(want, got):
        assert g["label"] == p.labels[int(w.argmax())] and g["score"] == pytest.approx(w.max(), abs=1e-6)
        assert [x[1] for x in g["top_k"]] == pytest.approx(sorted(w, reverse=True), abs=1e-6)
        assert "uncertain" not in g


def test_abstention(run, tmp_path, capsys):
    p = Predictor.from_run(run)
    scores = sorted(r["score"] for r in p.predict(TEXTS))
    cut = (scores[3] + scores[4]) / 2  # half the texts fall below
    got = Predictor.from_run(run, abstain_below=cut).predict(TEXTS, top_k=2)
    assert sum(r["uncertain"] for r in got) == 4
    for r in got:
        assert r["uncertain"] == (r["score"] < cut) and len(r["top_k"]) == 2
        assert (r["label"] is None) == r["uncertain"]
        assert r["label"] is None or r["label"] == r["top_k"][0][0]
    # a per-call value overrides the Predictor's own
    assert all(r["uncertain"] for r in p.predict(TEXTS, abstain_below=1.0))
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS), encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--abstain-below", str(cut), "--top-k", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["uncertain"] for x in lines] == [r["uncertain"] for r in got]
    assert all(x["label"] is None for x in lines if x["uncertain"]) and all(len(x["top_k"]) == 2 for x in lines)
    with pytest.raises(ConfigError, match="abstain-below"):
        Predictor.from_run(run, abstain_below=1.5)
    with pytest.raises(ConfigError, match="multi-label"):
        Predictor.from_run(run, min_k=1)
    assert cli_main(["predict", "--run", str(run), str(inp), "--threshold", "0.3"]) == 2
    assert "multi-label" in capsys.readouterr().err
    from tricklab.inference.serve import load_predictor

    served, _ = load_predictor(str(run), None, abstain_below=cut)
    assert [r["uncertain"] for r in served.predict(TEXTS)] == [r["uncertain"] for r in got]


def test_evaluate_writes_bad_cases_and_confusions(run, capsys):
    test_file = run.parent / "thuc" / "test.txt"
    assert cli_main(["evaluate", "--run", str(run), "--data", str(test_file)]) == 0
    out = capsys.readouterr().out
    ev = json.loads((run / "eval_test.json").read_text(encoding="utf-8"))
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert ev["ece_calibrated"] == pytest.approx(m["test"]["ece_calibrated"], abs=1e-6)
    assert ev["temperature"] == m["temperature"]
    assert "precision" in out and "bad_cases_test.tsv" in out
    if ev["accuracy"] < 1:
        assert "worst confusions (gold -> predicted)" in out and "share of gold" in out
    a, b = read_tsv(run / "bad_cases_test.tsv"), read_tsv(run / "bad_cases.tsv")
    assert a[0] == b[0] and [r[:3] for r in a[1:]] == [r[:3] for r in b[1:]]
    assert [float(r[3]) for r in a[1:]] == pytest.approx([float(r[3]) for r in b[1:]], abs=2e-4)
    assert all(r[4] == "test.txt" for r in a[1:])


def test_bundle_carries_temperature(run, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the serve extra")
    pytest.importorskip("onnx", reason="ONNX export needs the serve extra")
    from tricklab.inference.export import export_bundle

    info = export_bundle(run, tmp_path / "b", log=None)
    meta = json.loads((run / "model" / "tricklab.json").read_text(encoding="utf-8"))
    assert info["temperature"] == meta["temperature"] and info["thresholds"] is None
    bundled = json.loads((tmp_path / "b" / "tricklab.json").read_text(encoding="utf-8"))
    assert bundled["temperature"] == meta["temperature"]
    onx, ref = Predictor.from_bundle(tmp_path / "b", abstain_below=0.5), Predictor.from_run(run, abstain_below=0.5)
    assert onx.temperature == ref.temperature
    a, b = ref.predict(TEXTS, top_k=3), onx.predict(TEXTS, top_k=3)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert [x["uncertain"] for x in a] == [x["uncertain"] for x in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-4
