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
from tricklab.evaluation.calibration import (calibration_metrics, ece, fit_temperature, nll, plot_reliability,
                                              reliability_bins, scaled_probs)
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


def ref_softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_scaled_probs_and_nll_reference(t):
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, size=(40, 4))
    y = rng.integers(0, 4, size=40)
    p = ref_softmax(z, t)
    assert scaled_probs(z, t) == pytest.approx(p, abs=1e-12)
    assert scaled_probs(z.astype(np.float32), t).dtype == np.float64
    assert nll(z, y, t) == pytest.approx(-np.mean(np.log(p[np.arange(40), y])), rel=1e-12)
    assert nll(z, list(y), t) == nll(z, y, t) and isinstance(nll(z, y, t), float)
    assert nll(np.zeros((0, 4)), [], t) == 0.0
    assert scaled_probs(z) == pytest.approx(ref_softmax(z, 1.0), abs=1e-12)   # default T = 1
    assert nll(z, y) == pytest.approx(nll(z, y, 1.0))
    z32 = z.astype(np.float32)          # computed in float64 whatever the input's dtype
    p32 = ref_softmax(z32.astype(np.float64), t)
    assert scaled_probs(z32, t) == pytest.approx(p32, rel=1e-13, abs=0)
    assert nll(z32, y, t) == pytest.approx(-np.mean(np.log(p32[np.arange(40), y])), rel=1e-13)
    assert nll(z, y.astype(np.float64), t) == nll(z, y, t)       # labels read as floats (JSON) still index


def ref_bins(probs: np.ndarray, gold: np.ndarray, bins: int):
    """Loop over examples: bin k holds confidences in (k/bins, (k+1)/bins], bin 0 also holds 0."""
    conf, acc, count = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for p, y in zip(probs, gold):
        c = p.max()
        k = next(k for k in range(bins) if c <= (k + 1) / bins) if c > 0 else 0
        conf[k] += c
        acc[k] += float(p.argmax() == y)
        count[k] += 1
    safe = np.maximum(count, 1)
    return conf / safe, acc / safe, count


@pytest.mark.parametrize("bins", [1, 4, 15])
def test_reliability_bins_and_ece_match_loop(bins):
    rng = np.random.default_rng(bins)
    z = rng.normal(0, 2, size=(200, 3))
    probs = ref_softmax(z, 1.0)
    probs[:4] = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.4, 0.6, 0.0]]   # edges k/bins exactly
    gold = rng.integers(0, 3, size=200)
    got, want = reliability_bins(probs, gold, bins), ref_bins(probs, gold, bins)
    for g, w in zip(got, want):
        assert g.shape == (bins,) and g == pytest.approx(w, abs=1e-12)
    conf, acc, count = want
    assert ece(probs, gold, bins) == pytest.approx((count / 200 * np.abs(acc - conf)).sum(), abs=1e-12)
    assert ece(probs, list(gold), bins) == ece(probs, gold, bins)
    if bins == 15:   # the default
        assert ece(probs, gold) == ece(probs, gold, 15)
        assert all(a == pytest.approx(b) for a, b in zip(reliability_bins(probs, gold), want))
    assert ece(np.zeros((0, 3)), [], bins) == 0.0
    # float32 probabilities (a model's softmax) are binned by their exact value: 0.6f is 0.60000002 > 3/5,
    # which float32 arithmetic (0.6f * 5 == 3.0f) would put in the bin below
    conf, acc, count = reliability_bins(np.array([[0.6, 0.4]], dtype=np.float32), [0], 5)
    assert count.tolist() == [0, 0, 0, 1, 0] and conf[3] == pytest.approx(0.6) and acc[3] == 1
    # confidence at or below 1/bins (as many classes as bins) falls in the first bin
    conf, acc, count = reliability_bins(np.full((2, bins), 1 / bins), [0, 1], bins)
    assert count[0] == 2 and count.sum() == 2 and conf[0] == pytest.approx(1 / bins) and acc[0] == 0.5


def test_calibration_metrics_reference():
    rng = np.random.default_rng(9)
    z = rng.normal(0, 3, size=(60, 4))
    y = rng.integers(0, 4, size=60)
    m = calibration_metrics(z, y, 1.7)
    assert set(m) == {"ece_calibrated", "loss_calibrated", "temperature"}
    p = ref_softmax(z, 1.7)
    conf, acc, count = ref_bins(p, y, 15)
    assert m["ece_calibrated"] == pytest.approx((count / 60 * np.abs(acc - conf)).sum(), abs=1e-12)
    assert m["loss_calibrated"] == pytest.approx(-np.mean(np.log(p[np.arange(60), y])), rel=1e-12)
    assert m["temperature"] == 1.7 and type(m["temperature"]) is float
    assert type(calibration_metrics(z, y, np.float32(2.0))["temperature"]) is float


def test_temperature_fit_hits_bounds_and_beats_grid():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1, size=(400, 3))
    y = z.argmax(1)                                   # always right: sharper is always better, T -> lower bound
    assert fit_temperature(z, y) == pytest.approx(0.05, rel=1e-3)
    y_rand = rng.integers(0, 3, size=400)             # labels unrelated to z: flatter is better, T -> large
    t = fit_temperature(z * 0.01 + rng.normal(0, 5, size=(400, 3)), y_rand)
    assert t > 5
    # an interior optimum: the fit is at least as good as the best T on a fine grid
    p = ref_softmax(z * 3, 1.0)
    y2 = (rng.random((400, 1)) > p.cumsum(1)).sum(1)
    t2 = fit_temperature(z * 6, y2)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    best = min(nll(z * 6, y2, g) for g in grid)
    assert 1.2 < t2 < 3.5 and nll(z * 6, y2, t2) <= best + 1e-7
    assert fit_temperature(list(map(list, z * 6)), list(y2)) == pytest.approx(t2)
    assert fit_temperature(z[:1], y[:1]) < 0.06    # one example is fitted too


def test_reliability_png_returns_false_without_matplotlib(tmp_path, monkeypatch):
    import tricklab.evaluation.plots as plots

    z = np.random.default_rng(2).normal(0, 4, size=(30, 3))
    assert plot_reliability(z, z.argmax(1), 1.5, tmp_path / "r.png") is True
    monkeypatch.setattr(plots, "available", lambda: False)
    assert plot_reliability(z, z.argmax(1), 1.5, tmp_path / "s.png", "x") is False
    assert not (tmp_path / "s.png").exists()
    monkeypatch.undo()
    import tricklab.evaluation.calibration as calibration

    seen = []
    monkeypatch.setattr(calibration, "_reliability_axes", lambda *a: seen.append(a))
    assert plot_reliability(z, z.argmax(1), 1.5, tmp_path / "t.png", "标题 ok", bins=7) is True
    assert plot_reliability(z, z.argmax(1), 2.5, tmp_path / "u.png") is True
    (a, b) = seen
    assert a[1] is z and a[3:5] == (1.5, tmp_path / "t.png")
    assert a[5].endswith("ok") and a[6] == 7 and b[5] == "" and b[6] == 15 and b[3] == 2.5


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
