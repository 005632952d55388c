"""Flags and messages a user reaches for: did-you-mean for loss and trick parameters, console tables aligned with
Chinese (double-width) text, `evaluate --bundle` and `evaluate --out`."""
from __future__ import annotations

import json
import unicodedata

import pytest

from conftest import tiny_cfg
from tricklab.cli import main as cli_main
from tricklab.errors import ConfigError


def test_loss_and_trick_parameter_typos_get_a_did_you_mean():
    import tricklab.losses  # noqa: F401  (registration)
    import tricklab.tricks  # noqa: F401
    from tricklab.registry import LOSSES, TRICKS

    with pytest.raises(ConfigError) as e:
        LOSSES.build("focal", gama=2)
    assert str(e.value) == ("loss 'focal': unknown parameter 'gama'; did you mean 'gamma'? "
                            "(parameters: gamma, alpha, sigmoid)")
    with pytest.raises(ConfigError, match="trick 'rdrop': unknown parameter 'alhpa'; did you mean 'alpha'?"):
        TRICKS.build("rdrop", alhpa=4)
    with pytest.raises(ConfigError, match=r"unknown parameter 'zzz' \(parameters: "):
        TRICKS.build("ema", zzz=1)


def test_cli_parameter_typo_exits_2_before_training(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("好\t0\n坏\t1\n" * 10, encoding="utf-8")
    assert cli_main(["train", "--data", str(tmp_path), "--model", "/nonexistent", "--loss", "focal:gama=2",
                     "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'gamma'" in err and "Traceback" not in err


def display_col(line: str, upto: int) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line[:upto])


def test_console_tables_align_with_chinese_text():
    from tricklab.evaluation.reports import per_class_table

    names = ["体育", "finance", "房产新闻频道", "游戏"]
    m = {"per_class": {n: {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 10 + i} for i, n in enumerate(names)},
         "confusion_matrix": [[5, 3, 1, 1], [0, 11, 0, 0], [6, 0, 6, 0], [0, 0, 4, 9]]}
    lines = per_class_table(m).splitlines()
    table, conf = lines[:5], lines[5:]
    cols = {display_col(ln, ln.index("0.5000")) for ln in table[1:]}
    assert cols == {display_col(table[0], table[0].index("precision"))}, table
    assert conf[0].startswith("worst confusions")
    ends = set()
    for ln in conf[1:]:
        label, count, _ = ln.rsplit(None, 2)
        ends.add(display_col(ln, ln.index(count, len(label)) + len(count)))
    assert len(conf) > 2 and len(ends) == 1, conf                    # the right-aligned counts end at one place
    # a class neither in the gold labels nor predicted has no precision, recall or F1 to show: '-', not zeros
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    m = {"per_class": {"a": {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}, "b": zero, "c": zero},
         "confusion_matrix": [[2, 0, 1], [0, 0, 0], [0, 0, 0]]}                     # rows gold, columns predicted
    rows = {ln.split()[0]: ln for ln in per_class_table(m).splitlines()[1:4]}
    assert rows["b"].split()[1:4] == ["-", "-", "-"] and "neither in the gold labels nor predicted" in rows["b"]
    assert rows["c"].split()[1:5] == ["0.0000", "0.0000", "0.0000", "0"]     # predicted once, wrongly: a real 0
    del m["confusion_matrix"]                              # multi-label: no matrix tells what was predicted
    assert "-" not in per_class_table(m).split()


@pytest.fixture
def trained(tiny_model, thuc_dir, tmp_path):
    from tricklab.training import train

    run = tmp_path / "run"
    m = train(tiny_cfg(tiny_model, "train.epochs=1"), thuc_dir, out=run, progress=False)
    return run, m


def test_evaluate_out_folder_and_bundle(trained, thuc_dir, tmp_path, capsys):
    run, m = trained
    before = sorted(p.name for p in run.iterdir())
    assert cli_main(["evaluate", "--run", str(run), "--data", str(thuc_dir / "test.txt"), "--out", str(tmp_path / "ev")]) == 0
    assert sorted(p.name for p in run.iterdir()) == before                    # nothing written in the run folder
    ev = json.loads((tmp_path / "ev" / "eval_test.json").read_text())
    assert ev["accuracy"] == pytest.approx(m["accuracy"])
    assert (tmp_path / "ev" / "bad_cases_test.tsv").is_file() and (tmp_path / "ev" / "confusion_matrix_test.png").is_file()
    pytest.importorskip("onnxruntime")
    from tricklab.inference.export import export_bundle

    export_bundle(run, tmp_path / "bundle", log=None)
    assert cli_main(["evaluate", "--bundle", str(tmp_path / "bundle"), "--data", str(thuc_dir / "test.txt"),
                     "--out", str(tmp_path / "evb")]) == 0
    evb = json.loads((tmp_path / "evb" / "eval_test.json").read_text())
    assert evb["accuracy"] == pytest.approx(m["accuracy"], abs=1 / 30)       # onnxruntime vs torch: <= 1 of 30 flips
    assert evb["n"] == 30 and "accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--data", str(thuc_dir / "test.txt")])       # --run or --bundle is needed


def test_ctrl_c_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import tricklab.cli as cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", stop)
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted") and f"tricklab train --out {tmp_path / 'r'} --resume" in err


def test_evaluate_names_the_models_classes_when_a_file_gives_names_for_ids(trained, tmp_path, capsys):
    """A model trained on ids (THUCNews: ids into class.txt) evaluated on a file that writes the class names: the
    error names the model's ids and classes; label_type (how a training run reads labels) is no fix here."""
    run, _ = trained
    (tmp_path / "named.txt").write_text("球赛冠军\tsports\n股市利率\tfinance\n", encoding="utf-8")
    assert cli_main(["evaluate", "--run", str(run), "--data", str(tmp_path / "named.txt")]) == 2
    err = capsys.readouterr().err
    assert "named.txt line 1: label 'sports' is not a class id of this model (ids 0..2: sports, finance, game)" in err
    assert "as ids 0..2" in err and "label_type" not in err
