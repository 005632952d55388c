"""Readers and validation: every supported format, and every bad input named by file, line, value, fix."""
from __future__ import annotations

import json

import pytest

from tricklab.config import load_config
from tricklab.data import load_data
from tricklab.errors import ConfigError, DataError


def cfg(*sets):
    return load_config(None, list(sets))


def write(p, text, enc="utf-8"):
    p.write_bytes(text.encode(enc))
    return p


def test_thucnews_folder_class_file_without_newline(thuc_dir):
    b = load_data(cfg(), thuc_dir)
    assert b.task == "single_label" and b.label_map.names == ["sports", "finance", "game"]
    assert len(b.train) == 120 and len(b.dev) == 30 and len(b.test) == 30
    assert b.train.labels[:3] == [0, 1, 2]


def test_the_run_names_the_class_file_it_used_and_how(thuc_dir, tmp_path):
    b = load_data(cfg(), thuc_dir)
    note = next(n for n in b.notes if n.startswith("classes:"))
    assert note == (f"classes: 3 from {thuc_dir / 'class.txt'} (in the data folder; the label ids in the data index "
                    f"its lines); if it is not this data's class file, move or rename it")
    write(tmp_path / "reviews.csv", "text,label\n" + "".join(f"好{i},{i % 3}\n" for i in range(12)))
    write(tmp_path / "labels.txt", "neg\npos\nneutral\nother\n")           # another data's class file
    b = load_data(cfg(), tmp_path / "reviews.csv")
    assert b.label_map.names == ["neg", "pos", "neutral", "other"]
    assert f"classes: 4 from {tmp_path / 'labels.txt'} (beside the --data file; the label ids" in "\n".join(b.notes)
    write(tmp_path / "named.csv", "text,label\n" + "".join(f"好{i},{['neg', 'pos'][i % 2]}\n" for i in range(12)))
    b = load_data(cfg(), tmp_path / "named.csv")
    assert "; the labels in the data are its names)" in next(n for n in b.notes if n.startswith("classes:"))
    (tmp_path / "labels.txt").unlink()
    assert not any(n.startswith("classes:") for n in load_data(cfg(), tmp_path / "reviews.csv").notes)


def test_a_data_folder_finds_every_extension_the_readers_read(tmp_path):
    from tricklab.data.dataset import EXTS, locate
    from tricklab.data.readers import COMPRESSED, EXTENSIONS

    assert set(EXTENSIONS) | {".txt", ".tsv"} <= set(EXTS)
    assert EXTS.index(".json") < EXTS.index(".ndjson") and EXTS.index(".tsv.zst") < EXTS.index(".xlsx")  # unchanged
    assert all(e + z in EXTS for e in EXTENSIONS if e not in (".xlsx", ".xlsm") for z in COMPRESSED)
    for i, name in enumerate(("train.ndjson", "train.pq.gz", "train.feather")):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / name).write_text("x")
        (folder / "valid.tsv").write_text("x")
        train, dev, test, _ = locate(folder)
        assert (train.name, dev.name, test) == (name, "valid.tsv", None)


@pytest.mark.parametrize("labels, how", [(["a", "b"], "stratified"), (["a|b", "b"], "at random"),
                                         (["0.5", "1.5"], "at random")])
def test_the_held_out_note_says_stratified_only_where_it_is(tmp_path, labels, how):
    write(tmp_path / "train.tsv", "".join(f"文{i}\t{labels[i % 2]}\n" for i in range(40)))
    notes = load_data(cfg("data.test_ratio=0.1"), tmp_path / "train.tsv").notes
    assert f"(10%, {how}, seed 42, data.test_ratio)" in "\n".join(notes)
    assert f"(10%, {how}, seed 42)" in "\n".join(notes)


def test_bom_and_crlf_are_silent(tmp_path):
    write(tmp_path / "train.tsv", "\ufeff好的\tpos\r\n不好\tneg\r\n还行\tpos\r\n")
    b = load_data(cfg(), tmp_path / "train.tsv")
    rows = b.train.rows + b.dev.rows
    assert sorted(r.text for r in rows) == ["不好", "好的", "还行"]
    assert all("\r" not in r.text and "\ufeff" not in r.text for r in rows)
    assert b.label_map.names == ["neg", "pos"]


def test_csv_with_header_and_quoting(tmp_path):
    write(tmp_path / "train.csv", 'label,review\n1,"很好,非常""满意"""\n0,差\n1,不错\n0,糟糕\n')
    b = load_data(cfg("data.dev_ratio=0.5"), tmp_path / "train.csv")
    texts = {r.text for r in b.train.rows + b.dev.rows}
    assert '很好,非常"满意"' in texts and b.label_map.names == ["0", "1"]


def test_columns_by_index_and_other_delimiter(tmp_path):
    write(tmp_path / "train.txt", "体育|娱乐 球赛 明星\n财经 股市\n体育 比赛\n")
    b = load_data(cfg("data.delimiter=space", "data.label_column=0", "data.text_column=1", "data.dev_ratio=0.3"),
                  tmp_path / "train.txt")
    assert b.task == "multi_label" and b.label_map.names == ["体育", "娱乐", "财经"]
    first = next(r for r in b.train.rows + b.dev.rows if r.line == 1)
    assert first.text == "球赛 明星"  # the text keeps its own spaces


def test_tsv_header_columns_by_name(tmp_path):
    write(tmp_path / "train.tsv", "id\tsentence\tlabel\n1\t好\tpos\n2\t坏\tneg\n3\t棒\tpos\n")
    b = load_data(cfg("data.text_column=sentence", "data.label_column=label", "data.dev_ratio=0.3"), tmp_path / "train.tsv")
    assert {r.text for r in b.train.rows + b.dev.rows} == {"好", "坏", "棒"}


def test_jsonl_pairs_multilabel_regression(tmp_path):
    rows = [{"text_a": "今天", "text_b": "明天", "label": 0.5}, {"text_a": "好", "text_b": "坏", "label": 4.0},
            {"text_a": "是", "text_b": "否", "label": 2}]
    write(tmp_path / "train.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    b = load_data(cfg("data.dev_ratio=0.3"), tmp_path / "train.jsonl")
    assert b.task == "regression" and b.is_pair and sorted(b.train.labels + b.dev.labels) == [0.5, 2.0, 4.0]
    write(tmp_path / "ml.jsonl", '{"text": "a", "labels": ["x", "y"]}\n{"text": "b", "labels": ["y"]}\n{"text": "c", "labels": ["x"]}\n')
    b = load_data(cfg("data.dev_ratio=0.3"), tmp_path / "ml.jsonl")
    assert b.task == "multi_label" and b.label_map.names == ["x", "y"]
    assert sorted(b.train.labels + b.dev.labels) == [[0], [0, 1], [1]]


def test_pairs_tsv_three_columns(tmp_path):
    write(tmp_path / "train.txt", "借呗还款\t花呗还款\t0\n借呗额度\t借呗额度多少\t1\n")
    write(tmp_path / "dev.txt", "花呗\t借呗\t0\n")
    b = load_data(cfg(), tmp_path)
    assert b.is_pair and b.train.rows[0].text_b == "花呗还款" and b.label_map.from_ids


def bad(tmp_path, files: dict[str, str | bytes], *sets) -> str:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataError) as e:
        load_data(cfg(*sets), tmp_path)
    return str(e.value)


def test_out_of_range_id(tmp_path):
    msg = bad(tmp_path, {"train.txt": "好\t0\n坏\t1\n", "dev.txt": "中\t0\n差\t10\n", "class.txt": "a\nb"})
    assert "dev.txt line 2: label id 10 is out of range" in msg and "names 2 classes (0..1)" in msg


def test_one_based_ids(tmp_path):
    msg = bad(tmp_path, {"train.txt": "好\t1\n坏\t2\n中\t3\n", "dev.txt": "中\t1\n"}, "data.label_type=id")
    assert "train.txt line 3" in msg and "look 1-based" in msg and "subtract 1" in msg
    msg = bad(tmp_path, {"train.txt": "好\t1\n坏\t2\n", "dev.txt": "中\t1\n", "class.txt": "a\nb\n"})
    assert "label id 2 is out of range" in msg and "1-based" in msg


@pytest.mark.parametrize("labels, names, as_ids", [
    (["-1", "1", "-1", "1"], ["-1", "1"], "out of range"),          # polarity: -1 is no class id
    (["1", "5", "3", "2", "4", "5"], ["1", "2", "3", "4", "5"], "look 1-based"),   # star ratings
    (["0", "10", "5", "10"], ["0", "5", "10"], 11),                  # gaps: as ids, 8 classes with no example
])
def test_integer_labels_that_are_not_ids_0_to_max_are_read_as_names(tmp_path, labels, names, as_ids):
    texts = ["好", "坏", "中", "差", "棒", "行"]
    write(tmp_path / "train.tsv", "".join(f"{t}\t{lab}\n" for t, lab in zip(texts, labels)))
    write(tmp_path / "dev.tsv", f"新\t{labels[1]}\n")
    b = load_data(cfg(), tmp_path)
    assert b.label_map.names == names and not b.label_map.from_ids      # numeric order, not "0", "10", "5"
    assert b.train.labels == [names.index(lab) for lab in labels] and b.dev.labels == [names.index(labels[1])]
    note = next(n for n in b.notes if n.startswith("labels: the integers"))
    assert f"read as {len(names)} class names" in note
    assert ("data.label_type=id" in note) == isinstance(as_ids, int)   # the hint only where ids can work
    if isinstance(as_ids, int):         # what auto avoids: label_type=id keeps the old reading
        assert load_data(cfg("data.label_type=id"), tmp_path).label_map.num_labels == as_ids
    else:
        with pytest.raises(DataError, match=as_ids):
            load_data(cfg("data.label_type=id"), tmp_path)


def test_integer_labels_0_to_max_stay_ids(tmp_path):
    write(tmp_path / "train.tsv", "好\t2\n坏\t0\n中\t1\n差\t2\n")
    write(tmp_path / "dev.tsv", "新\t1\n")
    b = load_data(cfg(), tmp_path)
    assert b.label_map.from_ids and b.label_map.names == ["0", "1", "2"] and b.train.labels == [2, 0, 1, 2]
    assert not any(n.startswith("labels: the integers") for n in b.notes)


def test_unknown_label_name_in_dev(tmp_path):
    msg = bad(tmp_path, {"train.tsv": "好\tpos\n坏\tneg\n", "dev.tsv": "中\tneutral\n"})
    assert "dev.tsv line 1: label 'neutral' does not occur in train (train labels: neg, pos)" in msg


def test_empty_text(tmp_path):
    msg = bad(tmp_path, {"train.tsv": "好\tpos\n\tneg\n坏\tneg\n", "dev.tsv": "中\tpos\n"})
    assert "train.tsv line 2: empty text" in msg


def test_wrong_column_count(tmp_path):
    msg = bad(tmp_path, {"train.txt": "好\t0\n坏\t有\t1\n中\t0\n", "dev.txt": "中\t0\n"})
    assert "train.txt line 2: expected 2 tab-separated columns (text, label), found 3" in msg


def test_gbk_file(tmp_path):
    msg = bad(tmp_path, {"train.txt": "好\t0\n坏的新闻\t1\n".encode("gbk"), "dev.txt": "中\t0\n"})
    assert "train.txt line 1: undecodable bytes" in msg and "GBK/GB18030" in msg and "iconv" in msg


def test_nan_regression_target(tmp_path):
    msg = bad(tmp_path, {"train.tsv": "好\t0.5\n坏\tnan\n中\t1.5\n", "dev.tsv": "中\t1.0\n"}, "task=regression")
    assert "train.tsv line 2: regression target is nan" in msg


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_data(cfg(), tmp_path / "nothing")
    with pytest.raises(DataError, match="no train file"):
        load_data(cfg(), tmp_path)
    (tmp_path / "train.txt").write_text("好\t0\n坏\t1\n")
    with pytest.raises(DataError, match=r"nope.txt: file not found: check the path given to --dev"):
        load_data(cfg(), tmp_path, dev=tmp_path / "nope.txt")


def test_all_problems_reported_together(tmp_path):
    msg = bad(tmp_path, {"train.txt": "好\t0\n坏\t1\n", "dev.txt": "\t0\n中\t7\n中\t8\n", "class.txt": "a\nb"})
    assert "line 1: empty text" in msg and "line 2: label id 7" in msg and "line 3: label id 8" in msg


def test_held_out_dev_is_stratified(tmp_path):
    lines = [f"文本{i}\t{'a' if i % 4 else 'b'}" for i in range(100)]
    write(tmp_path / "train.tsv", "\n".join(lines))
    b = load_data(cfg("data.dev_ratio=0.2"), tmp_path / "train.tsv")
    assert len(b.dev) == 20 and b.dev.labels.count(0) == 15  # a: 75 -> 15, b: 25 -> 5
    assert any("held out 20" in n for n in b.notes)


def test_only_label_column_given_text_takes_the_other(tmp_path):
    write(tmp_path / "train.txt", "pos\t好的\nneg\t不好\npos\t不错\n")
    b = load_data(cfg("data.label_column=0", "data.dev_ratio=0.3"), tmp_path / "train.txt")
    assert {r.text for r in b.train.rows + b.dev.rows} == {"好的", "不好", "不错"} and b.label_map.names == ["neg", "pos"]
    write(tmp_path / "sp.txt", "体育 球赛 明星\n财经 股市 大涨\n体育 比赛\n")
    b = load_data(cfg("data.delimiter=space", "data.label_column=0", "data.dev_ratio=0.3"), tmp_path / "sp.txt")
    assert {r.text for r in b.train.rows + b.dev.rows} == {"球赛 明星", "股市 大涨", "比赛"}


def test_jsonl_boolean_labels_are_classes(tmp_path):
    write(tmp_path / "train.jsonl", '{"text": "好", "label": true}\n{"text": "坏", "label": false}\n{"text": "棒", "label": true}\n')
    b = load_data(cfg("data.dev_ratio=0.3"), tmp_path / "train.jsonl")
    assert b.task == "single_label" and b.label_map.names == ["false", "true"]


def test_pandas_csv_with_index_column(tmp_path):
    write(tmp_path / "train.csv", ",text,label\n0,好,pos\n1,坏,neg\n2,棒,pos\n")
    b = load_data(cfg("data.dev_ratio=0.3"), tmp_path / "train.csv")
    assert {r.text for r in b.train.rows + b.dev.rows} == {"好", "坏", "棒"}


def test_empty_dev_file_and_tiny_hold_out(tmp_path):
    msg = bad(tmp_path, {"train.tsv": "好\tpos\n坏\tneg\n", "dev.tsv": "text\tlabel\n"})
    assert "dev.tsv: no examples in the file" in msg
    (tmp_path / "dev.tsv").unlink()
    msg = bad(tmp_path, {"train.tsv": "好\tpos\n坏\tneg\n"})
    assert "too few examples per class to hold out a dev set" in msg and "--dev" in msg


def test_id_labels_that_are_not_ids(tmp_path):
    msg = bad(tmp_path, {"train.tsv": "好\tpos\n坏\tneg\n", "dev.tsv": "中\tpos\n"}, "data.label_type=id")
    assert "train.tsv line 1: label 'pos' is not a class id" in msg


# ---------------------------------------------------------------- columns a new user's files come with

REVIEWS = ["这家酒店的房间很干净，服务也很周到", "早餐太简单了，下次不会再来", "位置方便，离地铁站只有五分钟",
           "空调坏了一晚上没人修", "前台小姐态度非常好，推荐", "隔音很差，隔壁说话听得一清二楚",
           "性价比很高，值得入住", "床单上有污渍，卫生堪忧"]


def test_headerless_label_first_file_stops_with_the_settings_that_read_it(tmp_path):
    write(tmp_path / "train.tsv", "".join(f"{1 - i % 2}\t{t}{i}\n" for i, t in enumerate(REVIEWS * 3)))
    write(tmp_path / "dev.tsv", f"1\t{REVIEWS[0]}\n0\t{REVIEWS[1]}\n")
    msg = str(pytest.raises(DataError, load_data, cfg(), tmp_path).value)
    assert "train.tsv: no header and two columns, and column 0 looks like the labels (short, repeated: '0', '1')" in msg
    assert "fix: --set data.text_column=1 --set data.label_column=0" in msg
    b = load_data(cfg("data.text_column=1", "data.label_column=0"), tmp_path)       # the fix reads it, dev too
    assert b.train.rows[0].text == REVIEWS[0] + "0" and [r.text for r in b.dev.rows] == REVIEWS[:2]
    assert b.train.labels[:2] == [1, 0] and b.dev.labels == [1, 0]


@pytest.mark.parametrize("lines", [
    [f"{t}{i}\t{i % 2}" for i, t in enumerate(REVIEWS * 3)],                       # text first: as it always was
    [f"{'好坏'[i % 2]}\t{i % 2}" for i in range(12)],                                # both columns short and repeated
    [f"{['查余额', '退款', '转账'][i % 3]}\tbilling_refund_request_{i % 3}" for i in range(30)],  # short texts, long labels
    [f"{'好坏'[i % 2]}\t{i:02d}" for i in range(20)],           # column 1 distinct but as short as labels: no texts
])
def test_text_first_files_are_never_taken_for_label_first(tmp_path, lines):
    write(tmp_path / "train.tsv", "\n".join(lines) + "\n")
    write(tmp_path / "dev.tsv", lines[0] + "\n")
    b = load_data(cfg(), tmp_path)
    assert b.train.rows[0].text == lines[0].split("\t")[0]


@pytest.mark.parametrize("header, text_col, label_col, why", [
    ("review,stars", "review", "stars", "label = 'stars' (the only column left; short, repeated values)"),
    ("id,review,stars", "review", "stars", "label = 'stars' (the only column left; short, repeated values)"),
    ("comment_text,label", "comment_text", "label", "text = 'comment_text' (matched the name"),
    ("body_text,label", "body_text", "label", "text = 'body_text' (the only column left)"),
    ("评论,标签", "评论", "标签", "label = '标签' (matched the name"),
    ("sentence,sentiment", "sentence", "sentiment", "label = 'sentiment' (matched the name"),
])
def test_header_columns_by_name_or_the_one_left(tmp_path, header, text_col, label_col, why):
    ids = header.startswith("id,")
    rows = "".join(f"{f'{i},' if ids else ''}{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(REVIEWS))
    write(tmp_path / "train.csv", header + "\n" + rows)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    assert b.label_map.names == ["neg", "pos"]                  # the header is no example, its label no class
    assert sorted(r.text for r in b.train.rows + b.dev.rows) == sorted(REVIEWS)
    assert why in next(n for n in b.notes if n.startswith("columns of train.csv"))
    assert b.columns["train"]["roles"]["text"]["column"] == text_col
    assert b.columns["train"]["roles"]["label"]["column"] == label_col


@pytest.mark.parametrize("header, values", [
    ("text,id", [str(i) for i in range(8)]),                       # an id
    (",text", [str(i) for i in range(8)]),                         # pandas' to_csv index (first, unnamed)
    ("text,Unnamed: 0", ["pos", "neg"] * 4),                       # ... read back and written again
    ("question,answer", [f"答案是第{i}个选项" for i in range(8)]),   # long, distinct values: no labels
])
def test_the_column_left_is_no_label_unless_it_looks_like_one(tmp_path, header, values):
    first = header.split(",")[0] == ""
    rows = "".join((f"{v},{t}\n" if first else f"{t},{v}\n") for t, v in zip(REVIEWS, values))
    write(tmp_path / "train.csv", header + "\n" + rows)
    msg = str(pytest.raises(DataError, load_data, cfg(), tmp_path / "train.csv").value)
    assert f"train.csv line 1: no label column in header ({header.replace(',', ', ')}); fix: --set data.label_column=NAME" in msg


def test_semicolon_csv_is_read_and_says_so(tmp_path):
    rows = "".join(f'"{t}, 真的";{"pos" if i % 2 else "neg"}\n' for i, t in enumerate(REVIEWS))  # commas in text
    write(tmp_path / "train.csv", "review;sentiment\n" + rows)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    assert sorted(r.text for r in b.train.rows + b.dev.rows) == sorted(f"{t}, 真的" for t in REVIEWS)
    note = next(n for n in b.notes if n.startswith("columns of train.csv"))
    assert "(';'-separated: its first line has no comma)" in note and "--set data.delimiter=semicolon" in note
    b2 = load_data(cfg("data.dev_ratio=0.25", "data.delimiter=semicolon"), tmp_path / "train.csv")
    assert sorted(r.text for r in b2.train.rows) == sorted(r.text for r in b.train.rows)
    write(tmp_path / "c.csv", "review,sentiment\n" + "".join(f"{t};x,{i % 2}\n" for i, t in enumerate(REVIEWS)))
    b3 = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "c.csv")      # a comma on line 1: the comma it is
    assert all(r.text.endswith(";x") for r in b3.train.rows) and "separated" not in " ".join(b3.notes)


def test_jsonl_gets_the_columns_note_and_a_misspelt_field_is_one_error(tmp_path):
    recs = [{"id": i, "review": REVIEWS[i], "stars": "pos" if i % 2 else "neg"} for i in range(8)]
    write(tmp_path / "train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    b = load_data(cfg("data.label_column=stars", "data.dev_ratio=0.25"), tmp_path / "train.jsonl")
    note = next(n for n in b.notes if n.startswith("columns of train.jsonl"))
    assert "text = 'review' (matched the name 'review'), label = 'stars' (data.label_column='stars')" in note
    assert "unused: 'id'" in note and b.columns["train"]["roles"]["label"]["column"] == "stars"
    e = pytest.raises(DataError, load_data, cfg("data.label_column=star"), tmp_path / "train.jsonl").value
    assert len(e.problems) == 1                                  # not one "no label field" per line
    assert "data.label_column='star': column not found" in str(e) and "did you mean 'stars'?" in str(e)
    e = pytest.raises(DataError, load_data, cfg("data.text_column=reviw", "data.label_column=stars"),
                      tmp_path / "train.jsonl").value
    assert len(e.problems) == 1 and "did you mean 'review'?" in str(e)


@pytest.mark.parametrize("labels, task, hint", [
    (["0.0", "1.0", "1.0", "0.0"], "single_label", "the labels are 2 numbers (0, 1) read as classes: if they are "
                                                   "scores, --set task=regression"),
    ([str(i) for i in range(12)], "single_label", "the labels are 12 numbers (0, 1, 2, 3, 4, 5, ...) read as classes"),
    (["1.0", "2.0", "3.0", "2.5"], "regression", None),          # a fraction: scores, nothing to add
    (["1.0", "2.0", "3.0", "2.0"], "regression", "the targets are 3 whole numbers (1, 2, 3) read as scores: if they "
                                                 "are classes, --set task=single_label"),
    (["0", "1", "1", "0"], "single_label", None),
])
def test_numeric_labels_task_and_the_hint_for_the_other_reading(tmp_path, labels, task, hint):
    texts = [f"{t}{i}" for i, t in enumerate(REVIEWS * 2)]
    write(tmp_path / "train.tsv", "".join(f"{t}\t{lab}\n" for t, lab in zip(texts, labels)))
    write(tmp_path / "dev.tsv", f"新的\t{labels[0]}\n")
    b = load_data(cfg(), tmp_path)
    note = next(n for n in b.notes if n.startswith("task: "))
    assert b.task == task and note.startswith(f"task: {task} (detected from")
    assert (hint in note) if hint else note.endswith("override)"), note


def test_labels_differing_only_in_case_get_a_note(tmp_path):
    labs = ["positive", "negative", "Positive", "negative", "positive", "neg ative"]
    write(tmp_path / "train.tsv", "".join(f"{t}\t{lab}\n" for t, lab in zip(REVIEWS, labs)))
    write(tmp_path / "dev.tsv", "新的\tpositive\n")
    b = load_data(cfg(), tmp_path)
    assert b.label_map.names == ["Positive", "neg ative", "negative", "positive"]      # kept apart, as written
    note = next(n for n in b.notes if n.startswith("labels: "))
    assert "'Positive' / 'positive'" in note and "'neg ative' / 'negative'" in note and "write it one way" in note
    write(tmp_path / "train.tsv", "".join(f"{t}\t{lab}\n" for t, lab in zip(REVIEWS, ["positive", "neg"] * 3)))
    assert not any(n.startswith("labels: ") for n in load_data(cfg(), tmp_path).notes)


def test_a_rare_label_named_almost_like_a_frequent_one_gets_a_typo_note(tmp_path):
    labs = ["正面"] * 40 + ["负面"] * 40 + ["正", "負面", "中性"]          # 中性: rare but no near name
    write(tmp_path / "train.tsv", "".join(f"评论{i}号\t{lab}\n" for i, lab in enumerate(labs)))
    b = load_data(cfg(), tmp_path / "train.tsv")
    assert sorted(b.label_map.names) == ["中性", "正", "正面", "負面", "负面"]                # kept, as written
    note = next(n for n in b.notes if n.startswith("labels: "))
    assert "'正' (1) / '正面' (40)" in note and "'負面' (1) / " in note and "'负面' (40)" in note and "中性" not in note
    assert "may be a typo" in note
    import shlex
    fix = shlex.split(note.split("map them: --set ")[1])[0]                 # the note's fix, as a shell reads it
    assert fix == 'data.label_map={"正": "正面", "負面": "负面"}'
    assert load_data(cfg(fix), tmp_path / "train.tsv").label_map.names == ["中性", "正面", "负面"]
    labs = ["正面"] * 10 + ["负面"] * 10 + ["正"]                                # not 20x rarer: no note
    write(tmp_path / "t2.tsv", "".join(f"评论{i}号\t{lab}\n" for i, lab in enumerate(labs)))
    assert not any(n.startswith("labels: ") for n in load_data(cfg(), tmp_path / "t2.tsv").notes)


@pytest.mark.parametrize("content, delim, texts", [
    ("review\tlabel\n好, 很好\tpos\n坏\tneg\n中\tpos\n差\tneg\n", "tab", ["好, 很好", "坏", "中", "差"]),
    ("review|label\n好;很好|pos\n坏|neg\n中|pos\n差|neg\n", "pipe", ["好;很好", "坏", "中", "差"]),
    ("review;stars\nSehr gut;4,5\nok;3,0\nschlecht;4,5\nnaja;3,0\n", "semicolon", ["Sehr gut", "ok", "schlecht", "naja"]),
    ('"好;很\n好",pos\n坏,neg\n中,pos\n差,neg\n', None, ["好;很\n好", "坏", "中", "差"]),   # ';' inside quotes
])
def test_csv_separator_is_told_by_its_first_lines(tmp_path, content, delim, texts):
    write(tmp_path / "train.csv", content)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    assert sorted(r.text for r in b.train.rows + b.dev.rows) == sorted(texts)
    note = next(n for n in b.notes if n.startswith("columns of train.csv"))
    assert (f"--set data.delimiter={delim}" in note) if delim else "separated" not in note


def test_whole_number_float_labels_name_the_same_classes_as_integers(tmp_path):
    write(tmp_path / "train.csv", "text,label\n" + "".join(f"{t},{float(i % 2)}\n" for i, t in enumerate(REVIEWS)))
    write(tmp_path / "dev.csv", f"text,label\n新的,1\n旧的,0.0\n")
    b = load_data(cfg(), tmp_path)
    assert b.task == "single_label" and b.label_map.names == ["0", "1"]
    assert b.train.labels == [i % 2 for i in range(8)] and b.dev.labels == [1, 0]


def test_integers_read_as_names_say_how_to_read_ids_when_dev_has_another(tmp_path):
    write(tmp_path / "train.tsv", "".join(f"{t}\t{[0, 1, 2, 4][i % 4]}\n" for i, t in enumerate(REVIEWS)))
    write(tmp_path / "dev.tsv", "新的\t3\n")
    msg = str(pytest.raises(DataError, load_data, cfg(), tmp_path).value)
    assert "dev.tsv line 1: label '3' does not occur in train" in msg and "--set data.label_type=id" in msg
    assert load_data(cfg("data.label_type=id"), tmp_path).dev.labels == [3]


@pytest.mark.parametrize("head", ["工单内容,意图", "\ufeff工单内容,意图", "id,工单内容,label"])
def test_a_first_line_naming_the_label_column_is_a_header_whatever_the_text_column_is_called(tmp_path, head):
    cols = head.lstrip("\ufeff").split(",")
    body = "".join(",".join({"id": str(i), "工单内容": t, "意图": ["退款", "发票"][i % 2],
                             "label": ["退款", "发票"][i % 2]}[c] for c in cols) + "\n" for i, t in enumerate(REVIEWS))
    write(tmp_path / "train.csv", head + "\n" + body)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    assert b.label_map.names == ["发票", "退款"] and len(b.train) + len(b.dev) == len(REVIEWS)
    assert "工单内容" not in [r.text for r in b.train.rows + b.dev.rows]
    # ... unless the name comes back as a value below: then line 1 is data (a class named 意图)
    write(tmp_path / "t2.csv", head + "\n" + body + body.replace("退款", cols[-1], 1))
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "t2.csv")
    assert cols[-1] in b.label_map.names


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_labels_are_stripped_alike_in_every_format(tmp_path, name):
    labs = ["退款", " 退款 ", "发票\u3000", "发票"] * 3
    if name.endswith(".csv"):
        body = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(REVIEWS * 2, labs))
    else:
        body = "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in zip(REVIEWS * 2, labs))
    write(tmp_path / name, body)
    assert load_data(cfg("data.dev_ratio=0.25"), tmp_path / name).label_map.names == ["发票", "退款"]
    write(tmp_path / name, body.replace("发票\u3000", "\u3000 ", 1) if name.endswith(".jsonl") else body)
    if name.endswith(".jsonl"):                        # a label of spaces is empty, as in a CSV
        with pytest.raises(DataError, match="line 3: empty label in column 'label'"):
            load_data(cfg(), tmp_path / name)


@pytest.mark.parametrize("first", ["分类\t体育", "标签\t体育"])
def test_a_label_name_in_the_text_column_of_a_headerless_file_is_data(tmp_path, first):
    write(tmp_path / "train.tsv", first + "\n" + "".join(f"{t}\t{['体育', '财经'][i % 2]}\n" for i, t in enumerate(REVIEWS)))
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.tsv")
    assert b.label_map.names == ["体育", "财经"]                                   # never the texts as classes
    assert first.split("\t")[0] in [r.text for r in b.train.rows + b.dev.rows]


def test_a_chinese_first_line_is_an_example_not_a_header(tmp_path):
    write(tmp_path / "train.tsv", "评论\t正面\n" + "".join(f"{t}\t{['正面', '负面'][i % 2]}\n" for i, t in enumerate(REVIEWS)))
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.tsv")
    assert "评论" in [r.text for r in b.train.rows + b.dev.rows] and b.label_map.names == ["正面", "负面"]


@pytest.mark.parametrize("sep", [",", ";"])
def test_labels_joined_by_another_separator_are_named_as_likely_lists(tmp_path, sep):
    combos = [["horror", "action"], ["comedy"], ["action", "comedy"], ["horror"], ["action"], ["comedy", "horror"]]
    labs = [sep.join(c) for c in combos] * 2
    texts = [f"{t}{i}" for i, t in enumerate(REVIEWS * 2)][:len(labs)]
    body = "".join(f'{t},"{lab}"\n' for t, lab in zip(texts, labs))
    write(tmp_path / "train.csv", "text,labels\n" + body)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    note = next(n for n in b.notes if n.startswith("task: "))
    assert b.task == "single_label" and f"6 of 12 labels hold {sep!r}" in note and "3 pieces recombine into 6" in note
    assert f"data.label_sep={sep}" in note
    b = load_data(cfg("data.dev_ratio=0.25", f"data.label_sep={sep}"), tmp_path / "train.csv")   # the fix
    assert b.task == "multi_label" and b.label_map.names == ["action", "comedy", "horror"]
    write(tmp_path / "plain.csv", "text,label\n" + "".join(f"{t},\"{['a, b', 'c'][i % 2]}\"\n" for i, t in enumerate(texts)))
    note = next(n for n in load_data(cfg("data.dev_ratio=0.25"), tmp_path / "plain.csv").notes if n.startswith("task: "))
    assert "pieces" not in note          # a label with a comma that does not recombine: one class name
    scores = ["4,5", "3,0", "4,0", "3,5", "5,0", "5,5"]         # pieces 3, 4, 5, 0 recombine into 6 labels
    write(tmp_path / "eu.csv", "text;label\n" + "".join(f"{t};{scores[i % 6]}\n" for i, t in enumerate(texts)))
    note = next(n for n in load_data(cfg("data.dev_ratio=0.25"), tmp_path / "eu.csv").notes if n.startswith("task: "))
    assert "label_sep" not in note       # decimal commas: numbers, not lists


def test_quora_style_pairs_skip_their_id_columns(tmp_path):
    rows = "".join(f"{i},{2 * i},{2 * i + 1},{REVIEWS[i % 8]}吗,{REVIEWS[(i + 1) % 8]}吗,{i % 2}\n" for i in range(16))
    write(tmp_path / "train.csv", "id,qid1,qid2,question1,question2,is_duplicate\n" + rows)
    b = load_data(cfg("data.dev_ratio=0.25"), tmp_path / "train.csv")
    roles = b.columns["train"]["roles"]
    assert (roles["text"]["column"], roles["text_b"]["column"], roles["label"]["column"]) == (
        "question1", "question2", "is_duplicate")
    assert b.is_pair and b.label_map.names == ["0", "1"]


def test_a_csv_header_with_unknown_names_gets_a_warning_in_the_columns_note(tmp_path):
    rows = [f"球赛冠军队员{i},{'sports' if i % 2 else 'finance'}" for i in range(12)]
    (tmp_path / "train.csv").write_text("Review Text,Rating\n" + "\n".join(rows) + "\n", encoding="utf-8")
    b = load_data(load_config(None, []), tmp_path / "train.csv")
    note = next(n for n in b.notes if n.startswith("columns of train.csv"))
    assert "WARNING: line 1 may be a header read as data: its label 'Rating' occurs nowhere else" in note
    assert "--set data.header=true" in note
    # skip mode: the warning is a note, not a skipped row (nothing listed as skipped that still trains)
    b = load_data(load_config(None, ["data.on_invalid=skip"]), tmp_path / "train.csv")
    assert not b.skipped_counts() or not any(b.skipped_counts().values())
    # a one-example class further down, a long first text, a multi-label combination or a number: no warning
    for first in ("股市银行,rare\n", "", ):
        (tmp_path / "ok.csv").write_text("\n".join(rows) + "\n" + first, encoding="utf-8")
        assert not any("WARNING" in n for n in load_data(load_config(None, []), tmp_path / "ok.csv").notes)
    for head in ("球赛,a|b", "球赛,3"):
        (tmp_path / "m.tsv").write_text(head.replace(",", "\t") + "\n" + "\n".join(r.replace(",", "\t") for r in rows)
                                        + "\n", encoding="utf-8")
        notes = load_data(load_config(None, []), tmp_path / "m.tsv").notes
        assert not any("WARNING" in n for n in notes), (head, notes)
    (tmp_path / "h.tsv").write_text("球赛\tfinance2\n" + "\n".join(r.replace(",", "\t") for r in rows) + "\n",
                                    encoding="utf-8")
    assert any("WARNING: line 1 may be" in n for n in load_data(load_config(None, []), tmp_path / "h.tsv").notes)


def test_a_file_in_another_labelling_scheme_gets_one_summary_line(tmp_path):
    write(tmp_path / "train.tsv", "".join(f"评论{i}号\t{'正面' if i % 2 else '负面'}\n" for i in range(20)))
    write(tmp_path / "dev.tsv", "".join(f"评论{i}号\t{i % 2}\n" for i in range(12)))
    with pytest.raises(DataError) as e:
        load_data(cfg(), tmp_path / "train.tsv", dev=tmp_path / "dev.tsv")
    lines = str(e.value).splitlines()
    assert lines[0] == (f"{tmp_path / 'dev.tsv'}: 12 of 12 labels are not among train's: its labels ('0', '1') against "
                        f"train's ('正面', '负面'): another labelling scheme? fix: write this file's labels as train's "
                        f"(e.g. map each of its labels to one of train's)")
    assert any("dev.tsv line 1: label '0' does not occur in train" in ln for ln in lines)   # the rows still listed
    write(tmp_path / "dev.tsv", "".join(f"评论{i}号\t{'正面' if i else '正'}\n" for i in range(12)))   # one typo
    with pytest.raises(DataError) as e:
        load_data(cfg(), tmp_path / "train.tsv", dev=tmp_path / "dev.tsv")
    assert "another labelling scheme" not in str(e.value)


def test_the_count_of_problems_not_shown_counts_problems_only():
    e = DataError([f"f line {i}: bad" for i in range(25)])
    assert str(e).endswith("... and 5 more problems") and str(e).count("\n") == 20
    e = DataError([f"f line {i}: bad" for i in range(21)] + ["how it was read: columns of f: text = ..."])
    assert str(e).endswith("... and 1 more problem")


def test_the_skip_hint_stays_among_the_lines_shown(tmp_path):
    write(tmp_path / "train.tsv", "".join(f"评论{i}号\t{'' if i < 30 else 'a' if i % 2 else 'b'}\n" for i in range(50)))
    with pytest.raises(DataError) as e:
        load_data(cfg(), tmp_path / "train.tsv")
    shown = str(e.value).splitlines()
    assert len(shown) == 21 and any("--set data.on_invalid=skip" in ln for ln in shown[:20])
    assert shown[1].startswith("how it was read: columns of train.tsv") and shown[-1] == "... and 12 more problems"


def test_label_map_renames_and_merges_labels_in_every_split(tmp_path):
    """data.label_map: ids get names, typos merge into their class, in train and dev alike; the note counts each
    key's rows and names a key no label matched."""
    write(tmp_path / "train.tsv", "".join(f"文{i}\t{i % 2}\n" for i in range(20)) + "错\t負面\n")
    write(tmp_path / "dev.tsv", "中\t1\n差\t0\n坏\t負面\n")
    b = load_data(cfg("data.label_map={0: 负面, 1: 正面, 負面: 负面, 中性: neutral}"), tmp_path)
    assert b.label_map.names == ["正面", "负面"] and not b.label_map.from_ids
    names = b.label_map.names
    assert [names[y] for y in b.dev.labels] == ["正面", "负面", "负面"]
    want = {f"文{i}": ["负面", "正面"][i % 2] for i in range(20)} | {"错": "负面", "中": "正面", "差": "负面", "坏": "负面"}
    for split in (b.train, b.dev):
        assert [names[y] for y in split.labels] == [want[r.text] for r in split.rows]
    note = next(n for n in b.notes if n.startswith("labels: data.label_map"))
    assert note == ("labels: data.label_map renamed '0' (11) -> '负面', '1' (11) -> '正面', '負面' (2) -> '负面'; no "
                    "label '中性' in the data (a typo in the map?)")


def test_label_map_matches_a_reference_on_random_multi_label_rows():
    import random
    from collections import Counter

    from tricklab.data.labels import relabel, split_multi
    from tricklab.data.readers import Row

    rng = random.Random(0)
    names = ["a", "b", "c", "d", "e"]
    mapping = {"a": "x", "b": "x", "c": "y"}
    raws = []
    for _ in range(300):
        labs = rng.sample(names, rng.randint(1, 3))
        raws.append(json.dumps(labs) if rng.random() < 0.3 else labs if rng.random() < 0.5 else "|".join(labs))
    rows = [Row(f"t{i}", None, raw, i + 1, "f") for i, raw in enumerate(raws)]
    used = Counter()
    relabel(rows, mapping, "|", used, multi=True)
    for r, raw in zip(rows, raws):
        parts = split_multi(raw, "|")
        want = list(dict.fromkeys(mapping.get(p, p) for p in parts))
        if any(p in mapping for p in parts):
            assert r.label == "|".join(want)
        else:
            assert r.label == raw                       # untouched, in its own form
    assert used == Counter(p for raw in raws for p in split_multi(raw, "|") if p in mapping)


@pytest.mark.parametrize("value", ["{a: null}", "{a: ''}", "{a: [x]}", "{a: true}"])
def test_label_map_values_must_be_class_names(value):
    from tricklab.config import validate

    with pytest.raises(ConfigError, match=r"config data.label_map: 'a': .*expected a label and the class"):
        validate(cfg(f"data.label_map={value}"))


def test_an_unknown_label_close_to_a_train_label_gets_the_map_that_fixes_it(tmp_path):
    import shlex

    write(tmp_path / "train.tsv", "".join(f"{t}\t{['其他', '退款'][i % 2]}\n" for i, t in enumerate(REVIEWS)))
    write(tmp_path / "dev.tsv", "新的\t其它\n旧的\t退款\n坏的\t投诉\n")
    msg = str(pytest.raises(DataError, load_data, cfg(), tmp_path).value)
    line = next(ln for ln in msg.splitlines() if "line 1:" in ln)
    assert "label '其它' does not occur in train" in line and "did you mean '其他'?" in line
    assert "line 3: label '投诉' does not occur in train" in msg and "add examples of it to train" in msg
    fix = shlex.split(line.split("map it: --set ")[1])[0]
    write(tmp_path / "dev.tsv", "新的\t其它\n旧的\t退款\n")
    b = load_data(cfg(fix), tmp_path)
    assert [b.label_map.names[y] for y in b.dev.labels] == ["其他", "退款"]


def test_repeated_rows_and_texts_shared_with_test_are_counted(tmp_path):
    rows = [(t, ["退款", "发票"][i % 2]) for i, t in enumerate(REVIEWS)]
    train = rows + rows[:3] + [(REVIEWS[4], "发票")]          # 3 repeats; REVIEWS[4] (退款) also as 发票
    write(tmp_path / "train.tsv", "".join(f"{t}\t{y}\n" for t, y in train))
    write(tmp_path / "dev.tsv", "全新的评论\t退款\n")
    write(tmp_path / "test.tsv", f"{REVIEWS[0]}\t退款\n{REVIEWS[1]}\t发票\n另一条\t退款\n")
    b = load_data(cfg(), tmp_path)
    note = next(n for n in b.notes if n.startswith("repeats: "))
    assert note == ("repeats: 3 of 12 train rows repeat an earlier row (text and label); 1 text carries more than one "
                    "label in train; 2 of 3 test texts are also in train (their scores measure memory as well as "
                    "generalisation)")
    assert len(b.train) == 12                                    # counted, never changed
    write(tmp_path / "train.tsv", "".join(f"{t}\t{y}\n" for t, y in rows))
    (tmp_path / "test.tsv").unlink()
    assert not any(n.startswith("repeats: ") for n in load_data(cfg(), tmp_path).notes)
    # pairs: the same first text with another second text is another example
    pairs = [(REVIEWS[i], REVIEWS[(i + 1) % 8], ["0", "1"][i % 2]) for i in range(8)]
    write(tmp_path / "train.tsv", "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pairs + [(REVIEWS[0], REVIEWS[5], "0"),
                                                                                    pairs[2]]))
    write(tmp_path / "dev.tsv", f"{REVIEWS[3]}\t{REVIEWS[4]}\t1\n{REVIEWS[3]}\t{REVIEWS[3]}\t1\n")
    note = next(n for n in load_data(cfg(), tmp_path).notes if n.startswith("repeats: "))
    assert note == ("repeats: 1 of 10 train rows repeat an earlier row (text and label); 1 of 2 dev texts are also in "
                    "train (their scores measure memory as well as generalisation)")


def test_label_map_edge_cases(tmp_path):
    from collections import Counter

    from tricklab.data.labels import relabel
    from tricklab.data.readers import Row

    rows = [Row("t", None, lab, 1, "f") for lab in ("a|b", "1.0|2", True, "[1]", "1.0")]
    relabel(rows, {"a": "x", 1: "one", "true": "yes"}, "|", Counter())         # single-label: names kept whole
    assert [r.label for r in rows] == ["a|b", "1.0|2", "yes", "[1]", "one"]
    rows = [Row("t", None, lab, 1, "f") for lab in ("a|b", "1.0|2")]
    relabel(rows, {"a": "x", 1: "one"}, "|", Counter(), multi=True)            # multi-label: each label, as a name
    assert [r.label for r in rows] == ["x|b", "one|2"]
    # regression targets are numbers, not names: refused
    write(tmp_path / "r.tsv", "".join(f"{t}\t{i * 0.5}\n" for i, t in enumerate(REVIEWS)))
    with pytest.raises(ConfigError, match="data.label_map: renames class labels, and r.tsv holds regression targets"):
        load_data(cfg("data.label_map={1: one}"), tmp_path / "r.tsv")


def test_the_unknown_label_fix_keeps_the_map_in_use_and_never_guesses_numbers(tmp_path):
    import shlex

    write(tmp_path / "train.tsv", "".join(f"{t}\t{['其他', '退款', '101', '102'][i % 4]}\n" for i, t in enumerate(REVIEWS)))
    write(tmp_path / "dev.tsv", "新的\t其它\n旧的\t103\n")
    msg = str(pytest.raises(DataError, load_data, cfg("data.label_map={退钱: 退款}"), tmp_path).value)
    line = next(ln for ln in msg.splitlines() if "line 1:" in ln)
    assert shlex.split(line.split("map it: --set ")[1])[0] == 'data.label_map={"退钱": "退款", "其它": "其他"}'
    line2 = next(ln for ln in msg.splitlines() if "line 2:" in ln)
    assert "did you mean" not in line2 and "add examples of it to train" in line2


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_a_gbk_file_reads_with_data_encoding_as_its_error_says(tmp_path, name):
    import shlex

    rows = [(t, ["退款", "发票"][i % 2]) for i, t in enumerate(REVIEWS)]
    body = ("用户问题,意图\n" + "".join(f"{t},{y}\n" for t, y in rows) if name.endswith(".csv") else
            "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows))
    write(tmp_path / name, body, enc="gb18030")
    msg = str(pytest.raises(DataError, load_data, cfg(), tmp_path / name).value)
    assert "most likely GBK/GB18030" in msg and "read it as such with --set data.encoding=gb18030" in msg
    fix = shlex.split(msg.split("read it as such with ")[1].split(", or convert")[0])[1]
    b = load_data(cfg(fix, "data.dev_ratio=0.25"), tmp_path / name)
    assert sorted(r.text for r in b.train.rows + b.dev.rows) == sorted(t for t, _ in rows)
    assert b.label_map.names == ["发票", "退款"]
    # a class file beside the data is read in the same encoding
    write(tmp_path / "ids.tsv", "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(REVIEWS)), enc="gb18030")
    write(tmp_path / "class.txt", "退款\n发票\n", enc="gb18030")
    assert load_data(cfg("data.encoding=gb18030"), tmp_path / "ids.tsv").label_map.names == ["退款", "发票"]
    # a GBK file with a damaged line: the setting in use is never the suggested fix
    (tmp_path / name).write_bytes(body.encode("gb18030").replace("发票".encode("gb18030"), b"\xff\xff", 1))
    msg = str(pytest.raises(DataError, load_data, cfg("data.encoding=gb18030"), tmp_path / name).value)
    assert "the file is not gb18030 (data.encoding)" in msg and "data.encoding=gb18030" not in msg.split("fix:")[1]
    # the setting on a UTF-8 file: named as such, with the fix back
    write(tmp_path / "u.csv", "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    msg = str(pytest.raises(DataError, load_data, cfg("data.encoding=big5"), tmp_path / "u.csv").value)
    assert "the file is not big5 (data.encoding)" in msg and "fix: --set data.encoding=utf-8" in msg


@pytest.mark.parametrize("value, says", [("gbkk", "unknown text encoding 'gbkk'"), ("utf-16", "cannot be read by line"),
                                         ("iso2022_kr", "cannot be read by line"), ("cp037", "cannot be read by line"),
                                         ("base64", "cannot be read by line")])
def test_bad_encodings_are_config_errors(value, says):
    from tricklab.config import validate

    with pytest.raises(ConfigError, match=f"config data.encoding: .*{says}"):
        validate(cfg(f"data.encoding={value}"))
