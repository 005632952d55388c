"""A new user's first run on their own CSV: a mistyped column, the columns chosen without settings, invalid rows
(data.on_invalid), and a single file without a test split (data.test_ratio, the score's split in metrics.json)."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import tiny_cfg
from tricklab.config import load_config
from tricklab.data import load_data
from tricklab.errors import ConfigError, DataError
from tricklab.training import train


def cfg(*sets):
    return load_config(None, list(sets))


def write(p, text):
    p.write_text(text, encoding="utf-8")
    return p


def reviews(n: int = 40, extra: str = "") -> str:
    """cat,label,review: the label is learnable from the review; `cat` is a distractor."""
    lines = ["cat,label,review"]
    for i in range(n):
        pos = i % 2 == 0
        lines.append(f"{'ab'[i % 3 % 2]},{'pos' if pos else 'neg'},{'球赛冠军胜' if pos else '股市银行跌'}{i % 7}")
    return "\n".join(lines) + "\n" + extra


# 1. a mistyped column -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["auto", "true"])
def test_mistyped_column_names_the_header_and_the_closest(tmp_path, header):
    f = write(tmp_path / "r.csv", reviews(6))
    with pytest.raises(DataError) as e:
        load_data(cfg("data.text_column=reviw", f"data.header={header}"), f)
    msg = str(e.value)
    assert "r.csv line 1: data.text_column='reviw': column not found" in msg
    assert "'cat', 'label', 'review'" in msg and "did you mean 'review'?" in msg
    assert "--set data.text_column=review" in msg and "no header line" not in msg


def test_mistyped_column_in_a_header_with_spaces_and_unknown_names(tmp_path):
    f = write(tmp_path / "r.csv", "Topic,Sentiment,Review Text\na,pos,好\nb,neg,坏\n")
    with pytest.raises(DataError) as e:
        load_data(cfg("data.text_column=Review Txt", "data.label_column=Sentiment"), f)
    assert "column not found" in str(e.value) and "did you mean 'Review Text'?" in str(e.value)


def test_named_column_on_a_file_without_header(tmp_path):
    f = write(tmp_path / "r.tsv", "好的\tpos\n不好\tneg\n")
    with pytest.raises(DataError, match=r"names a column, but the file has no header line .*0-based column index"):
        load_data(cfg("data.text_column=text"), f)


# 2. the columns chosen without settings ----------------------------------------------------------------------------

def test_column_choice_is_a_note_with_the_reason(tmp_path):
    b = load_data(cfg(), write(tmp_path / "r.csv", reviews(10)))
    note = next(n for n in b.notes if n.startswith("columns of r.csv"))
    assert "text = 'review' (matched the name 'review')" in note and "label = 'label' (matched the name 'label')" in note
    assert "unused: 'cat'" in note and "--set data.text_column=review --set data.label_column=label" in note
    assert b.columns["train"]["roles"]["text"] == {"index": 2, "column": "review", "why": "matched the name 'review'"}
    b = load_data(cfg("data.label_column=0"), write(tmp_path / "p.tsv", "pos\t好的\nneg\t不好\npos\t棒\nneg\t差\n"))
    note = next(n for n in b.notes if n.startswith("columns of p.tsv"))
    assert "(no header line; first line: 'pos', '好的')" in note
    assert "text = column 1 (the only column left)" in note and "label = column 0 (data.label_column=0)" in note
    b = load_data(cfg(), write(tmp_path / "pairs.tsv", "a\tb\t0\nc\td\t1\ne\tf\t0\ng\th\t1\n"))
    assert "text_b = column 1 (by position: 3 columns are read as text, text_b, label)" in b.notes[0]


# 3. invalid rows --------------------------------------------------------------------------------------------------

BAD = {"train.tsv": "好\tpos\n\tneg\n坏\tneg\n棒\tpos\n差\tneg\n中\t有\tpos\n",
       "dev.tsv": "好\tpos\n坏\tneutral\n差\tneg\n"}


def test_on_invalid_error_says_how_to_go_on(tmp_path):
    for name, text in BAD.items():
        write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        load_data(cfg(), tmp_path)
    msg = str(e.value)
    assert "train.tsv line 2: empty text" in msg and "dev.tsv line 2: label 'neutral'" in msg
    assert "3 row(s) above are invalid" in msg and "--set data.on_invalid=skip" in msg


def test_on_invalid_skip_drops_and_records_every_row(tmp_path):
    for name, text in BAD.items():
        write(tmp_path / name, text)
    b = load_data(cfg("data.on_invalid=skip"), tmp_path)
    assert len(b.train) == 4 and len(b.dev) == 2 and b.skipped_counts() == {"train": 2, "dev": 1}
    got = [(s.split, s.source.rsplit("/", 1)[-1], s.line, s.reason.split(";")[0]) for v in b.skipped.values() for s in v]
    assert got == [("train", "train.tsv", 2, "empty text"),
                   ("train", "train.tsv", 6, "expected 2 tab-separated columns (text, label), found 3: '中\\\\t有\\\\tpos'"),
                   ("dev", "dev.tsv", 2, "label 'neutral' does not occur in train (train labels: neg, pos)")]


def test_on_invalid_skip_nan_targets_and_bad_json_lines(tmp_path):
    write(tmp_path / "train.tsv", "好\t0.5\n坏\tnan\n中\t1.5\n差\t2.5\n棒\t0.1\n")
    b = load_data(cfg("data.on_invalid=skip", "task=regression", "data.dev_ratio=0.3"), tmp_path / "train.tsv")
    assert len(b.train) + len(b.dev) == 4 and "regression target is nan" in b.skipped["train"][0].reason
    write(tmp_path / "t.jsonl", '{"text": "好", "label": "a"}\n{"text": "坏", "label": "b"\n{"text": "", "label": "a"}\n'
                                '{"text": "中", "label": "b"}\n{"text": "棒", "label": "a"}\n')
    b = load_data(cfg("data.on_invalid=skip", "data.dev_ratio=0.3"), tmp_path / "t.jsonl")
    assert [s.line for s in b.skipped["train"]] == [2, 3] and len(b.train) + len(b.dev) == 3


def test_on_invalid_skip_still_stops_on_file_problems_and_empty_splits(tmp_path):
    write(tmp_path / "train.tsv", "好\tpos\n坏\tneg\n")
    (tmp_path / "gbk.tsv").write_bytes("好\tpos\n坏的新闻\tneg\n".encode("gbk"))
    with pytest.raises(DataError, match="GBK/GB18030"):
        load_data(cfg("data.on_invalid=skip"), tmp_path / "train.tsv", dev=tmp_path / "gbk.tsv")
    write(tmp_path / "empty.tsv", "")
    with pytest.raises(DataError, match="the file is empty"):
        load_data(cfg("data.on_invalid=skip"), tmp_path / "train.tsv", dev=tmp_path / "empty.tsv")
    with pytest.raises(DataError, match="file not found"):
        load_data(cfg("data.on_invalid=skip"), tmp_path / "train.tsv", dev=tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="column not found"):
        load_data(cfg("data.on_invalid=skip", "data.text_column=txt", "data.header=true"), tmp_path / "train.tsv")
    write(tmp_path / "dev.tsv", "中\tneutral\n差\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv: no valid rows left: data.on_invalid=skip dropped them all"):
        load_data(cfg("data.on_invalid=skip"), tmp_path / "train.tsv", dev=tmp_path / "dev.tsv")
    write(tmp_path / "dev.tsv", "\tpos\n\tneg\n")
    with pytest.raises(DataError, match=r"dev.tsv: no valid rows: data.on_invalid=skip dropped all 2"):
        load_data(cfg("data.on_invalid=skip"), tmp_path / "train.tsv", dev=tmp_path / "dev.tsv")


def test_config_checks_on_invalid_and_test_ratio():
    with pytest.raises(ConfigError, match="did you mean 'skip'"):
        cfg("data.on_invalid=skp")
    with pytest.raises(ConfigError, match=r"data.test_ratio: must be in \[0, 1\)"):
        cfg("data.test_ratio=1")


# 4. a single file: test_ratio and the split the score is on ---------------------------------------------------------

def test_test_ratio_holds_out_a_stratified_seeded_test(tmp_path):
    lines = [f"文本{i}\t{'a' if i % 4 else 'b'}" for i in range(100)]
    f = write(tmp_path / "train.tsv", "\n".join(lines))
    b = load_data(cfg("data.test_ratio=0.2", "data.dev_ratio=0.1"), f)
    assert len(b.test) == 20 and b.test.labels.count(0) == 15 and len(b.dev) == 10 and len(b.train) == 70
    assert b.test_held_out and b.score_on == "test (held out of train by data.test_ratio)"
    assert not {r.line for r in b.test.rows} & {r.line for r in b.train.rows + b.dev.rows}
    again = load_data(cfg("data.test_ratio=0.2", "data.dev_ratio=0.1"), f)
    assert [r.line for r in again.test.rows] == [r.line for r in b.test.rows]
    other = load_data(cfg("data.test_ratio=0.2", "train.seed=7"), f)
    assert [r.line for r in other.test.rows] != [r.line for r in b.test.rows]
    assert any("held out 20 of 100" in n and "data.test_ratio" in n for n in b.notes)
    with pytest.raises(ConfigError, match="together they must stay below 1"):
        load_data(cfg("data.test_ratio=0.5", "data.dev_ratio=0.5"), f)
    b = load_data(cfg(), f)
    assert b.test is None and b.score_on.startswith("dev (held out of train)") and "optimistic" in b.score_on
    assert any(n.startswith("no test data") and "data.test_ratio" in n for n in b.notes)


def test_first_run_end_to_end(tiny_model, tmp_path, capsys):
    """No column settings, one bad row skipped, a held-out test: the notes, run.json, skipped_rows.tsv, metrics."""
    f = write(tmp_path / "reviews.csv", reviews(40, "a,pos,\nb,,股市\n"))
    run = tmp_path / "run"
    m = train(tiny_cfg(tiny_model, "train.max_steps=2", "data.on_invalid=skip", "data.test_ratio=0.2"), f, out=run,
              progress=False)
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "note: columns of reviews.csv: text = 'review' (matched the name 'review')" in printed and "unused: 'cat'" in printed
    assert "note: data.on_invalid=skip: 2 invalid row(s) skipped (train 2)" in printed
    assert "scores on test (held out of train by data.test_ratio)" in printed
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["skipped_rows"] == {"train": 2} and m["score_on"] == saved["score_on"]
    assert saved["evaluated_on"] == "test" and saved["test"]
    rows = list(csv.reader((run / "skipped_rows.tsv").open(encoding="utf-8"), delimiter="\t"))
    assert rows[0] == ["split", "file", "line", "reason"]
    assert [(r[0], r[1].endswith("reviews.csv"), r[2], r[3].split(";")[0]) for r in rows[1:]] == [
        ("train", True, "42", "empty text"), ("train", True, "43", "empty label for '股市'")]
    cols = json.loads((run / "run.json").read_text())["data"]["columns"]["train"]
    assert cols["roles"]["label"]["why"] == "matched the name 'label'" and cols["unused"] == ["cat"]
    run2 = tmp_path / "run2"
    m = train(tiny_cfg(tiny_model, "train.max_steps=1"), write(tmp_path / "ok.csv", reviews(20)), out=run2,
              progress=False)
    printed = capsys.readouterr().out
    assert m["evaluated_on"] == "dev" and "optimistic" in m["score_on"] and "skipped_rows" not in m
    assert "note: no test data: the final scores are on dev" in printed
    assert "scores on dev (held out of train), the split that also picked the best checkpoint" in printed


@pytest.fixture(scope="module")
def ok_run(tiny_model, tmp_path_factory):
    """One tiny run on reviews (labels neg, pos), for the evaluate tests."""
    d = tmp_path_factory.mktemp("ok")
    train(tiny_cfg(tiny_model, "train.max_steps=1"), write(d / "ok.csv", reviews(20)), out=d / "run", progress=False)
    return d / "run"


def test_evaluate_reports_every_bad_row_and_skips_them_on_request(ok_run, tmp_path, capsys):
    """evaluate reads a labelled file with the run's label map: every bad row is reported before any prediction
    (one line each, and how to go on); with data.on_invalid=skip they are left out, counted and listed."""
    from tricklab.cli import main as cli_main
    from tricklab.inference.evaluate import evaluate_run

    run = ok_run
    bad = write(tmp_path / "eval.csv", reviews(6, "a,pos,\nb,maybe,球赛\nc,neg\n"))
    with pytest.raises(DataError) as e:
        evaluate_run(run, bad, verbose=False, out=tmp_path / "e1")
    msg = str(e.value)
    assert f"{bad} line 8: empty text" in msg and f"{bad} line 9: label 'maybe' does not occur in train" in msg
    assert f"{bad} line 10: " in msg
    assert msg.splitlines()[-1] == ("3 row(s) above are invalid; fix them, or --set data.on_invalid=skip to evaluate "
                                    "without them (each skipped row listed in skipped_rows_eval.tsv beside "
                                    "eval_eval.json)")
    assert not (tmp_path / "e1" / "eval_eval.json").exists()
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(bad), "--out", str(tmp_path / "e2"),
                     "--set", "data.on_invalid=skip"]) == 0
    assert "data.on_invalid=skip: 3 invalid row(s) skipped (eval 3)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "e2" / "eval_eval.json").read_text())
    assert saved["skipped_rows"] == 3 and sum(saved["confusion_matrix"][0]) + sum(saved["confusion_matrix"][1]) == 6
    rows = list(csv.reader((tmp_path / "e2" / "skipped_rows_eval.tsv").open(encoding="utf-8"), delimiter="\t"))
    assert [(r[0], r[2]) for r in rows[1:]] == [("eval", "8"), ("eval", "10"), ("eval", "9")]


def test_evaluate_a_dataset_split_with_class_label_ids(ok_run, tmp_path, capsys):
    """evaluate --data hf:FOLDER / a datasets folder / a DataFrame: the split's rows score as the same rows from a
    CSV file; ClassLabel ids are read by their names (here in another order than the run's labels)."""
    datasets = pytest.importorskip("datasets")
    import pandas as pd

    from tricklab.cli import main as cli_main
    from tricklab.inference.evaluate import evaluate_run

    run = ok_run
    csv_rows = list(csv.DictReader(write(tmp_path / "test.csv", reviews(12)).open(encoding="utf-8")))
    names = ["pos", "neg"]                                            # the run's label order is neg, pos
    feats = datasets.Features({"review": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    test = datasets.Dataset.from_dict({"review": [r["review"] for r in csv_rows],
                                       "label": [names.index(r["label"]) for r in csv_rows]}, features=feats)
    datasets.DatasetDict({"train": test, "test": test}).save_to_disk(str(tmp_path / "ds"))
    want = evaluate_run(run, tmp_path / "test.csv", verbose=False, out=tmp_path / "e0")
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", f"hf:{tmp_path / 'ds'}", "--out", str(tmp_path / "e1")]) == 0
    assert "[test]" in capsys.readouterr().out
    got = json.loads(next((tmp_path / "e1").glob("eval_hf_*ds_test.json")).read_text())
    assert got["accuracy"] == want["accuracy"] and got["confusion_matrix"] == want["confusion_matrix"]
    by_split = evaluate_run(run, tmp_path / "ds", verbose=False, out=tmp_path / "e2", split="train")
    assert by_split["confusion_matrix"] == want["confusion_matrix"]
    frame = evaluate_run(run, pd.DataFrame(csv_rows), verbose=False, out=tmp_path / "e3")
    assert frame["confusion_matrix"] == want["confusion_matrix"]
    with pytest.raises(ConfigError, match=r"ds: no split 'validation' \(it has: train, test\); fix: --split NAME"):
        evaluate_run(run, tmp_path / "ds", verbose=False, out=tmp_path / "e4", split="validation")
    # a split by its own name, and by tricklab's (dev = validation)
    datasets.DatasetDict({"train": test, "validation_matched": test, "validation": test}).save_to_disk(str(tmp_path / "mn"))
    for split, file in (("validation_matched", "validation_matched"), ("dev", "validation")):
        assert cli_main(["evaluate", "--run", str(run), "--data", str(tmp_path / "mn"), "--split", split,
                         "--out", str(tmp_path / "e6")]) == 0
        got = json.loads(next((tmp_path / "e6").glob(f"eval_*mn_{file}.json")).read_text())
        assert got["confusion_matrix"] == want["confusion_matrix"]
    # without a test or validation split: the dataset's own split names, and train only when asked
    datasets.DatasetDict({"train": test, "validation_matched": test}).save_to_disk(str(tmp_path / "only"))
    with pytest.raises(ConfigError, match=r"only: no test or validation split \(it has: train, validation_matched\); "
                                          r"fix: --split NAME"):
        evaluate_run(run, tmp_path / "only", verbose=False, out=tmp_path / "e7")
    assert evaluate_run(run, tmp_path / "only", verbose=False, out=tmp_path / "e7", split="train")["accuracy"] == \
        want["accuracy"]
    # --split validation finds a split named dev; one table is scored whole, with or without --split train
    assert evaluate_run(run, {"train": pd.DataFrame(csv_rows[:2]), "dev": pd.DataFrame(csv_rows)}, verbose=False,
                        out=tmp_path / "e8", split="validation")["confusion_matrix"] == want["confusion_matrix"]
    assert evaluate_run(run, pd.DataFrame(csv_rows), verbose=False, out=tmp_path / "e9",
                        split="train")["confusion_matrix"] == want["confusion_matrix"]
    with pytest.raises(ConfigError, match=r"^--split test: DataFrame is one table, not a dataset with splits; fix: "
                                          r"leave --split out$"):
        evaluate_run(run, pd.DataFrame(csv_rows), verbose=False, out=tmp_path / "e9", split="test")
    with pytest.raises(ConfigError, match=r"--split test: .*test.csv is a file \(it has no splits\)"):
        evaluate_run(run, tmp_path / "test.csv", verbose=False, out=tmp_path / "e5", split="test")
