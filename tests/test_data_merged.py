"""Data inputs together with the first-run checks: a non-UTF-8 line found while streaming (also compressed) names
the encoding detected from that line on; the column note and "did you mean" for Parquet/DataFrame columns;
data.on_invalid=skip on table rows; skipped rows, the held-out test and the token cache (splits select rows of
the source as read, so a cached source is the same whatever rows a run skips)."""
from __future__ import annotations

import gzip

import pytest

from conftest import tiny_cfg
from tricklab.config import load_config
from tricklab.data import load_data
from tricklab.errors import DataError

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def cfg(*sets):
    return load_config(None, list(sets))


def test_streamed_gzip_file_names_the_line_and_the_encoding_from_that_line(tmp_path):
    """300 kB of ASCII lines first: the encoding is told from the undecodable line on, not from the file's start."""
    ascii_lines = "".join(f"match report number {i}\tsports\n" for i in range(12000))
    big5 = "體育新聞：球隊贏得冠軍，隊員們非常高興。\tsports\n經濟新聞：股市上漲，銀行利率維持不變。\tfinance\n" * 3
    f = tmp_path / "train.tsv.gz"
    f.write_bytes(gzip.compress(ascii_lines.encode("ascii") + big5.encode("big5")))
    with pytest.raises(DataError) as e:
        load_data(cfg(), f)
    msg = str(e.value)
    assert f"{f} line 12001: undecodable bytes" in msg and "Big5" in msg
    assert f"`zcat {f} | iconv -f BIG5 -t UTF-8 > train.utf8.tsv`" in msg   # decompressed first


def test_parquet_columns_are_noted_and_a_mistyped_one_gets_the_closest(tmp_path):
    rows = [{"cat": "a", "label": "pos" if i % 2 else "neg", "review": f"好评{i}" if i % 2 else f"差评{i}"}
            for i in range(20)]
    f = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    b = load_data(cfg(), f)
    note = next(n for n in b.notes if n.startswith("columns of train.parquet"))
    assert "text = 'review' (matched the name 'review')" in note and "unused: 'cat'" in note
    assert b.columns["train"]["roles"]["label"] == {"index": 1, "column": "label", "why": "matched the name 'label'"}
    with pytest.raises(DataError) as e:
        load_data(cfg("data.text_column=reviw"), f)
    assert "train.parquet: data.text_column='reviw': column not found" in str(e.value)
    assert "did you mean 'review'?" in str(e.value)
    with pytest.raises(DataError, match=r"DataFrame: data.label_column='lable': column not found.*did you mean 'label'"):
        load_data(cfg("data.label_column=lable"), pd.DataFrame(rows))


def test_skip_drops_parquet_and_dataframe_rows_by_index(tmp_path):
    rows = [{"text": f"好评{i}" if i % 2 else f"差评{i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    rows[3]["text"] = ""
    rows[5]["label"] = None
    f = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    with pytest.raises(DataError, match="data.on_invalid=skip"):
        load_data(cfg(), f)
    b = load_data(cfg("data.on_invalid=skip"), f)
    assert {(s.source, s.line) for s in b.skipped["train"]} == {(str(f), 3), (str(f), 5)}
    assert len(b.train) + len(b.dev) == 18
    b = load_data(cfg("data.on_invalid=skip"), pd.DataFrame(rows))
    assert sorted(s.line for s in b.skipped["train"]) == [3, 5] and b.skipped["train"][0].source == "DataFrame"


@pytest.mark.parametrize("frame", ["concat", "labels"])
def test_dataframe_rows_are_named_and_skipped_by_position_not_index_label(frame):
    """After pd.concat index labels recur, and a string index has no row numbers: a problem names the 0-based
    position, and skipping drops that row alone."""
    rows = [{"text": f"好评{i}" if i % 2 else f"差评{i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    rows[13]["text"] = ""
    if frame == "concat":
        df = pd.concat([pd.DataFrame(rows[:10]), pd.DataFrame(rows[10:])])       # index 0..9, 0..9
    else:
        df = pd.DataFrame(rows, index=[f"r{i}" for i in range(20)])
    with pytest.raises(DataError, match=r"DataFrame row 13: empty text"):
        load_data(cfg(), df)
    b = load_data(cfg("data.on_invalid=skip"), df)
    assert [s.line for s in b.skipped["train"]] == [13]
    kept = sorted(r.text for r in [*b.train.rows, *b.dev.rows])
    assert kept == sorted(r["text"] for i, r in enumerate(rows) if i != 13)       # row 3 (index label 3) kept


def _dev_ids_match(cfg_, b, tok):
    from tricklab.data import encode
    from tricklab.data.truncation import Truncation
    from tricklab.training.setup import encode_splits

    enc = encode_splits(cfg_, b, tok, False, [])
    for split, e in ((b.train, enc.train), (b.dev, enc.dev), (b.test, enc.test)):
        ref = encode(tok, [r.text for r in split.rows], None, cfg_.data.max_length, False, split.labels,
                     Truncation.from_config(cfg_.data))
        assert [list(x) for x in e.input_ids] == [list(x) for x in ref.input_ids], split.name
        assert list(e.labels) == list(ref.labels)


def test_token_cache_with_skipped_rows_and_a_held_out_test(tiny_model, tmp_path, monkeypatch):
    """The same dev file after trains with and without one of its labels (skip drops those dev rows in the second):
    both runs share the file's cached tokens and select the right rows; so does a test held out of train."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "cache"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    words = {"sports": "球赛冠军", "finance": "股市银行", "game": "玩家游戏"}
    dev = tmp_path / "dev.txt"
    dev.write_text("".join(f"{words[y]}{i}\t{y}\n" for i, y in enumerate(list(words) * 4)), encoding="utf-8")
    for labels in (list(words), ["sports", "finance"]):
        train = tmp_path / f"train{len(labels)}.txt"
        train.write_text("".join(f"{words[y]}{i}号\t{y}\n" for i, y in enumerate(labels * 10)), encoding="utf-8")
        c = tiny_cfg(tiny_model, "data.on_invalid=skip", "data.test_ratio=0.2")
        b = load_data(c, train, dev=dev)
        assert len(b.dev) == (12 if len(labels) == 3 else 8) and len(b.raw["dev"]) == 12
        assert b.test is not None and b.test_held_out and b.test.origin == "train"
        _dev_ids_match(c, b, tok)
    assert len(list((tmp_path / "cache" / "tokens").glob("*/*/ids.bin"))) == 3   # dev once, two trains
