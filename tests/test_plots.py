"""Figures with Chinese labels: no missing-glyph warning, the labels drawn (or numbered with a legend table when no
font has them), and the label text readable back from every PNG."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

NAMES = ["体育", "财经", "房产", "教育"]


def drawn(fn, monkeypatch) -> tuple[list, list[str]]:
    """Run a plotting call; (its figures, the missing-glyph warnings it raised)."""
    import matplotlib.pyplot as plt

    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    monkeypatch.setattr(plt, "close", close)
    for f in figs:
        close(f)
    return figs, [str(x.message) for x in w if "missing from font" in str(x.message)]


def png_text(path) -> dict:
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 100
        return dict(im.text)


def texts_of(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def plot_all(tmp_path):
    """The three figures a run and a grid write, with Chinese class / variant names and titles."""
    from tricklab.ablation.leaderboard import Leaderboard, Row, plot_ablation
    from tricklab.evaluation.calibration import plot_reliability
    from tricklab.evaluation.reports import plot_confusion

    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, (4, 4)).tolist()
    plot_confusion(cm, NAMES, tmp_path / "cm.png", "测试集 confusion matrix")
    plot_reliability(rng.normal(size=(50, 4)), rng.integers(0, 4, 50), 1.3, tmp_path / "rel.png", "评测.tsv reliability")
    rows = [Row("基线", [1, 2], {}), Row("对抗训练", [1, 2], {}, paired=2, seed_deltas=[0.01, 0.03], delta=0.02,
                                       ci=(-0.1, 0.14), verdict="needs more seeds")]
    plot_ablation(Leaderboard("single_label", "accuracy", ("accuracy",), "基线", "test", rows, []), tmp_path / "ab.png")


def test_chinese_labels_are_drawn_without_missing_glyphs(tmp_path, monkeypatch):
    figs, missing = drawn(lambda: plot_all(tmp_path), monkeypatch)
    assert missing == [], missing[:3]
    cm_fig, _, ab_fig = figs
    assert [t.get_text() for t in cm_fig.axes[0].get_xticklabels()] == NAMES          # the names, not numbers
    assert [t.get_text() for t in cm_fig.axes[0].get_yticklabels()] == NAMES
    assert [t.get_text() for t in ab_fig.axes[0].get_yticklabels()] == ["对抗训练"]
    assert "测试集" in cm_fig.axes[0].get_title()
    from tricklab.evaluation.plots import png_labels

    assert png_labels(tmp_path / "cm.png") == NAMES                                    # readable back
    assert json.loads(png_text(tmp_path / "ab.png")["Labels"]) == ["对抗训练"]
    assert png_text(tmp_path / "rel.png")["Labels"] == "[]"


def test_without_a_cjk_font_labels_are_numbered_with_a_legend(tmp_path, monkeypatch, capsys):
    from tricklab.evaluation import plots

    monkeypatch.setattr(plots, "candidates", lambda: [])                              # a machine with no CJK font
    figs, missing = drawn(lambda: plot_all(tmp_path), monkeypatch)
    assert missing == [], missing[:3]
    cm_fig, rel_fig, ab_fig = figs
    assert [t.get_text() for t in cm_fig.axes[0].get_xticklabels()] == ["1", "2", "3", "4"]
    legend = texts_of(cm_fig)
    assert "1  \\u4f53\\u80b2" in legend and "4  \\u6559\\u80b2" in legend            # 体育, 教育 as escapes
    assert [t.get_text() for t in ab_fig.axes[0].get_yticklabels()] == ["1"]
    assert "\\u6d4b\\u8bd5\\u96c6 confusion matrix" in cm_fig.axes[0].get_title()      # titles too: never a box
    assert plots.png_labels(tmp_path / "cm.png") == NAMES                             # the text itself, in the PNG
    assert "no installed font has" in capsys.readouterr().err


def test_the_chosen_font_draws_real_glyphs():
    """Two different characters give two different bitmaps (missing glyphs are all the same box)."""
    from tricklab.evaluation import plots

    if not plots.candidates():
        pytest.skip("no CJK font installed and pylopdf-fonts-zh-cn missing")

    def bitmap(ch: str) -> np.ndarray:
        with plots.pyplot([ch]) as (plt, _):
            fig = plt.figure(figsize=(1, 1), dpi=40)
            fig.text(0.1, 0.1, ch, fontsize=30)
            fig.canvas.draw()
            a = np.asarray(fig.canvas.buffer_rgba())[..., 0].copy()
            plt.close(fig)
        return a

    a, b, box = bitmap("体"), bitmap("育"), bitmap("\U0010fffd")  # a private-use character: no font has it
    assert (a != b).sum() > 20 and (a != 255).sum() > 20
    assert not np.array_equal(a, box) and not np.array_equal(b, box)


def test_font_order_env_then_installed_then_packaged(tmp_path, monkeypatch):
    from matplotlib import font_manager

    from tricklab.evaluation import plots

    pkg = plots.packaged_font()
    if pkg is None:
        pytest.skip("pylopdf-fonts-zh-cn not installed")
    fake = font_manager.FontEntry(fname=str(tmp_path / "wqy.ttc"), name="WenQuanYi Micro Hei")
    system = [f for f in font_manager.fontManager.ttflist if f.fname != str(pkg)]   # as on a fresh machine
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [*system, fake])
    monkeypatch.setenv("TRICKLAB_FONT", str(pkg))
    assert plots.candidates() == [pkg, tmp_path / "wqy.ttc"]
    monkeypatch.delenv("TRICKLAB_FONT")
    assert plots.candidates() == [tmp_path / "wqy.ttc", pkg]
    # the unreadable fake is skipped: the packaged font draws the labels
    assert "Noto Sans SC" in plots.choose_fonts(NAMES).families
    assert plots.choose_fonts(["abc"]).families == ("DejaVu Sans",)          # Latin only: no CJK font loaded
