"""benchmarks/bench_fewshot.py's report: one row per K with both variants' mean ± std over seeds, the other's
delta and its interval, where the leader changes, and the accuracy-vs-K plot."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tricklab.ablation.leaderboard import Leaderboard, Row
from tricklab.ablation.stats import t_interval

ROOT = Path(__file__).resolve().parents[1]


def bench():
    spec = importlib.util.spec_from_file_location("bench_fewshot", ROOT / "benchmarks" / "bench_fewshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def board(base: list[float], other: list[float]) -> Leaderboard:
    deltas = [o - b for b, o in zip(base, other)]
    m, lo, hi = t_interval(deltas)
    rows = [Row("finetune", [1, 2, 3], {"accuracy": base, "macro_f1": base}),
            Row("setfit", [1, 2, 3], {"accuracy": other, "macro_f1": other}, paired=3, seed_deltas=deltas,
                delta=m, ci=(lo, hi), t_p=0.04)]
    return Leaderboard("single_label", "accuracy", ("accuracy", "macro_f1"), "finetune", "test", rows, [])


def test_the_table_gives_each_k_and_where_the_leader_changes():
    boards = {16: board([0.70, 0.72, 0.74], [0.60, 0.62, 0.61]), 8: board([0.50, 0.52, 0.54], [0.60, 0.61, 0.65])}
    text = bench().table("thuc", boards, "finetune", "setfit")
    rows = [line for line in text.splitlines() if line.startswith("| 8 ") or line.startswith("| 16 ")]
    assert rows[0].startswith("| 8 | 0.5200 ± 0.0200 | 0.6200 ± 0.0265 |"), rows   # K ascending
    assert "+0.1000 [" in rows[0] and "| 0.040 | 3 |" in rows[0]
    assert rows[1].startswith("| 16 | 0.7200 ± 0.0200 | 0.6100 ± 0.0100 |") and "-0.1100 [" in rows[1]
    assert "Curves cross between K=8 and K=16 (setfit -> finetune)." in text


def test_no_crossing_names_the_leader():
    boards = {8: board([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]), 16: board([0.7, 0.7, 0.8], [0.6, 0.6, 0.7])}
    assert "No crossing in this range of K: finetune leads at every K." in bench().table("x", boards, "finetune",
                                                                                        "setfit")


def test_the_curve_plot_is_written_with_its_labels(tmp_path):
    pytest.importorskip("matplotlib")
    from tricklab.evaluation.plots import png_labels

    boards = {8: board([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]), 16: board([0.7, 0.7, 0.8], [0.6, 0.6, 0.7])}
    path = tmp_path / "fewshot.png"
    assert bench().curves_png({"新闻": boards, "csc": boards}, "finetune", "setfit", path)
    assert png_labels(path) == ["新闻", "csc", "finetune", "setfit"]
    assert path.stat().st_size > 5000
