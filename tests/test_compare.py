"""tricklab compare / report: the statistics against scipy and known values, the verdicts, variant
presets and merging, validation before training, and tiny grids end to end (train in process and as
subprocesses, a failed run, resume of a stopped grid, `report` rebuilding the same leaderboard)."""
from __future__ import annotations

import csv
import importlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import write_thucnews
from tricklab.cli import main as cli_main
from tricklab.ablation.compare import PRESETS, compare, merge, parse_seeds, parse_variants
from tricklab.errors import ConfigError
from tricklab.ablation.stats import mcnemar_exact, paired_bootstrap, paired_t_test, t_interval, verdict

TINY = ["--set", "train.batch_size=16", "--set", "train.lr=2e-3", "--set", "train.precision=fp32", "--set",
        "data.max_length=24", "--set", "train.warmup_ratio=0", "--set", "train.log_every=1", "--epochs", "1"]


# ---------------------------------------------------------------- statistics


def test_t_interval_known_values_and_scipy():
    m, lo, hi = t_interval([1, 2, 3, 4, 5])  # sd 1.5811, t(0.975, 4) = 2.7764: half width 1.96324
    assert m == 3 and lo == pytest.approx(1.0367568, abs=1e-6) and hi == pytest.approx(4.9632432, abs=1e-6)
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.01, 6)
    b = a + rng.normal(0.004, 0.003, 6)
    ci = stats.ttest_rel(b, a).confidence_interval(0.95)
    m, lo, hi = t_interval(b - a)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-10) and m == pytest.approx(np.mean(b - a))
    m, lo, hi = t_interval([0.02])
    assert m == 0.02 and math.isnan(lo) and math.isnan(hi)


def test_paired_t_test_against_scipy():
    assert paired_t_test([0] * 5, [1, 2, 3, 4, 5]) == pytest.approx(0.0132356, abs=1e-6)  # t = 4.2426, df 4
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=8), rng.normal(size=8)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert math.isnan(paired_t_test([0.8], [0.9]))            # one seed: nothing to test
    assert math.isnan(paired_t_test([0.8, 0.7], [0.8, 0.7]))  # identical runs
    assert paired_t_test([0.5, 0.25, 0.75], [0.625, 0.375, 0.875]) == 0.0    # the same gain every seed: no spread


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (10, 2), (7, 7), (3, 40), (120, 95)])
def test_mcnemar_exact_matches_binomial_test(b, c):
    # b examples only the baseline got right, c only the variant, plus concordant ones
    ca = np.array([True] * b + [False] * c + [True] * 30 + [False] * 11)
    cb = np.array([False] * b + [True] * c + [True] * 30 + [False] * 11)
    res = mcnemar_exact(ca, cb)
    assert (res.b, res.c) == (b, c)
    expected = 1.0 if b + c == 0 else stats.binomtest(c, b + c, 0.5).pvalue
    assert res.p == pytest.approx(expected, rel=1e-9)
    if (b, c) == (10, 2):
        assert res.p == pytest.approx(158 / 4096)  # 2 * (1 + 12 + 66) / 2^12


def test_paired_bootstrap_known_answers():
    ones = paired_bootstrap(np.ones(50))  # the variant right wherever the baseline was wrong: no doubt
    assert (ones.delta, ones.low, ones.high, ones.p) == (1.0, 1.0, 1.0, 0.0)
    zeros = paired_bootstrap(np.zeros(50))
    assert (zeros.delta, zeros.low, zeros.high, zeros.p) == (0.0, 0.0, 0.0, 1.0)
    # 100 examples gained, 50 lost, 850 unchanged: delta 0.05, bootstrap sd = sqrt(var(d) / N)
    d = np.array([1.0] * 100 + [-1.0] * 50 + [0.0] * 850)
    res = paired_bootstrap(d, n_resamples=10_000, seed=0)
    sd = math.sqrt(d.var() / d.size)  # 0.012145
    assert res.delta == pytest.approx(0.05)
    assert res.low == pytest.approx(0.05 - 1.96 * sd, abs=0.0015) and res.high == pytest.approx(0.05 + 1.96 * sd, abs=0.0015)
    assert res.p < 0.001 and res.n == 1000
    assert paired_bootstrap(d, seed=0) == res  # fixed seed: reproducible
    # the multinomial shortcut has the distribution of resampling indices
    rng = np.random.default_rng(5)
    naive = d[rng.integers(0, d.size, size=(4000, d.size))].mean(1)
    assert np.quantile(naive, [0.025, 0.975]) == pytest.approx([res.low, res.high], abs=0.0015)
    # per-example differences that are not just -1/0/1 (means over seeds)
    d2 = np.random.default_rng(2).choice([-1, -0.5, 0, 0.5, 1], size=400, p=[0.1, 0.1, 0.5, 0.15, 0.15])
    r2 = paired_bootstrap(d2)
    sd2 = math.sqrt(d2.var() / d2.size)
    assert r2.low == pytest.approx(d2.mean() - 1.96 * sd2, abs=0.006)


def test_verdict_logic():
    assert verdict(5, 0.01, 0.03, 0.004) == "helps"
    assert verdict(5, -0.03, -0.01, 0.004) == "hurts"
    assert verdict(5, -0.01, 0.03, 0.3) == "no detectable effect"
    assert verdict(5, 0.001, 0.03, 0.08) == "no detectable effect"          # never against the t-test
    assert verdict(5, math.nan, math.nan, math.nan) == "no detectable effect"
    assert verdict(2, 0.01, 0.03, 0.01).startswith("needs more seeds")
    assert verdict(1, math.nan, math.nan, math.nan).startswith("needs more seeds")
    assert verdict(4, -0.03, -0.01, 0.01, higher_is_better=False) == "helps"  # e.g. mse going down


# ---------------------------------------------------------------- variants


def test_presets_use_real_parameter_names():
    import tricklab.losses  # noqa: F401  (registration)
    import tricklab.tricks  # noqa: F401
    from tricklab.config import Config, from_dict
    from tricklab.registry import LOSSES, TRICKS

    assert {"baseline", "rdrop", "supcon", "fgm", "pgd", "ema", "llrd", "focal", "dice", "ls", "balanced", "mse",
            "mse_corr"} <= set(PRESETS)
    for name, partial in PRESETS.items():
        from_dict(Config, merge(Config().to_dict(), partial))
        for t in partial.get("tricks", []):
            TRICKS.build(t["name"], **{k: v for k, v in t.items() if k != "name"})
        for item in [partial["loss"]] if "loss" in partial else partial.get("aux_losses", []):
            LOSSES.build(item["name"], **{k: v for k, v in item.items() if k not in ("name", "weight")})


def test_parse_variants_combines_and_suggests():
    vs = parse_variants("rdrop, fgm+ema,ls+balanced")
    assert [v.name for v in vs] == ["baseline", "rdrop", "fgm+ema", "ls+balanced"]  # the baseline comes first
    assert vs[2].partial == {"tricks": [{"name": "fgm", "epsilon": 1.0}, {"name": "ema", "decay": 0.999}]}
    assert vs[3].partial == {"loss": {"name": "ce", "label_smoothing": 0.1, "class_weights": "balanced"}}
    with pytest.raises(ConfigError, match=r"unknown variant 'rdorp'; did you mean 'rdrop'\? \(presets: baseline, rdrop"):
        parse_variants("baseline,rdorp")
    with pytest.raises(ConfigError, match=r"unknown variant 'emma'; did you mean 'ema'"):
        parse_variants("fgm+emma")
    with pytest.raises(ConfigError, match=r"'focal\+balanced'.*two different main losses \('focal' and 'ce'\)"):
        parse_variants("focal+balanced")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_variants("rdrop,rdrop")
    with pytest.raises(ConfigError, match="--variants: none given"):
        parse_variants(None)
    assert parse_seeds(3) == [1, 2, 3] and parse_seeds("7,11") == [7, 11]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("two")


def test_merge_onto_base():
    base = {"train": {"lr": 1e-4, "epochs": 3}, "loss": "focal", "tricks": [{"name": "ema", "decay": 0.99}]}
    m = merge(base, {"train": {"lr": 3e-5}, "tricks": [{"name": "ema", "decay": 0.999}, {"name": "fgm"}],
                     "loss": {"name": "ce", "label_smoothing": 0.1}})
    assert m["train"] == {"lr": 3e-5, "epochs": 3}
    assert m["tricks"] == [{"name": "ema", "decay": 0.999}, {"name": "fgm"}]  # combined by name
    assert m["loss"] == {"name": "ce", "label_smoothing": 0.1}                # another loss replaces the base's
    assert base["tricks"] == [{"name": "ema", "decay": 0.99}]                  # the base is not modified
    assert merge({"loss": {"name": "focal", "gamma": 2}}, {"loss": {"name": "focal", "alpha": "balanced"}})["loss"] == \
        {"name": "focal", "gamma": 2, "alpha": "balanced"}


def test_every_variant_is_validated_before_training(tiny_model, tmp_path, monkeypatch):
    from tricklab.config import load_config
    setup = importlib.import_module("tricklab.training.setup")      # (tricklab.training.setup is also a function)
    reads = []
    real = setup.declared_position_limit
    monkeypatch.setattr(setup, "declared_position_limit", lambda name: reads.append(name) or real(name))

    data = write_thucnews(tmp_path / "d", n_train=30, n_dev=9)
    vf = tmp_path / "variants.yaml"
    vf.write_text(yaml.safe_dump({"typo": {"trian": {"lr": 1e-4}}, "badtrick": {"tricks": [{"name": "fmg"}]},
                                  "regloss": {"loss": {"name": "mse"}}, "ok": {"data": {"max_length": 16}},
                                  "long": {"data": {"max_length": 65}}}))
    out = tmp_path / "grid"
    with pytest.raises(ConfigError) as e:
        compare(load_config(None, [f"model.name={tiny_model}", "data.max_length=24"]), data, variants_file=vf, seeds=2,
                out=out)
    msg = str(e.value)
    assert "variant 'typo': unknown config key 'trian'; did you mean 'train'?" in msg
    assert "variant 'badtrick': unknown trick 'fmg'; did you mean 'fgm'?" in msg
    assert "variant 'regloss': loss 'mse' is for regression tasks, not single_label" in msg
    assert "variant 'long': data.max_length=65: " in msg and "reads at most 64 tokens" in msg   # no weights read
    assert reads == [str(tiny_model)]              # the model's position limit is read once for the whole grid
    assert "'ok'" not in msg and not out.exists()  # nothing trained, no folder made
    with pytest.raises(ConfigError, match=r"--metric 'acuracy' is not a single_label metric; did you mean 'accuracy'"):
        compare(load_config(None, [f"model.name={tiny_model}", "data.max_length=24"]), data, variants="rdrop",
                metric="acuracy", out=out)
    assert not out.exists()


# ---------------------------------------------------------------- report from constructed runs


def _fake_run(folder: Path, seed: int, correct: np.ndarray, gold: np.ndarray, seconds: float) -> None:
    from tricklab.evaluation.metrics import compute_metrics
    from tricklab.evaluation.predictions import save_predictions

    names = ["sports", "finance", "game"]
    pred = np.where(correct, gold, (gold + 1) % 3)
    logits = np.eye(3, dtype=np.float32)[pred] * 3                        # (N, 3): argmax = pred
    m = compute_metrics("single_label", logits, gold, names)
    m |= {"evaluated_on": "test", "train_seconds": seconds, "steps": 10}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m))
    (folder / "config.yaml").write_text(yaml.safe_dump({"task": "single_label", "train": {"seed": seed}}))
    save_predictions(folder / "predictions.npz", "single_label", 3, {"test": (logits, gold.tolist())})


def test_report_verdicts_on_constructed_runs(tmp_path, capsys):
    N = 200
    gold = np.arange(N) % 3
    rng = np.random.default_rng(0)
    gains = {"good": [10, 12, 9, 11, 10], "flat": [4, -6, 2, -2, 0], "few": [10, 12]}  # examples fixed per seed
    root = tmp_path / "grid"
    for seed in range(1, 6):
        base = rng.random(N) < 0.7
        _fake_run(root / "baseline" / f"seed{seed}", seed, base, gold, 10.0)
        for name, g in gains.items():
            if seed > len(g):
                continue
            var = base.copy()
            k = g[seed - 1]
            idx = np.flatnonzero(~base if k > 0 else base)[: abs(k)]
            var[idx] = k > 0
            if name == "flat":  # also swap some examples both ways: discordant pairs that cancel
                var[np.flatnonzero(base & var)[:5]] = False
                var[np.flatnonzero(~base & ~var)[:5]] = True
            _fake_run(root / name / f"seed{seed}", seed, var, gold, 20.0 if name == "good" else 10.0)
    assert cli_main(["report", "--runs", str(root)]) == 0
    printed = capsys.readouterr().out
    rows = {r["variant"]: r for r in csv.DictReader(open(root / "leaderboard.csv", encoding="utf-8"))}
    assert rows["good"]["verdict"] == "helps" and rows["flat"]["verdict"] == "no detectable effect"
    assert rows["few"]["verdict"].startswith("needs more seeds") and rows["baseline"]["verdict"] == "baseline"
    deltas = np.array(gains["good"]) / N
    ci = stats.ttest_1samp(deltas, 0).confidence_interval(0.95)
    assert float(rows["good"]["delta"]) == pytest.approx(deltas.mean())
    assert (float(rows["good"]["ci_low"]), float(rows["good"]["ci_high"])) == pytest.approx((ci.low, ci.high))
    assert float(rows["good"]["t_test_p"]) == pytest.approx(stats.ttest_1samp(deltas, 0).pvalue)
    assert rows["good"]["mcnemar_variant_better"] == "52" and rows["good"]["mcnemar_baseline_better"] == "0"
    assert float(rows["good"]["mcnemar_p"]) == pytest.approx(stats.binomtest(52, 52, 0.5).pvalue)
    assert float(rows["good"]["boot_delta"]) == pytest.approx(52 / 5 / N) and float(rows["good"]["boot_low"]) > 0
    assert float(rows["good"]["cost_ratio"]) == pytest.approx(2.0) and float(rows["flat"]["cost_ratio"]) == pytest.approx(1.0)
    assert int(rows["flat"]["mcnemar_variant_better"]) >= 5 and float(rows["flat"]["ci_low"]) < 0 < float(rows["flat"]["ci_high"])
    assert rows["good"]["gained"] and not rows["good"]["lost"]  # it only ever turns errors into right answers
    md = (root / "leaderboard.md").read_text(encoding="utf-8")
    assert "| good | 5 |" in md and "helps" in md and "## How to read this" in md
    assert "| good | 5 |" in printed and (root / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # another verdict metric, and a baseline that is not there
    assert cli_main(["report", "--runs", str(root / "baseline"), str(root / "flat"), "--out", str(tmp_path / "r2"),
                     "--metric", "macro_f1"]) == 0
    assert "Δ macro_f1" in (tmp_path / "r2" / "leaderboard.md").read_text(encoding="utf-8")
    assert cli_main(["report", "--runs", str(root), "--baseline", "basline"]) == 2
    assert "did you mean 'baseline'?" in capsys.readouterr().err


def test_report_regression_and_multi_label_gold(tmp_path, capsys):
    from tricklab.evaluation.predictions import gold_array

    assert gold_array("multi_label", [[0, 2], [], [1]], 3).tolist() == [[True, False, True], [False] * 3,
                                                                       [False, True, False]]
    assert gold_array("regression", [0.5, 4], 1).dtype == np.float64
    pear = {"baseline": [0.80, 0.82, 0.81], "mse_corr": [0.84, 0.85, 0.86]}
    for name, vals in pear.items():
        for seed, v in enumerate(vals, 1):
            run = tmp_path / "g" / name / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(yaml.safe_dump({"task": "regression", "train": {"seed": seed}}))
            (run / "metrics.json").write_text(json.dumps({"pearson": v, "spearman": v - 0.01, "mse": 1 - v,
                                                          "evaluated_on": "dev", "train_seconds": 5.0, "steps": 10}))
    assert cli_main(["report", "--runs", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    row = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "g" / "leaderboard.csv", encoding="utf-8"))}["mse_corr"]
    assert row["verdict"] == "helps" and float(row["delta"]) == pytest.approx(0.04)
    assert row["pearson_mean"] and row["spearman_mean"] and row["mcnemar_p"] == ""  # no example tests here
    md = (tmp_path / "g" / "leaderboard.md").read_text(encoding="utf-8")
    assert "McNemar" not in md.split("## How")[0] and "no test split: the numbers are on dev" in md
    assert cli_main(["report", "--runs", str(tmp_path / "g"), "--metric", "mse"]) == 0  # lower is better
    row = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "g" / "leaderboard.csv", encoding="utf-8"))}["mse_corr"]
    assert row["verdict"] == "helps" and float(row["delta"]) == pytest.approx(-0.04)


# ---------------------------------------------------------------- tiny grids, really trained


def test_grid_end_to_end_resume_and_report(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=24)
    out = tmp_path / "grid"
    args = ["compare", "--data", str(data), "--model", str(tiny_model), "--variants", "baseline,rdrop", "--seeds", "2",
            "--out", str(out), *TINY]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "2 variants x 2 seeds = 4 runs (single_label)" in printed and "[4/4]" in printed
    notes = [ln for ln in printed.splitlines() if ln.startswith("note: ")]   # the data's notes, once, on the console
    assert notes and notes[0].startswith("note: columns of ") and len(notes) == len(set(notes))
    assert any(n.startswith("note: classes: 3 from ") for n in notes)
    for v in ("baseline", "rdrop"):
        for s in (1, 2):
            run = out / v / f"seed{s}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["train"]["seed"] == s and cfg["train"]["epochs"] == 1
            assert [t["name"] for t in cfg["tricks"]] == (["rdrop"] if v == "rdrop" else [])
            m = json.loads((run / "metrics.json").read_text())
            assert f"{v} seed{s}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (trained in" in printed
            with np.load(run / "predictions.npz") as z:  # what the paired tests read
                assert set(z.files) == {"dev_gold", "dev_logits", "test_gold", "test_logits"}
                assert z["test_logits"].dtype == np.float32 and z["test_logits"].shape == (24, 3)
                assert (z["test_logits"].argmax(1) == z["test_gold"]).mean() == pytest.approx(m["accuracy"])
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| rdrop | 2 |" in md and "needs more seeds (2 paired" in md and "McNemar p" in md
    assert len(list(csv.DictReader(open(out / "leaderboard.csv", encoding="utf-8")))) == 2
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "compare.json").read_text())["variants"]["rdrop"] == PRESETS["rdrop"]

    # a stopped grid: one run lost its metrics (killed while finishing: resumed from its checkpoint),
    # one was killed before its first checkpoint (restarted); the others are kept as they are
    acc = json.loads((out / "rdrop" / "seed2" / "metrics.json").read_text())["accuracy"]
    (out / "rdrop" / "seed2" / "metrics.json").unlink()
    shutil.rmtree(out / "baseline" / "seed2")
    (out / "baseline" / "seed2").mkdir()
    (out / "baseline" / "seed2" / "log.jsonl").write_text('{"step": 1, "loss": 1.1}\n')
    kept = {p: p.stat().st_mtime_ns for p in (out / "baseline" / "seed1" / "metrics.json",
                                             out / "rdrop" / "seed1" / "metrics.json")}
    assert cli_main([*args, "--jobs", "2"]) == 0  # this time as two `tricklab train` subprocesses at once
    printed = capsys.readouterr().out
    assert "2 done, 1 to resume, 1 to train; jobs 2" in printed
    assert "-m tricklab.cli train" in (out / "baseline" / "seed2" / "train.log").read_text()
    cmds = [ln for ln in (out / "rdrop" / "seed2" / "train.log").read_text().splitlines() if ln.startswith("$ ")]
    assert len(cmds) == 1 and cmds[0].endswith("--resume")  # continued, with its saved config
    assert "baseline seed1: accuracy" in printed and "(done before, skipped)" in printed
    assert "rdrop seed2: accuracy" in printed and "(resumed in" in printed and "(restarted in" in printed
    # the restarted run's progress, read from its log.jsonl while its subprocess trained (ablation/progress.py)
    recs = [json.loads(x) for x in (out / "baseline" / "seed2" / "log.jsonl").read_text().splitlines()]
    dev = [r for r in recs if "dev/accuracy" in r][-1]     # the last dev evaluation (the final record follows it)
    assert "final/test/accuracy" in recs[-1]
    assert "  baseline seed2: step 3/3 (100%)" in printed and f"dev accuracy {dev['dev/accuracy']:.4f}" in printed
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert json.loads((out / "rdrop" / "seed2" / "metrics.json").read_text())["accuracy"] == acc
    log = [json.loads(x) for x in (out / "baseline" / "seed2" / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and "lr" in log[0]  # a clean log, not the leftover line

    # `report` rebuilds the same leaderboard from the folders
    assert cli_main(["report", "--runs", str(out), "--out", str(tmp_path / "rep")]) == 0
    for f in ("leaderboard.md", "leaderboard.csv"):
        assert (tmp_path / "rep" / f).read_text(encoding="utf-8") == (out / f).read_text(encoding="utf-8"), f

    # the same grid asked with other settings refuses to mix old runs in
    assert cli_main([*args, "--set", "train.lr=1e-3"]) == 2
    assert "kept from an earlier run with another config (train.lr: 0.002 -> 0.001)" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_predictions_npz_gold_by_task(tiny_model, tmp_path, task):
    import random

    from conftest import make_text, tiny_cfg
    from tricklab.training import train

    rng = random.Random(0)
    if task == "multi_label":
        labs = [["sports"], ["finance"], ["sports", "game"]]
        rows = [f"{''.join(make_text(rng, x) for x in labs[i % 3])}\t{'|'.join(labs[i % 3])}" for i in range(30)]
    else:
        rows = [f"{make_text(rng, 'sports')}\t{make_text(rng, 'game')}\t{i % 5}.5" for i in range(30)]
    (tmp_path / "train.tsv").write_text("\n".join(rows), encoding="utf-8")
    sets = ["train.epochs=1"] + (["task=regression"] if task == "regression" else [])
    train(tiny_cfg(tiny_model, *sets), tmp_path / "train.tsv", out=tmp_path / "run", progress=False)
    with np.load(tmp_path / "run" / "predictions.npz") as z:
        gold, logits = z["dev_gold"], z["dev_logits"]
    assert logits.dtype == np.float32 and len(gold) == len(logits) == 3  # 10% of 30 held out
    if task == "multi_label":
        assert gold.dtype == bool and gold.shape == logits.shape == (3, 3) and gold.any(1).all()
    else:
        assert gold.dtype == np.float64 and gold.shape == (3,) and logits.shape == (3, 1)
        assert set(np.round(gold % 1, 2)) == {0.5}


def test_a_failed_run_does_not_stop_the_grid(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=32, n_dev=12)
    vf = tmp_path / "variants.yaml"
    vf.write_text(yaml.safe_dump({"broken": {"model": {"name": str(tmp_path / "no_such_model")}}}))
    out = tmp_path / "grid"
    rc = cli_main(["compare", "--data", str(data), "--model", str(tiny_model), "--variants-file", str(vf), "--seeds", "1",
                   "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "broken seed1: FAILED after" in printed and "no_such_model not found" in printed  # the log tail
    assert "1 of 2 runs failed: broken seed1" in printed
    assert (out / "baseline" / "seed1" / "metrics.json").is_file() and (out / "leaderboard.md").is_file()
    assert "| broken |" not in (out / "leaderboard.md").read_text()  # the failed variant has no row
