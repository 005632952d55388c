"""compare on the console: a progress line per run while it trains (variant, seed, step/total, ETA, dev metric and
macro-F1), in process and as subprocesses; a warning above the verdicts when the baseline is barely above chance."""
from __future__ import annotations

import re

import numpy as np

from conftest import write_thucnews
from test_compare import TINY, _fake_run
from tricklab.cli import main as cli_main

LINE = re.compile(r"^  (\w+) seed(\d): step (\d+)/(\d+) \(\d+%\), [0-9:]+ elapsed(, ETA [0-9:]+)?, "
                  r"dev accuracy (\d\.\d{4}), macro-F1 (\d\.\d{4})$")


def test_compare_prints_a_progress_line_per_run(tiny_model, tmp_path, capsys, jobs="1"):
    """In process; the --jobs subprocess path is checked in test_compare.test_grid_end_to_end_resume_and_report."""
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    out = tmp_path / "grid"
    assert cli_main(["compare", "--data", str(data), "--model", str(tiny_model), "--variants", "baseline,ema",
                     "--seeds", "1", "--out", str(out), "--jobs", jobs, *TINY, "--set", "train.eval_every=1"]) == 0
    printed = capsys.readouterr().out
    lines = [LINE.match(ln) for ln in printed.splitlines()]
    seen = {(m.group(1), int(m.group(3))): m for m in lines if m}
    for variant in ("baseline", "ema"):
        steps = sorted(s for v, s in seen if v == variant)
        assert steps == [1, 2, 3], (variant, printed[-2000:])    # 48 rows / batch 16: one line per evaluation
        assert all(seen[(variant, s)].group(4) == "3" for s in steps)
        assert seen[(variant, 2)].group(5)                          # an ETA once a step has been timed
    import json

    for variant in ("baseline", "ema"):   # the numbers shown are the run's own dev metrics
        log = [json.loads(x) for x in (out / variant / "seed1" / "log.jsonl").read_text().splitlines()]
        last = [r for r in log if "dev/accuracy" in r][-1]
        assert seen[(variant, 3)].group(6) == f"{last['dev/accuracy']:.4f}"
        assert seen[(variant, 3)].group(7) == f"{last['dev/macro_f1']:.4f}"
    assert "(trained in" in printed and "macro-F1" in printed.split("[1/2]")[1].splitlines()[0]


def grid(tmp_path, p_base: float):
    N, rng = 300, np.random.default_rng(0)
    gold = np.arange(N) % 3
    root = tmp_path / "grid"
    for seed in (1, 2, 3):
        base = rng.random(N) < p_base
        _fake_run(root / "baseline" / f"seed{seed}", seed, base, gold, 10.0)
        _fake_run(root / "rdrop" / f"seed{seed}", seed, base | (rng.random(N) < 0.1), gold, 10.0)
    return root


def test_a_baseline_near_chance_is_flagged_above_the_verdicts(tmp_path, capsys):
    root = grid(tmp_path, 0.1)            # 3 classes: predictions that are right 10% of the time (+ a few by luck)
    assert cli_main(["report", "--runs", str(root)]) == 0
    printed = capsys.readouterr().out
    md = (root / "leaderboard.md").read_text(encoding="utf-8")
    for text in (printed, md):
        warn = text.index("WARNING: the baseline is barely above chance")
        assert warn < text.index("| rdrop |")
        assert "macro-F1 0." in text[warn:warn + 300] and "chance 0.33" in text[warn:warn + 300]


def test_a_trained_baseline_gets_no_warning(tmp_path, capsys):
    root = grid(tmp_path, 0.85)
    assert cli_main(["report", "--runs", str(root)]) == 0
    assert "barely above chance" not in capsys.readouterr().out
    assert "barely above chance" not in (root / "leaderboard.md").read_text(encoding="utf-8")


def test_chance_levels():
    from tricklab.ablation.leaderboard import chance_warning

    def m(acc, f1, supports):
        return {"accuracy": acc, "macro_f1": f1, "per_class": {str(i): {"support": s} for i, s in enumerate(supports)}}

    assert chance_warning("single_label", [m(0.5, 0.55, [50, 50])])             # 2 classes: 0.5 + 0.25 x 0.5 = 0.625
    assert not chance_warning("single_label", [m(0.8, 0.80, [50, 50])])
    assert chance_warning("single_label", [m(0.90, 0.80, [90, 5, 5])])          # accuracy of always-majority
    assert "majority" in chance_warning("single_label", [m(0.90, 0.80, [90, 5, 5])])
    assert chance_warning("regression", [{"pearson": 0.05}]) and not chance_warning("regression", [{"pearson": 0.6}])
