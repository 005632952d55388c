"""`tricklab predict` on files: every input format (txt, CSV, TSV, JSONL, JSON array, parquet, compressed) and
output format (JSONL, JSON, CSV, TSV, parquet), other columns passing through, pairs, the Python APIs
(predict_file, predict_iter), input order, streaming in bounded memory, progress, and bad input."""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import random
import sys
from pathlib import Path

import pytest

from conftest import CLASSES, make_text, tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main
from tricklab.errors import ConfigError, DataError
from tricklab.inference import files as files_mod
from tricklab.inference import outputs as outputs_mod
from tricklab.inference.predictor import Predictor
from tricklab.training import train

TEXTS = ["球赛冠军队员", "股市银行基金利率", "玩家游戏", "的了在是", "球赛股市", "电竞版本胜负", "利率", "我有和人"]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("predfiles")
    write_thucnews(d / "thuc", n_train=48, n_dev=12)
    train(tiny_cfg(tiny_model, "train.max_steps=3", "train.batch_size=16"), d / "thuc", out=d / "run", progress=False)
    return d / "run"


@pytest.fixture(scope="module")
def pred(run) -> Predictor:
    return Predictor.from_run(run, batch_size=4)


@pytest.fixture(scope="module")
def pair_run(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("predpairs")
    rng = random.Random(3)
    rows = []
    for _ in range(48):
        a, b = ("".join(rng.choice("球赛队员股市银行") for _ in range(5)) for _ in range(2))
        rows.append(f"{a}\t{b}\t{'same' if len(set(a) & set(b)) >= 3 else 'diff'}")
    (d / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    train(tiny_cfg(tiny_model, "train.max_steps=3"), d / "pairs.tsv", out=d / "run", progress=False)
    return d / "run"


def expected(pred: Predictor, texts: list, top_k: int = 1) -> list[dict]:
    return pred.predict(texts, top_k=top_k)


def same(got: dict, want: dict) -> None:
    assert got["label"] == want["label"] and float(got["score"]) == pytest.approx(want["score"], abs=1e-5)


def xlsx_rows(p: Path) -> list[dict]:
    """The first sheet's rows as dicts of its header, with the cell values as openpyxl reads them."""
    import openpyxl

    rows = list(openpyxl.load_workbook(p).worksheets[0].iter_rows(values_only=True))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- inputs

def test_csv_with_header_predicts_the_text_column_and_passes_ids_through(run, pred, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text('id,text,source\n17,球赛冠军队员,a\n18,"股市,银行 ""基金""",b\n\n19,玩家游戏,c\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["id"] for r in rows] == ["17", "18", "19"]                       # the header is not a text
    assert [r["source"] for r in rows] == ["a", "b", "c"]
    assert rows[1]["text"] == '股市,银行 "基金"'
    want = expected(pred, ["球赛冠军队员", '股市,银行 "基金"', "玩家游戏"])
    for r, w in zip(rows, want):
        same(r, w)
        assert json.loads(r["top_k"])[0][0] == w["label"]
    assert list(rows[0]) == ["id", "text", "source", "label", "score", "top_k"]
    assert out.read_bytes()[:3] == b"id,"                                     # plain UTF-8 in, no BOM out


@pytest.mark.parametrize("out_name", ["out.csv", "out.tsv", "out.jsonl"])
def test_a_csv_from_excel_gets_its_bom_back_for_excel(run, tmp_path, out_name):
    """Excel's "CSV UTF-8" starts with a BOM, and Excel reads a CSV without one in the local code page (mojibake for
    Chinese): predictions of such a file keep it, in CSV and TSV; JSONL never has one."""
    inp = tmp_path / "in.csv"
    inp.write_bytes("\ufeffid,用户问题\n1,球赛冠军队员\n2,股市银行\n".encode("utf-8"))
    out = tmp_path / out_name
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out)]) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (out_name != "out.jsonl")
    assert raw.decode("utf-8-sig").splitlines()[0].lstrip("{\"").startswith("id")


def test_semicolon_csv_is_read_by_its_first_line_and_says_so(run, pred, tmp_path, capsys):
    inp = tmp_path / "eu.csv"       # a spreadsheet saved where the decimal mark is a comma: ';' between cells
    inp.write_text('\ufeffid;review\n17;"球赛,冠军"\n18;股市银行\n19;玩家;多余\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "eu.csv: read as ';'-separated (its first line has no comma)" in err
    assert "eu.csv line 4: expected 2 semicolon-separated columns (id, review), found 3" in err
    one = tmp_path / "one.csv"          # one column whose texts hold ';': the header has none, so commas it is
    one.write_text("text\n" + "".join(f"球赛{i};冠军\n" for i in range(19)), encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(one), "--output", str(out), "--quiet"]) == 0
    assert [g["text"] for g in read_jsonl(out)] == [f"球赛{i};冠军" for i in range(19)]
    inp.write_text('id;review\n17;"球赛,冠军"\n18;股市银行\n', encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--quiet"]) == 0
    got = read_jsonl(out)
    assert [g["id"] for g in got] == ["17", "18"] and got[0]["review"] == "球赛,冠军"
    for g, w in zip(got, expected(pred, ["球赛,冠军", "股市银行"])):
        same(g, w)


def test_jsonl_with_extra_keys_keeps_them(run, pred, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    recs = [{"id": 1, "text": "球赛冠军", "meta": {"src": "x", "n": [1, 2]}}, {"id": 2, "text": "股市利率", "meta": None},
            {"text": "玩家游戏", "id": 3, "label": "game"}]
    inp.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--top-k", "2"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want = expected(pred, ["球赛冠军", "股市利率", "玩家游戏"], top_k=2)
    for g, r, w in zip(got, recs, want):
        assert {k: g[k] for k in r} == r                                         # every input key, unchanged
        same({"label": g["pred_label"] if "label" in r else g["label"], "score": g["score"]}, w)
        assert len(g["top_k"]) == 2
    assert got[2]["label"] == "game" and got[2]["pred_label"] == want[2]["label"]   # a gold label is kept
    assert len(got) == 3


def test_tsv_input_and_tsv_output_escape_tabs(run, pred, tmp_path):
    inp = tmp_path / "in.tsv"
    inp.write_text("sentence\tid\r\n球赛冠军\tx1\r\n股市利率\tx2\r\n", encoding="utf-8")
    out = tmp_path / "out.tsv"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--quiet", "--top-k", "2"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["sentence", "id", "label", "score", "top_k"]
    rows = [dict(zip(lines[0].split("\t"), ln.split("\t"))) for ln in lines[1:]]
    assert [r["id"] for r in rows] == ["x1", "x2"]
    for r, w in zip(rows, expected(pred, ["球赛冠军", "股市利率"], top_k=2)):
        same(r, w)
    w = outputs_mod.Writer(tmp_path / "esc.tsv")
    w.write([{"a": "x\ty\nz\\", "b": True, "c": None, "d": [1]}], [1])
    w.close(True)
    assert (tmp_path / "esc.tsv").read_text() == "a\tb\tc\td\nx\\ty\\nz\\\\\ttrue\t\t[1]\n"


@pytest.mark.parametrize("layout", ["pretty", "one_line", "jsonl_in_json"])
def test_json_array_input_streamed_across_blocks(run, pred, tmp_path, monkeypatch, layout):
    monkeypatch.setattr(files_mod, "BLOCK", 7)                                # elements span many read blocks
    recs = [{"doc": i, "content": t, "n": 1.5} for i, t in enumerate(TEXTS)]
    inp = tmp_path / "in.json"
    text = {"pretty": json.dumps(recs, ensure_ascii=False, indent=2), "one_line": json.dumps(recs, ensure_ascii=False),
            "jsonl_in_json": "\n".join(json.dumps(r, ensure_ascii=False) for r in recs)}[layout]
    inp.write_text(text, encoding="utf-8")
    out = tmp_path / "out.json"
    assert pred.predict_file(inp, out, log=None) == len(TEXTS)
    got = json.loads(out.read_text(encoding="utf-8"))                        # .json out: one JSON array
    assert [g["doc"] for g in got] == list(range(len(TEXTS))) and all(g["n"] == 1.5 for g in got)
    for g, w in zip(got, expected(pred, TEXTS)):
        same(g, w)


def test_json_array_errors_name_the_line(pred, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"text": "球赛"},\n  {"text": "股市",}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json line 3: element 2 is not valid JSON"):
        pred.predict_file(bad, tmp_path / "o.jsonl", log=None)
    (tmp_path / "num.json").write_text('[{"text": "球赛"}, 3]', encoding="utf-8")
    with pytest.raises(DataError, match=r"num.json line 1: expected a JSON object"):
        pred.predict_file(tmp_path / "num.json", tmp_path / "o.jsonl", log=None)
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob("*.part"))


def test_parquet_in_and_out_keeps_column_types(pred, tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(files_mod, "PARQUET_BATCH", 64)
    n = 250                                                                  # several record batches and row groups
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    table = pa.table({"id": pa.array(range(n), pa.int64()), "text": texts,
                      "tags": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int32()))})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=100)
    assert pred.predict_file(tmp_path / "in.parquet", tmp_path / "out.parquet", log=None, batch_size=90) == n
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.schema.field("id").type == pa.int64() and got.schema.field("tags").type == pa.list_(pa.int32())
    rows = got.to_pylist()
    assert [r["id"] for r in rows] == list(range(n)) and rows[5]["tags"] == [5, 6]
    want = {t: w for t, w in zip(TEXTS, expected(pred, TEXTS))}
    for r in rows[:: 17]:
        same(r, want[r["text"]])
        assert json.loads(r["top_k"])[0][0] == r["label"]


def test_parquet_without_pyarrow_says_how_to_install(run, tmp_path, monkeypatch, capsys):
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    real = files_mod.importlib.util.find_spec
    monkeypatch.setattr(files_mod.importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in.parquet" in err and "pip install 'tricklab[data]'" in err
    (tmp_path / "t.txt").write_text("球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "t.txt"), "--output", str(tmp_path / "o.parquet")]) == 2
    assert "pip install 'tricklab[data]'" in capsys.readouterr().err


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".zst"])
def test_compressed_inputs_are_read_transparently(run, pred, tmp_path, ext):
    raw = ("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXTS))).encode("utf-8")
    if ext == ".zst":
        zstd = pytest.importorskip("zstandard")
        data = zstd.ZstdCompressor().compress(raw)
    else:
        data = gzip.compress(raw) if ext == ".gz" else bz2.compress(raw)
    inp = tmp_path / f"in.csv{ext}"
    inp.write_bytes(data)
    out = tmp_path / "out.jsonl"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--quiet"]) == 0
    got = read_jsonl(out)
    assert [g["id"] for g in got] == [str(i) for i in range(len(TEXTS))]
    for g, w in zip(got, expected(pred, TEXTS)):
        same(g, w)
    if ext == ".gz":                    # compressed under a plain name: told by its bytes
        (tmp_path / "plain.csv").write_bytes(data)
        assert cli_main(["predict", "--run", str(run), str(tmp_path / "plain.csv"), "--output", str(out), "--quiet"]) == 0
        assert [g["id"] for g in read_jsonl(out)] == [str(i) for i in range(len(TEXTS))]
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(DataError, match="cut.csv.gz: could not read it as gzip data"):
        pred.predict_file(tmp_path / "cut.csv.gz", tmp_path / "o2.jsonl", log=None)


def test_pairs_from_csv_text_and_python(pair_run, tmp_path, capsys):
    p = Predictor.from_run(pair_run)
    pairs = [("球赛队员股", "球赛队员银"), ("股市银行球", "队员赛球员"), ("银行股市行", "银行股市球")]
    want = p.predict(pairs, top_k=2)
    inp = tmp_path / "p.csv"
    inp.write_text("qid,sentence1,sentence2\n" + "".join(f"q{i},{a},{b}\n" for i, (a, b) in enumerate(pairs)),
                   encoding="utf-8")
    assert cli_main(["predict", "--run", str(pair_run), str(inp), "--quiet", "--top-k", "2"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [g["qid"] for g in got] == ["q0", "q1", "q2"]
    for g, w in zip(got, want):
        same(g, w)
    (tmp_path / "p2.jsonl").write_text("".join(json.dumps({"left": a, "right": b}) + "\n" for a, b in pairs))
    assert p.predict_file(tmp_path / "p2.jsonl", tmp_path / "o.jsonl", text_column="left", text_b_column="right",
                          log=None) == 3
    for g, w in zip(read_jsonl(tmp_path / "o.jsonl"), want):
        same(g, w)
    (tmp_path / "p.txt").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    p.predict_file(tmp_path / "p.txt", tmp_path / "t.jsonl", log=None)
    got = read_jsonl(tmp_path / "t.jsonl")
    assert [(g["text_a"], g["text_b"]) for g in got] == pairs
    for g, w in zip(got, want):
        same(g, w)
    for g, w in zip(p.predict_iter(iter(pairs), top_k=2), want):
        same(g, w)
    got = list(p.predict_iter([{"text_a": a, "text_b": b, "n": i} for i, (a, b) in enumerate(pairs)]))
    assert [g["n"] for g in got] == [0, 1, 2]
    for g, w in zip(got, want):
        same(g, w)
    (tmp_path / "p3.txt").write_text("".join(f"{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(pairs)), encoding="utf-8")
    notes: list[str] = []               # a labelled pair file (text_a, text_b, label): the label is no part of text_b
    p.predict_file(tmp_path / "p3.txt", tmp_path / "t3.jsonl", log=notes.append)
    got = read_jsonl(tmp_path / "t3.jsonl")
    assert [(g["text_a"], g["text_b"]) for g in got] == pairs and any("first two as text_a and text_b" in n for n in notes)
    for g, w in zip(got, want):
        same(g, w)
    (tmp_path / "one.csv").write_text("text\n球赛\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"one.csv: this model classifies sentence pairs.*\(text\).*--text-b-column"):
        p.predict_file(tmp_path / "one.csv", tmp_path / "x.jsonl", log=None)
    (tmp_path / "one.txt").write_text("球赛队员\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"one.txt line 1: .*text_a<TAB>text_b"):
        p.predict_file(tmp_path / "one.txt", tmp_path / "x.jsonl", log=None)


def test_plain_text_stdin_stays_one_text_per_line(run, pred, monkeypatch, capsys):
    data = "\ufeff球赛冠军\n\n股市利率\t0\r\n{ not json\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8")), encoding="utf-8"))
    assert cli_main(["predict", "--run", str(run)]) == 0
    cap = capsys.readouterr()
    got = [json.loads(x) for x in cap.out.splitlines()]
    assert [g["text"] for g in got] == ["球赛冠军", "股市利率", "{ not json"]
    for g, w in zip(got, expected(pred, ["球赛冠军", "股市利率", "{ not json"])):
        same(g, w)
    assert "first column only" in cap.err
    jsonl = '{"text": "球赛冠军", "k": 1}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(jsonl.encode()), encoding="utf-8"))
    assert cli_main(["predict", "--run", str(run), "-", "--format", "jsonl", "--quiet"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["k"] == 1 and g["text"] == "球赛冠军" and g["label"] == expected(pred, ["球赛冠军"])[0]["label"]


def test_a_txt_of_json_objects_or_with_a_header_gets_a_warning(run, tmp_path, capsys):
    (tmp_path / "j.txt").write_text('{"text": "球赛"}\n{"text": "股市"}\n', encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "j.txt"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "look like JSON objects" in err and "--format jsonl" in err
    (tmp_path / "h.txt").write_text("id,text\n1,球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "h.txt"), "--quiet"]) == 0
    assert "looks like a header" in capsys.readouterr().err
    (tmp_path / "ok.txt").write_text("球赛冠军\n股市利率\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "ok.txt"), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_format_flag_overrides_the_extension(run, pred, tmp_path, capsys):
    (tmp_path / "data.dat").write_text('{"text": "球赛冠军", "id": 5}\n', encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "data.dat"), "--format", "jsonl", "--quiet"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["id"] == 5 and g["text"] == "球赛冠军"


# ---------------------------------------------------------------- columns

def test_text_column_is_found_when_unambiguous(pred, tmp_path):
    for name in ("text", "sentence", "content", "Review"):
        (tmp_path / "a.csv").write_text(f"id,{name}\n1,球赛冠军\n", encoding="utf-8")
        pred.predict_file(tmp_path / "a.csv", tmp_path / "a.jsonl", log=None)
        same(read_jsonl(tmp_path / "a.jsonl")[0], expected(pred, ["球赛冠军"])[0])
    (tmp_path / "b.csv").write_text("title,content\n球赛,股市利率银行\n", encoding="utf-8")
    notes: list[str] = []           # several known names: the one train would read (content before title), said
    pred.predict_file(tmp_path / "b.csv", tmp_path / "b.jsonl", log=notes.append)
    same(read_jsonl(tmp_path / "b.jsonl")[0], expected(pred, ["股市利率银行"])[0])
    assert any("several text columns (title, content): predicting 'content'" in n for n in notes), notes
    pred.predict_file(tmp_path / "b.csv", tmp_path / "b.jsonl", text_column="content", log=None)
    same(read_jsonl(tmp_path / "b.jsonl")[0], expected(pred, ["股市利率银行"])[0])


def test_missing_column_lists_the_available_ones(run, tmp_path, capsys):
    (tmp_path / "c.csv").write_text("id,blurb\n1,球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "c.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "c.csv" in err and "(id, blurb)" in err and "--text-column" in err
    assert "--format text" not in err           # a CSV line read as text would keep its quotes and other cells
    (tmp_path / "h.tsv").write_text("球赛冠军\t0\n股市利率\t1\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "h.tsv"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "(line 1 is read as the header)" in err and "if line 1 is already data (no header line), --format text" in err
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "c.csv"), "--text-column", "txt"]) == 2
    err = capsys.readouterr().err
    assert "no text column 'txt' (columns: id, blurb)" in err
    (tmp_path / "d.jsonl").write_text('{"body": "球赛"}\n{"title": "股市"}\n', encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "d.jsonl"), "--text-column", "body"]) == 2
    assert "d.jsonl line 2: no 'body' (keys: title)" in capsys.readouterr().err
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "d.jsonl"), "--text-b-column", "title"]) == 2
    assert "single texts" in capsys.readouterr().err


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".xlsx", ".txt"])
def test_output_format_follows_the_extension(pred, tmp_path, ext):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)),
                   encoding="utf-8")
    out = tmp_path / f"out{ext}"
    if ext in (".parquet", ".xlsx"):
        pytest.importorskip("pyarrow" if ext == ".parquet" else "openpyxl")
    assert pred.predict_file(inp, out, top_k=3, log=None) == len(TEXTS)
    if ext in (".jsonl", ".txt"):
        rows = read_jsonl(out)
    elif ext == ".json":
        rows = json.loads(out.read_text(encoding="utf-8"))
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    elif ext == ".xlsx":
        rows = xlsx_rows(out)
    else:
        rows = list(csv.DictReader(out.open(encoding="utf-8"), delimiter="\t" if ext == ".tsv" else ","))
    assert [str(r["id"]) for r in rows] == [str(i) for i in range(len(TEXTS))]
    assert [r["text"] for r in rows] == TEXTS
    for r, w in zip(rows, expected(pred, TEXTS, top_k=3)):
        same(r, w)
        top = r["top_k"] if isinstance(r["top_k"], list) else json.loads(r["top_k"])
        assert [t[0] for t in top] == [t[0] for t in w["top_k"]]
    assert not list(tmp_path.glob("*.part"))


def test_output_errors(run, pred, tmp_path, capsys):
    inp = tmp_path / "in.csv"
    inp.write_text("text\n球赛\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is the input file"):
        pred.predict_file(inp, inp, log=None)
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "o.parquet.gz")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --output {tmp_path / 'o.parquet.gz'}: parquet compresses its "
                                               f"own columns; fix: --output {tmp_path / 'o.parquet'}")
    (tmp_path / "mixed.jsonl").write_text('{"text": "球赛"}\n{"text": "股市", "extra": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"mixed.jsonl line 2: key 'extra' is not among the columns.*JSONL"):
        pred.predict_file(tmp_path / "mixed.jsonl", tmp_path / "m.csv", log=None)
    assert not (tmp_path / "m.csv").exists() and not list(tmp_path.glob("*.part"))
    pred.predict_file(tmp_path / "mixed.jsonl", tmp_path / "m.jsonl", log=None)
    assert read_jsonl(tmp_path / "m.jsonl")[1]["extra"] == 1


@pytest.mark.parametrize("name", ["out.jsonl.gz", "out.csv.bz2", "out.tsv.zst", "out.json.gz"])
def test_compressed_outputs_hold_the_uncompressed_bytes(run, tmp_path, name):
    """A compression suffix after the format's: the decompressed file is byte for byte the uncompressed output."""
    if name.endswith(".zst"):
        zstd = pytest.importorskip("zstandard")
    inp = tmp_path / "in.csv"
    inp.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    plain = tmp_path / name.rsplit(".", 1)[0]
    for out in (plain, tmp_path / name):
        assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--top-k", "2", "--quiet"]) == 0
    data = (tmp_path / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(data)
    elif name.endswith(".bz2"):
        raw = bz2.decompress(data)
    else:
        raw = zstd.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert raw == plain.read_bytes() and raw.count(b"\n") >= len(TEXTS)
    assert not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------- bad input

def test_bad_lines_name_file_line_value_and_fix_before_any_prediction(run, tmp_path, capsys, monkeypatch):
    calls = []
    real = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    inp = tmp_path / "e.csv"
    inp.write_text("id,text\n" + "".join(f"{i},球赛\n" for i in range(3000)) + "3000,  \n3001,a,b\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "e.csv line 3002: empty text in 'text'; fix: fill it in or delete the line" in err
    assert "e.csv line 3003: expected 2 comma-separated columns (id, text), found 3: '3001,a,b'; fix: quote" in err
    assert calls == [] and not out.exists() and not list(tmp_path.glob("*.part"))  # checked before the model ran
    # without the check pass the same problem still stops the run, and no partial output is left
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--no-check", "--quiet"]) == 2
    assert "line 3002: empty text" in capsys.readouterr().err and calls and not out.exists()
    gbk = tmp_path / "g.txt"
    gbk.write_bytes("球赛\n".encode() + "股市利率\n".encode("gb18030"))
    assert cli_main(["predict", "--run", str(run), str(gbk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "g.txt line 2: undecodable bytes" in err and "GB18030" in err
    assert "iconv -f GB18030 -t UTF-8 " in err
    (tmp_path / "v.jsonl").write_text('{"text": "球赛"}\n{"text": ["a"]}\n{"text": "股市"\n', encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "v.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "v.jsonl line 2: 'text' is [\"a\"], not a text" in err and "v.jsonl line 3: not valid JSON" in err
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err


def test_on_invalid_skip_leaves_bad_records_out_and_lists_them(run, pred, tmp_path, capsys, monkeypatch):
    inp = tmp_path / "s.csv"
    inp.write_text("id,text\n1,球赛冠军\n2,  \n3,股市利率\n4,a,b\n5,玩家游戏\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out)]) == 2   # error: the hint says how
    assert "2 record(s) above are invalid; fix them, or --on-invalid skip" in capsys.readouterr().err
    bad = ["s.csv line 3: empty text in 'text'", "s.csv line 5: expected 2 comma-separated columns"]
    for extra in ([], ["--no-check"]):          # the check pass says it first; without it, the predict pass
        assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--on-invalid", "skip",
                         "--quiet", *extra]) == 0
        got = read_jsonl(out)
        assert [g["id"] for g in got] == ["1", "3", "5"]
        for g, w in zip(got, expected(pred, ["球赛冠军", "股市利率", "玩家游戏"])):
            same(g, w)
        err = capsys.readouterr().err
        assert err.count("--on-invalid skip: 2 invalid record(s) left out of the output") == 1, err
        assert all(b in err for b in bad)
    # standard input (never checked first): skipped as it streams, and said at the end
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        '{"text": "球赛"}\n{"text": ""}\nnot json\n{"text": "股市"}\n'.encode()), encoding="utf-8"))
    assert cli_main(["predict", "--run", str(run), "-", "--format", "jsonl", "--on-invalid", "skip", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(x)["text"] for x in cap.out.splitlines()] == ["球赛", "股市"]
    assert "2 invalid record(s) left out" in cap.err and "line 3: not valid JSON" in cap.err, cap.err
    # a bad first record is skipped too: the columns come from the next one
    (tmp_path / "first.jsonl").write_text('{"id": 1}\n{"text": "球赛"}\n{"id": 3}\n', encoding="utf-8")
    (tmp_path / "first.csv").write_text("id,text\n1,a,b\n2,股市\n", encoding="utf-8")
    for name, keep, said in (("first.jsonl", "球赛", ["first.jsonl line 1: no text column among (id)",
                                                     "first.jsonl line 3: no 'text' (keys: id)"]),
                             ("first.csv", "股市", ["first.csv line 2: expected 2 comma-separated columns"])):
        assert cli_main(["predict", "--run", str(run), str(tmp_path / name), "--on-invalid", "skip", "--quiet"]) == 0
        cap = capsys.readouterr()
        assert [json.loads(x)["text"] for x in cap.out.splitlines()] == [keep], (name, cap.err)
        assert f"{len(said)} invalid record(s)" in cap.err and all(x in cap.err for x in said), cap.err
    # nothing valid on standard input (never checked first): an error too
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": ""}\n'), encoding="utf-8"))
    assert cli_main(["predict", "--run", str(run), "-", "--format", "jsonl", "--on-invalid", "skip", "--quiet"]) == 2
    assert "no valid record to predict" in capsys.readouterr().err
    # many bad records in error mode: 20 listed, the count of the rest, and the way on, never hidden
    (tmp_path / "many.csv").write_text("id,text\n" + "".join(f"{i},\n" for i in range(25)), encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "many.csv")]) == 2
    err = capsys.readouterr().err
    assert "... and 5 more problems" in err and "25 record(s) above are invalid; fix them, or --on-invalid skip" in err
    # nothing valid: an error, and no output
    (tmp_path / "none.csv").write_text("id,text\n1, \n2,\n", encoding="utf-8")
    out.unlink()
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "none.csv"), "--output", str(out),
                     "--on-invalid", "skip"]) == 2
    assert "none.csv: no valid record to predict: --on-invalid skip left out all 2" in capsys.readouterr().err
    assert not out.exists()
    # many bad records: skip lists the first MAX_PROBLEMS and counts the rest; error stops reading there
    monkeypatch.setattr(files_mod, "MAX_PROBLEMS", 2)
    (tmp_path / "m.csv").write_text("id,text\n" + "".join(f"{i},\n" for i in range(5)) + "9,球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "m.csv"), "--on-invalid", "skip", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(x)["id"] for x in cap.out.splitlines()] == ["9"]
    assert "5 invalid record(s)" in cap.err and "m.csv line 3: empty" in cap.err and "m.csv line 4:" not in cap.err
    assert "... and 3 more" in cap.err
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "m.csv: stopped reading at 2 problems" in err and "these record(s) above are invalid" in err
    with pytest.raises(ConfigError, match="--on-invalid drop: expected one of error, skip"):
        pred.predict_file(inp, tmp_path / "x.jsonl", on_invalid="drop")


def test_blank_lines_of_a_text_input_are_counted(run, pred, tmp_path, capsys):
    """Plain text skips blank lines; the output then has fewer rows than the input has lines, and says so."""
    inp = tmp_path / "b.txt"
    inp.write_text("\n球赛冠军\n\n\n股市利率\n\n玩家游戏\n\n\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(x)["text"] for x in cap.out.splitlines()] == ["球赛冠军", "股市利率", "玩家游戏"]
    assert cap.err.count("b.txt: 4 blank line(s) skipped (line 1, 3, 4, 6): they get no output row, so the "
                         "output's rows do not line up with the input's lines") == 1, cap.err
    inp.write_text("球赛冠军\n  \n\t\n\u3000\n股市利率\n", encoding="utf-8")     # whitespace only is blank too
    assert cli_main(["predict", "--run", str(run), str(inp), "--quiet"]) == 0
    assert "3 blank line(s) skipped (line 2, 3, 4)" in capsys.readouterr().err
    inp.write_text("球赛\n" + "\n" * 12 + "股市\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--quiet"]) == 0
    assert "12 blank line(s) skipped (line 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...)" in capsys.readouterr().err
    inp.write_text("球赛\n" + "\n" * 10 + "股市\n", encoding="utf-8")                # ten: all shown
    assert cli_main(["predict", "--run", str(run), str(inp), "--quiet"]) == 0
    assert "10 blank line(s) skipped (line 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)" in capsys.readouterr().err
    inp.write_text("球赛\n股市\n\n", encoding="utf-8")        # trailing blank lines shift no row: no note
    assert cli_main(["predict", "--run", str(run), str(inp), "--quiet"]) == 0
    assert "blank" not in capsys.readouterr().err


def test_excel_in_and_out_keeps_the_sheet_and_its_values(run, pred, tmp_path, capsys):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "待预测"
    for r in (["编号", "评论", None, "金额"], [17, "球赛冠军队员", None, 2.5], [None, None, None, None],
              [18, "股市银行利率", "note", None], [19, "=玩家游戏", None, 3]):
        ws.append(r)
    ws["B5"].data_type = "s"                           # a text that starts with '=' (not a formula)
    notes = wb.create_sheet("说明")
    notes.append(["read me"])
    notes.append(["then predict"])
    inp = tmp_path / "in.xlsx"
    wb.save(inp)
    out = tmp_path / "out.xlsx"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "in.xlsx: read sheet '待预测'; other sheets: '说明'; --sheet NAME to read another" in err
    rows = xlsx_rows(out)
    assert [list(r)[:4] for r in rows[:1]] == [["编号", "评论", "C", "金额"]]        # an empty header cell: its letter
    assert [r["编号"] for r in rows] == [17, 18, 19] and [r["金额"] for r in rows] == [2.5, None, 3]   # values kept
    assert [r["评论"] for r in rows] == ["球赛冠军队员", "股市银行利率", "=玩家游戏"] and rows[1]["C"] == "note"
    cells = openpyxl.load_workbook(out).worksheets[0]
    assert cells["B4"].data_type == "s"                # stored as text: Excel shows it, never runs it
    for r, w in zip(rows, expected(pred, ["球赛冠军队员", "股市银行利率", "=玩家游戏"], top_k=1)):
        same(r, w)
        assert json.loads(r["top_k"])[0][0] == w["label"]
    # a control character a sheet cannot hold (from a JSONL input) is left out, and the run says so
    (tmp_path / "ctl.jsonl").write_text(json.dumps({"text": "股市\x01利率"}) + "\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "ctl.jsonl"), "--output", str(out), "--quiet"]) == 0
    assert "out.xlsx: 1 cell(s) held control characters an Excel sheet cannot hold" in capsys.readouterr().err
    assert xlsx_rows(out)[0]["text"] == "股市利率" and xlsx_rows(out)[0]["label"] == expected(pred, ["股市\x01利率"])[0]["label"]
    # --sheet by name or index; problems name the sheet's row; JSONL out holds the same values
    assert pred.predict_file(inp, tmp_path / "p.jsonl", sheet=0, log=None, check=False) == 3   # the Python API
    assert [r["编号"] for r in read_jsonl(tmp_path / "p.jsonl")] == [17, 18, 19]
    assert cli_main(["predict", "--run", str(run), str(inp), "--sheet", "说明"]) == 2
    assert "in.xlsx: no text column among (read me)" in capsys.readouterr().err
    ws.append([20, None, None, None])
    wb.save(inp)
    assert cli_main(["predict", "--run", str(run), str(inp), "--sheet", "0"]) == 2
    assert "in.xlsx row 6: empty text in '评论'" in capsys.readouterr().err
    assert cli_main(["predict", "--run", str(run), str(inp), "--sheet", "9"]) == 2
    assert "sheet 9 not found: the workbook has 2 sheet(s) ('待预测', '说明')" in capsys.readouterr().err
    # wrong uses: --sheet on a CSV, a compressed workbook output, a broken workbook, a text file named .xlsx
    (tmp_path / "in.csv").write_text("text\n球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.csv"), "--sheet", "x"]) == 2
    assert "--sheet x: " in capsys.readouterr().err
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "o.xlsx.gz")]) == 2
    assert "xlsx compresses its own content; fix: --output" in capsys.readouterr().err
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "预测.xls")]) == 2
    assert f"predictions are written as .xlsx, not .xls; fix: --output {tmp_path / '预测.xlsx'}" in capsys.readouterr().err
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "broken.xlsx")]) == 2
    assert "broken.xlsx: cannot read it as an Excel workbook" in capsys.readouterr().err
    (tmp_path / "text.xlsx").write_text("text\n球赛\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "text.xlsx")]) == 2
    assert "says an Excel workbook, but the file is text" in capsys.readouterr().err


def test_excel_dates_stay_dates_in_a_workbook_and_become_iso_text_elsewhere(run, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    from datetime import date, datetime

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["text", "下单日期", "时间"])
    ws.append(["球赛冠军", date(2024, 9, 23), datetime(2024, 9, 23, 8, 30)])
    ws.append([datetime(2024, 1, 2), date(2024, 9, 24), None])         # a date where a text should be: its text
    wb.save(tmp_path / "in.xlsx")
    out = tmp_path / "out.xlsx"
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.xlsx"), "--output", str(out), "--quiet"]) == 0
    rows = xlsx_rows(out)
    assert rows[0]["下单日期"] == datetime(2024, 9, 23) and rows[0]["时间"] == datetime(2024, 9, 23, 8, 30)
    assert rows[1]["text"] == datetime(2024, 1, 2)                      # passed through as it was
    for ext in (".jsonl", ".csv"):
        assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.xlsx"), "--output", str(tmp_path / f"o{ext}"),
                         "--quiet"]) == 0
        got = read_jsonl(tmp_path / "o.jsonl") if ext == ".jsonl" else list(csv.DictReader(open(tmp_path / "o.csv",
                                                                                               encoding="utf-8-sig")))
        assert [g["下单日期"] for g in got] == ["2024-09-23", "2024-09-24"] and got[0]["时间"] == "2024-09-23 08:30:00"
        assert got[1]["text"] == "2024-01-02"


def test_excel_title_rows_hidden_sheets_long_cells_and_evaluate(run, pred, tmp_path, capsys, monkeypatch):
    openpyxl = pytest.importorskip("openpyxl")
    from test_data_formats import set_dimension

    wb = openpyxl.Workbook()
    lookup = wb.active
    lookup.title, lookup.sheet_state = "codes", "hidden"
    lookup.append(["code"])
    ws = wb.create_sheet("data")
    ws.append(["导出 2024"])
    ws.append(["id", "text", "label"])
    rows = [[i, t, y] for i, (t, y) in enumerate(zip(TEXTS, [0, 1, 2, 0] * 2))]    # class ids, as the run trained on
    for r in rows:
        ws.append(r)
    ws.append([99, True, 0])                                 # TRUE in the text column reads "true", as in train
    inp = tmp_path / "in.xlsx"
    wb.save(inp)
    set_dimension(inp, "A1")                                 # a wrong size record: every row is read all the same
    out = tmp_path / "out.jsonl"
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(out), "--quiet"]) == 0
    assert ("in.xlsx: read sheet 'data'; row 1 above the header passed over; other sheets: 'codes' (hidden); "
            "--sheet NAME to read another") in capsys.readouterr().err
    got = read_jsonl(out)
    assert [g["id"] for g in got] == [r[0] for r in rows] + [99] and got[-1]["text"] is True
    for g, w in zip(got, expected(pred, TEXTS + ["true"])):
        same({"label": g["pred_label"], "score": g["score"]}, w)          # (the input has a gold `label`)
    # evaluate reads the same workbook: the gold labels of its label column
    assert cli_main(["evaluate", "--run", str(run), "--data", str(inp), "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "eval_in.json").read_text())
    names = ["sports", "finance", "game"]
    want = sum(w["label"] == names[y] for w, y in zip(expected(pred, TEXTS + ["true"]), [r[2] for r in rows] + [0]))
    assert m["n"] == 9 and m["accuracy"] == pytest.approx(want / 9)
    # a cell longer than a sheet holds is cut, with a note; more rows than a sheet holds: refused before predicting
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": "球赛" * 20000}) + "\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "long.jsonl"), "--output", str(tmp_path / "l.xlsx"),
                     "--quiet"]) == 0
    assert "l.xlsx: 1 cell(s) were longer than the 32,767 characters an Excel cell holds" in capsys.readouterr().err
    assert len(xlsx_rows(tmp_path / "l.xlsx")[0]["text"]) == 32767
    import tricklab.data.excel as excel

    monkeypatch.setattr(excel, "MAX_ROWS", 5)
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "big.xlsx"), "--quiet"]) == 2
    assert "9 rows and a header do not fit in an Excel sheet (5 rows at most)" in capsys.readouterr().err
    assert not (tmp_path / "big.xlsx").exists()


def test_the_text_column_train_read_is_predicts_default(tiny_model, tmp_path, capsys):
    """Trained on a column with a name of its own (found as the only column left), predict reads that column of a
    new file without --text-column, and the in-memory API does the same."""
    rows = [(t, y) for t, y in zip(TEXTS * 4, ["sports", "finance", "game", "sports"] * 8)]
    (tmp_path / "train.csv").write_text("comment_body,label\n" + "".join(f"{t},{y}\n" for t, y in rows),
                                        encoding="utf-8")
    train(tiny_cfg(tiny_model, "train.max_steps=2"), tmp_path / "train.csv", out=tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "model" / "tricklab.json").read_text())
    assert meta["data"]["columns"] == {"text": "comment_body"}
    (tmp_path / "new.csv").write_text("id,note,Comment_Body\n1,x,球赛冠军\n2,y,股市银行\n", encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["predict", "--run", str(tmp_path / "run"), str(tmp_path / "new.csv")]) == 0
    out = capsys.readouterr()
    assert "note: predicting column 'Comment_Body', the text column of the training data" in out.err
    p = Predictor.from_run(tmp_path / "run")
    got = [json.loads(x) for x in out.out.splitlines()]
    for g, w in zip(got, p.predict(["球赛冠军", "股市银行"])):
        same(g, w)
    assert got[0]["score"] != got[1]["score"]                          # the two texts are told apart
    recs = list(p.predict_iter([{"id": 1, "comment_body": "球赛冠军"}]))
    same(recs[0], got[0])
    # a known text name there and train's column too: train's column wins, and the run says so
    (tmp_path / "both.csv").write_text("text,comment_body\n股市银行,球赛冠军\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(tmp_path / "run"), str(tmp_path / "both.csv")]) == 0
    same(json.loads(capsys.readouterr().out), got[0])


@pytest.mark.parametrize("name, head, what", [
    ("labelled.zip", b"PK\x03\x04\x14\x00\x06\x00", "a ZIP archive (an Excel .xlsx is one)"),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 / OLE file"),
    ("notes.txt", "球赛\n".encode("utf-16"), "UTF-16 text"),
])
def test_binary_inputs_are_named_not_read_as_text(run, tmp_path, capsys, name, head, what):
    (tmp_path / name).write_bytes(head + b"\x00" * 64)
    assert cli_main(["predict", "--run", str(run), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{name}: the file is {what}" in err and "undecodable" not in err


# ---------------------------------------------------------------- Python APIs, order, memory, progress

def test_predict_iter_yields_in_order_lazily(pred):
    rng = random.Random(1)
    texts = [make_text(rng, rng.choice(list(CLASSES))) * rng.randint(1, 4) for _ in range(250)]  # lengths vary
    want = pred.predict(texts, top_k=2)
    got = list(pred.predict_iter(iter(texts), 16, top_k=2))
    assert len(got) == len(texts)
    for g, w in zip(got, want):
        same(g, w)
    recs = [{"k": i, "sentence": t} for i, t in enumerate(texts)]
    got = list(pred.predict_iter(recs, 32))
    assert [g["k"] for g in got] == list(range(len(texts))) and all(g["sentence"] == t for g, t in zip(got, texts))
    for g, w in zip(got, want):
        same(g, w)
    consumed = []

    def gen():
        for t in texts:
            consumed.append(t)
            yield t
    first = next(pred.predict_iter(gen(), 10))
    same(first, want[0])
    assert len(consumed) == 10                                               # lazy: one chunk read, not the input
    with pytest.raises(DataError, match=r"input item 2: empty text in 'sentence'"):
        list(pred.predict_iter([{"sentence": "球赛"}, {"sentence": " "}]))


def test_predict_file_python_api_and_order(pred, tmp_path):
    rng = random.Random(2)
    texts = [make_text(rng, rng.choice(list(CLASSES))) * rng.randint(1, 5) for _ in range(300)]
    inp = tmp_path / "in.csv"
    with inp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "text"])
        w.writerows([[i, t] for i, t in enumerate(texts)])
    n = pred.predict_file(inp, tmp_path / "o.jsonl", text_column="text", batch_size=64, log=None, top_k=2)
    got = read_jsonl(tmp_path / "o.jsonl")
    assert n == 300 and [g["row"] for g in got] == [str(i) for i in range(300)]
    for g, w in zip(got, pred.predict(texts, top_k=2)):                     # the in-memory path agrees
        same(g, w)


@pytest.mark.parametrize("n", [100, 1000])
def test_rows_held_at_once_do_not_grow_with_the_input(pred, tmp_path, monkeypatch, n):
    """A spy on the reader and the writer: read - written never exceeds one chunk, whatever the input size;
    each chunk reaches the disk before the next is read."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"i": i, "text": TEXTS[i % 8]}, ensure_ascii=False) + "\n" for i in range(n)),
                   encoding="utf-8")
    state = {"read": 0, "written": 0, "held": 0, "batch": 0, "sizes": []}
    real_records, real_write, real_predict = files_mod.records, outputs_mod.Writer.write, Predictor.predict

    def records(src, log=None):
        for item in real_records(src, log):
            state["read"] += 1
            state["held"] = max(state["held"], state["read"] - state["written"])
            yield item

    def write(self, rows, lines):
        real_write(self, rows, lines)
        state["written"] += len(rows)
        state["sizes"].append(self.path.stat().st_size)                     # flushed: on disk already

    def predict(self, texts, *a, **k):
        state["batch"] = max(state["batch"], len(texts))
        return real_predict(self, texts, *a, **k)
    monkeypatch.setattr(files_mod, "records", records)
    monkeypatch.setattr(outputs_mod.Writer, "write", write)
    monkeypatch.setattr(Predictor, "predict", predict)
    assert pred.predict_file(inp, tmp_path / "o.jsonl", batch_size=25, check=False, log=None) == n
    assert state["written"] == n and state["batch"] == 25
    assert state["held"] <= 26                                               # one chunk (+ the one that ends it)
    assert state["sizes"] == sorted(state["sizes"]) and len(set(state["sizes"])) == n // 25
    assert [r["i"] for r in read_jsonl(tmp_path / "o.jsonl")] == list(range(n))


def test_progress_bar_on_stderr_with_total_rate_and_eta(run, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("".join(f"{TEXTS[i % 8]}\n" for i in range(40)), encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "o.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "predict" in err and "40/40" in err and "texts/s" in err and "<" in err      # total, rate, ETA
    assert cli_main(["predict", "--run", str(run), str(inp), "--output", str(tmp_path / "o.jsonl"), "--quiet"]) == 0
    assert "texts/s" not in capsys.readouterr().err
    assert files_mod.quick_count(files_mod.open_source(inp)) == 40
    (tmp_path / "h.csv").write_text("text\na\nb", encoding="utf-8")
    assert files_mod.quick_count(files_mod.open_source(tmp_path / "h.csv")) == 2
