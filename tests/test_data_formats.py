"""Data inputs: every file format (plain and compressed), binary formats named by their bytes, `datasets` folders,
hf:NAME offline from the local cache, in-memory data (Dataset, DatasetDict, DataFrame, lists), the same one-line
errors for all of them, the token cache shared by a grid, and the provenance of non-file data."""
from __future__ import annotations

import bz2
import glob
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main
from tricklab.config import Config
from tricklab.data import load_data
from tricklab.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
zstd = pytest.importorskip("zstandard")
import pyarrow.parquet as pq  # noqa: E402

datasets.disable_progress_bars()
ROOT = Path(__file__).resolve().parents[1]
RECORDS = [{"text": t, "label": y} for t, y in
           [("球赛冠军队员", "sports"), ("股市银行利率", "finance"), ("玩家游戏版本", "game")] * 8]


def write_format(folder: Path, name: str, records: list[dict]) -> Path:
    """One file holding `records` in the format its name says (compressed by its last extension)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    base = name
    for ext in (".gz", ".bz2", ".zst"):
        base = base.removesuffix(ext)
    fmt = Path(base).suffix
    if fmt in (".parquet", ".arrow"):
        table = pa.Table.from_pylist(records)
        sink = pa.BufferOutputStream()
        if fmt == ".parquet":
            pq.write_table(table, sink)
        else:
            with pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
        data = sink.getvalue().to_pybytes()
    else:
        if fmt == ".jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        elif fmt == ".json":
            text = json.dumps(records, ensure_ascii=False, indent=1)
        elif fmt == ".csv":
            text = "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in records)
        else:   # THUCNews-style text<TAB>label, no header
            text = "".join(f"{r['text']}\t{r['label']}\n" for r in records)
        data = text.encode("utf-8")
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".bz2"):
        data = bz2.compress(data)
    elif name.endswith(".zst"):
        data = zstd.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


NAMES = ["train.txt", "train.tsv", "train.csv", "train.jsonl", "train.json", "train.parquet", "train.arrow",
         "train.csv.gz", "train.jsonl.bz2", "train.tsv.zst", "train.json.gz", "train.parquet.zst"]


@pytest.mark.parametrize("name", NAMES)
def test_every_format_reads_the_same_rows(tmp_path, name):
    path = write_format(tmp_path, name, RECORDS)
    b = load_data(Config(), path)
    rows = sorted(b.train.rows + b.dev.rows, key=lambda r: r.line)
    assert [(r.text, r.label) for r in rows] == [(r["text"], r["label"]) for r in RECORDS]
    assert b.label_map.names == ["finance", "game", "sports"]


@pytest.mark.parametrize("name,where", [("train.parquet", "train.parquet row 2: empty text in column 'text'"),
                                        ("train.arrow", "train.arrow row 2: empty text in column 'text'"),
                                        ("train.json", "train.json row 2: empty text in column 'text'"),
                                        ("train.jsonl.gz", "train.jsonl.gz line 3: empty text in column 'text'"),
                                        ("train.csv.zst", "train.csv.zst line 4: empty text"),
                                        ("train.txt.bz2", "train.txt.bz2 line 3: empty text")])
def test_a_bad_row_is_named_in_every_format(tmp_path, name, where, capsys):
    bad = [dict(r) for r in RECORDS]
    bad[2]["text"] = ""
    bad[5]["label"] = "nonsense" if name.startswith("train.txt") else None
    path = write_format(tmp_path / "d", name, bad)
    with pytest.raises(DataError) as e:
        load_data(Config(), path)
    assert where in str(e.value)
    assert str(path) in str(e.value)
    # the CLI: one line per problem, exit 2, no traceback
    assert cli_main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--quiet",
                     "--set", "model.name=none"]) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err


def test_binary_formats_are_named_by_their_bytes_not_sent_to_iconv(tmp_path):
    # a Parquet file with a text extension is read as Parquet
    pq_bytes = write_format(tmp_path / "p", "x.parquet", RECORDS).read_bytes()
    (tmp_path / "train.txt").write_bytes(pq_bytes)
    assert len(load_data(Config(), tmp_path / "train.txt").train) > 0
    # an Excel file (a ZIP) saved as .csv: named, with the fix, and no iconv advice
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "train.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(DataError) as e:
        load_data(Config(), tmp_path / "x" / "train.csv")
    msg = str(e.value)
    assert "ZIP archive (an Excel .xlsx is one)" in msg and "export it as CSV" in msg and "iconv" not in msg
    # a .gz that is not gzip; UTF-16 text
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "train.csv.gz").write_bytes(b"text,label\n")
    with pytest.raises(DataError, match="the name says gzip-compressed, but the file is plain text"):
        load_data(Config(), tmp_path / "y" / "train.csv.gz")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "train.tsv").write_bytes("text\tlabel\n球赛\ta\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 text; fix: convert it to UTF-8"):
        load_data(Config(), tmp_path / "z" / "train.tsv")
    # GBK is still recognised as such (lines long enough to tell it from EUC-KR, as real files are)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "train.txt").write_bytes("球赛冠军队员今晚夺得总决赛冠军\t0\n股市银行利率下调基金上涨\t1\n".encode("gbk"))
    with pytest.raises(DataError, match="GBK/GB18030.*iconv"):
        load_data(Config(), tmp_path / "g" / "train.txt")


def test_a_folder_of_compressed_and_parquet_splits(tmp_path):
    d = tmp_path / "d"
    write_format(d, "train.csv.gz", RECORDS)
    write_format(d, "dev.parquet", RECORDS[:6])
    write_format(d, "test.jsonl.zst", RECORDS[:3])
    b = load_data(Config(), d)
    assert (len(b.train), len(b.dev), len(b.test)) == (24, 6, 3)


def test_text_formats_need_no_optional_package(tmp_path):
    """The core reads txt/tsv/csv/jsonl/json (and .gz) without datasets/pyarrow/pandas/zstandard, and a format
    that needs one says which extra to install."""
    for name in ("train.csv.gz", "train.json", "train.jsonl", "train.txt"):
        write_format(tmp_path / name.replace(".", "_"), name, RECORDS)
    write_format(tmp_path / "pq", "train.parquet", RECORDS)
    write_format(tmp_path / "zs", "train.csv.zst", RECORDS)
    code = f"""
import sys
for m in ("datasets", "pyarrow", "pandas", "zstandard"):
    sys.modules[m] = None
from tricklab.config import Config
from tricklab.data import load_data
from tricklab.errors import DataError
from pathlib import Path
root = Path({str(tmp_path)!r})
for d in ("train_csv_gz", "train_json", "train_jsonl", "train_txt"):
    assert len(load_data(Config(), root / d).train) > 0, d
for d in ("pq", "zs"):
    try:
        load_data(Config(), root / d)
    except DataError as e:
        print(e)
"""
    import tricklab

    env = dict(os.environ, PYTHONPATH=str(Path(tricklab.__file__).resolve().parents[1]))   # the tree under test
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'tricklab[data]'" in ln for ln in lines), lines
    assert "needs the Python package pyarrow" in lines[0] and "needs the Python package zstandard" in lines[1]


def _dataset(records: list[dict], class_label: bool = True):
    names = ["finance", "game", "sports"]
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=names) if class_label else datasets.Value("string")})
    rows = [{"text": r["text"], "label": names.index(r["label"]) if class_label else r["label"]} for r in records]
    return datasets.Dataset.from_list(rows, features=feats)


def test_datasets_folders_saved_with_save_to_disk(tmp_path):
    dd = datasets.DatasetDict({"train": _dataset(RECORDS), "validation": _dataset(RECORDS[:6]),
                               "test": _dataset(RECORDS[:3])})
    dd.save_to_disk(str(tmp_path / "dd"))
    b = load_data(Config(), tmp_path / "dd")
    assert (len(b.train), len(b.dev), len(b.test)) == (24, 6, 3)
    assert b.label_map.names == ["finance", "game", "sports"] and b.label_map.from_ids   # the ClassLabel's names
    assert b.dev.source == f"{tmp_path / 'dd'}[validation]"
    _dataset(RECORDS, class_label=False).save_to_disk(str(tmp_path / "one"))     # a single Dataset: train only
    b = load_data(Config(), tmp_path / "one")
    assert len(b.train) + len(b.dev) == 24 and "held out" in " ".join(b.notes)


def make_hf_cache(cache: Path, name: str, records: list[dict]) -> None:
    """What `load_dataset(name)` leaves in the datasets cache when online (built here from local JSONL: no network)."""
    from datasets.packaged_modules.json.json import Json

    src = cache.parent / "src"
    src.mkdir(parents=True)
    for split, recs in (("train", records), ("validation", records[:6])):
        (src / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    Json(cache_dir=str(cache), dataset_name=name, hash="0123abcd",
         data_files={s: str(src / f"{s}.jsonl") for s in ("train", "validation")}).download_and_prepare()
    [cfg_dir] = glob.glob(str(cache / name / "default-*"))
    os.rename(cfg_dir, cache / name / "default")
    for f in src.iterdir():
        f.unlink()
    src.rmdir()


def test_hf_dataset_offline_from_the_local_cache(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    make_hf_cache(tmp_path / "hf", "tricklab-tiny", RECORDS)
    b = load_data(Config(), "hf:tricklab-tiny")
    assert (len(b.train), len(b.dev)) == (24, 6) and b.train.source == "hf:tricklab-tiny[train]"
    with pytest.raises(DataError, match=r"hf:no-such-set: cannot load the dataset .*offline, it must be in the local"):
        load_data(Config(), "hf:no-such-set")
    # end to end: the CLI, run.json's digest of the rows, the model card's dataset
    out = tmp_path / "run"
    assert cli_main(["train", "--data", "hf:tricklab-tiny", "--out", str(out), "--quiet", "--set",
                     f"model.name={tiny_model}", "--set", "train.max_steps=2", "--set", "data.max_length=16"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["data"]["args"]["data"] == "hf:tricklab-tiny"
    assert info["data"]["files"]["train"]["rows"] == 24 and len(info["data"]["files"]["train"]["sha256"]) == 64
    assert "tricklab-tiny" in (out / "model" / "README.md").read_text(encoding="utf-8")
    # `tricklab evaluate` reads the new file formats too (a compressed Parquet file here)
    test_file = write_format(tmp_path / "t", "test.parquet.gz", RECORDS[:6])
    assert cli_main(["evaluate", "--run", str(out), "--data", str(test_file)]) == 0
    assert json.loads((out / "eval_test.json").read_text())["n"] == 6


@pytest.mark.parametrize("kind", ["list", "tuples", "DataFrame", "Dataset", "DatasetDict"])
def test_train_takes_in_memory_data(tiny_model, tmp_path, kind):
    from tricklab.training import train

    data = {"list": RECORDS, "tuples": [(r["text"], r["label"]) for r in RECORDS],
            "DataFrame": pd.DataFrame(RECORDS), "Dataset": _dataset(RECORDS),
            "DatasetDict": datasets.DatasetDict({"train": _dataset(RECORDS), "validation": _dataset(RECORDS[:6])})}[kind]
    out = tmp_path / "run"
    m = train(tiny_cfg(tiny_model, "train.max_steps=2"), data=data, out=out, progress=False)
    assert "accuracy" in m
    files = json.loads((out / "run.json").read_text())["data"]["files"]
    assert files["train"]["rows"] == 24 and len(files["train"]["sha256"]) == 64
    assert json.loads((out / "run.json").read_text())["data"]["args"]["data"].startswith("<in-memory ")


@pytest.mark.parametrize("kind,where", [
    ("list", "list row 3: empty text in column 'text'"),
    ("tuples", "list row 3: empty text in column 'text'"),
    ("DataFrame", "DataFrame row 3: empty text in column 'text'"),
    ("Dataset", "Dataset row 3: empty text in column 'text'")])
def test_in_memory_errors_name_the_row_index_and_column(kind, where):
    recs = [dict(r) for r in RECORDS]
    recs[3]["text"] = " "
    recs[7]["label"] = None
    data = {"list": recs, "tuples": [(r["text"], r["label"]) for r in recs], "DataFrame": pd.DataFrame(recs),
            "Dataset": datasets.Dataset.from_list(recs)}[kind]
    with pytest.raises(DataError) as e:
        load_data(Config(), data)
    msg = str(e.value)
    assert where in msg
    assert "row 7: empty label in column" in msg or kind == "tuples" and "row 7: empty label" in msg
    with pytest.raises(DataError, match="a set is not data tricklab reads"):
        load_data(Config(), {1, 2})


def test_a_grid_tokenises_once_and_every_later_run_reads_the_cache(tiny_model, tmp_path, monkeypatch):
    from tricklab.ablation.compare import compare
    from tricklab.data import cache

    calls = []
    real = cache.encode

    def counting(tok, texts, *a, **k):
        calls.append(len(texts))
        return real(tok, texts, *a, **k)

    monkeypatch.setattr(cache, "encode", counting)
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = write_thucnews(tmp_path / "d", n_train=24, n_dev=9)
    base = tiny_cfg(tiny_model, "train.max_steps=2")
    compare(base, data, variants=["baseline", "rdrop"], seeds=[1, 2], out=tmp_path / "g", progress=lambda s: None)
    assert calls == [24, 9, 9], calls     # train, dev, test: once for the 4 runs
    logs = [(tmp_path / "g" / v / f"seed{s}" / "train.log").read_text() for v in ("baseline", "rdrop") for s in (1, 2)]
    assert sum("tokenised into the cache" in t for t in logs) == 1
    assert sum("tokens from the cache" in t for t in logs) == 3
    assert len(list((tmp_path / "cache" / "tokens").glob("*/*/ids.bin"))) == 3
    # another tokenizer setting is another key; data.cache=off keeps nothing on disk
    calls.clear()
    from tricklab.training import train
    train(tiny_cfg(tiny_model, "train.max_steps=1", "data.max_length=12"), data, out=tmp_path / "r2", progress=False)
    assert calls == [24, 9, 9]
    calls.clear()
    train(tiny_cfg(tiny_model, "train.max_steps=1", "data.cache=off"), data, out=tmp_path / "r3", progress=False)
    assert calls == [24, 9, 9] and len(list((tmp_path / "cache" / "tokens").glob("*/*/ids.bin"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "d", "g", "r2", "r3"]   # `off` is no folder


def test_cached_tokens_equal_direct_tokenisation(tiny_model, tmp_path, monkeypatch):
    """The memory-mapped rows (any held-out selection, chunk windows, pairs) are the tokenizer's own ids."""
    from transformers import AutoTokenizer

    from tricklab.data import encode
    from tricklab.data.truncation import Truncation
    from tricklab.training.setup import encode_splits

    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "cache"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    recs = [{"text": r["text"] * (1 + i % 5), "label": r["label"]} for i, r in enumerate(RECORDS)]
    for sets in ([], ["data.truncation=chunk", "data.max_length=12"]):
        cfg = tiny_cfg(tiny_model, *sets)
        b = load_data(cfg, recs)
        for _ in range(2):   # tokenised, then from the cache
            enc = encode_splits(cfg, b, tok, False, [])
            ref = encode(tok, [r.text for r in b.dev.rows], None, cfg.data.max_length, False, b.dev.labels,
                         Truncation.from_config(cfg.data))
            assert [list(x) for x in enc.dev.input_ids] == [list(x) for x in ref.input_ids]
            assert list(enc.dev.labels) == list(ref.labels) and list(enc.dev.lengths) == list(ref.lengths)
            assert (enc.dev.doc_index is None) == (ref.doc_index is None)
    pairs = [{"text_a": r["text"], "text_b": r["text"][::-1], "label": r["label"]} for r in RECORDS]
    cfg = tiny_cfg(tiny_model)
    b = load_data(cfg, pairs)
    enc = encode_splits(cfg, b, tok, False, [])
    ref = encode(tok, [r.text for r in b.train.rows], [r.text_b for r in b.train.rows], 24, False)
    assert [list(x) for x in enc.train.token_type_ids] == [list(x) for x in ref.token_type_ids]


def test_resume_refuses_changed_in_memory_data_unless_forced(tiny_model, tmp_path, monkeypatch):
    from tricklab.errors import TrickLabError
    from tricklab.training import loop, train

    real = loop.save_resume_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(run):
        real(run)
        raise Stop

    monkeypatch.setattr(loop, "save_resume_checkpoint", save_then_stop)
    df = pd.DataFrame(RECORDS * 2)
    with pytest.raises(Stop):
        train(tiny_cfg(tiny_model, "train.eval_every=2", "train.max_steps=4"), df, out=tmp_path / "run", progress=False)
    monkeypatch.setattr(loop, "save_resume_checkpoint", real)
    changed = df.copy()
    changed.loc[0, "text"] = "股市银行"
    with pytest.raises(TrickLabError, match="train differs: DataFrame .* rows"):
        train(None, changed, out=tmp_path / "run", resume=True, progress=False)
    with pytest.raises(TrickLabError, match="trained on in-memory data"):
        train(None, None, out=tmp_path / "run", resume=True, progress=False)
    train(None, changed, out=tmp_path / "run", resume=True, force=True, progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "train differs" in " ".join(info["resumes"][-1]["forced"])


def test_compare_in_subprocesses_needs_data_on_disk(tiny_model, tmp_path):
    from tricklab.ablation.compare import compare
    from tricklab.errors import ConfigError

    with pytest.raises(ConfigError, match="--jobs 2 trains in subprocesses.*save_to_disk"):
        compare(tiny_cfg(tiny_model), pd.DataFrame(RECORDS), variants=["baseline"], seeds=[1], jobs=2,
                out=tmp_path / "g", progress=lambda s: None)
    assert not (tmp_path / "g").exists()


def test_label_checks_name_the_row_of_tables_and_records(tmp_path):
    d = tmp_path / "d"
    write_format(d, "train.parquet", RECORDS)
    write_format(d, "dev.jsonl.gz", RECORDS[:2] + [{"text": "球赛", "label": "weather"}])
    write_format(d, "test.arrow", [{"text": "球赛", "label": None}] + RECORDS[:2])
    with pytest.raises(DataError) as e:
        load_data(Config(), d)
    msg = str(e.value)
    assert f"{d / 'dev.jsonl.gz'} line 3: label 'weather' does not occur in train" in msg
    assert f"{d / 'test.arrow'} row 0: empty label in column 'label'" in msg
    ids = [{"text": r["text"], "label": i % 3 + 1} for i, r in enumerate(RECORDS)]   # 1-based ids
    as_ids = Config()
    as_ids.data.label_type = "id"
    with pytest.raises(DataError, match=r"DataFrame row \d+: label ids run 1..3 with no 0: they look 1-based"):
        load_data(as_ids, pd.DataFrame(ids))


def test_a_tune_study_tokenises_once(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from tricklab.ablation.tune import tune
    from tricklab.data import cache

    calls = []
    real = cache.encode
    monkeypatch.setattr(cache, "encode", lambda tok, texts, *a, **k: calls.append(len(texts)) or real(tok, texts, *a, **k))
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "cache"))
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {log_uniform: [3.0e-4, 3.0e-3]}\n")
    data = write_format(tmp_path / "d", "train.parquet", RECORDS)     # held-out dev: selections of one source
    tune(tiny_cfg(tiny_model, "train.max_steps=2"), data, space=space, trials=3, out=tmp_path / "tune",
         pruner="none", verify_seeds=0)
    assert calls == [24], calls


# ---------------------------------------------------------------- Excel workbooks

openpyxl = pytest.importorskip("openpyxl")


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    """A workbook with these sheets (name -> rows of cell values), in this order."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def test_an_excel_sheet_reads_like_a_csv_with_its_row_numbers(tmp_path):
    from datetime import date

    from tricklab.data.columns import column_note
    from tricklab.data.readers import read_rows

    rows = [["评论", "标签", "备注"], ["球赛冠军队员", 1, None], [None, None, None], ["股市银行利率", 0.0, "x"],
            ["玩家游戏版本", 1, date(2024, 1, 2)], ["电竞", True, 3.5]]
    path = write_xlsx(tmp_path / "labelled.xlsx", {"标注": rows, "说明": [["readme"]]})
    got = read_rows(path, Config().data)
    # a Chinese header with one unknown name is a header in a sheet; 0.0 reads as "0", TRUE as "true"
    assert [(r.text, r.label, r.where) for r in got] == [
        ("球赛冠军队员", "1", f"{path} row 2"), ("股市银行利率", "0", f"{path} row 4"),
        ("玩家游戏版本", "1", f"{path} row 5"), ("电竞", "true", f"{path} row 6")]
    note = column_note(got.columns)
    assert note.startswith("columns of labelled.xlsx (sheet '标注'; other sheets: '说明'): text = '评论'")
    assert "unused: '备注'" in note and "--set 'data.sheet=标注' --set 'data.text_column=评论'" in note
    # another sheet by name (case-insensitive) or index; a missing one lists the sheets
    other = write_xlsx(tmp_path / "two.xlsx", {"notes": [["nothing", "here"]],
                                               "Data": [["text", "label"], ["球赛", "a"], ["股市", "b"]]})
    for sheet in ("data", 1, "1"):
        cfg = Config()
        cfg.data.sheet = sheet
        assert [r.text for r in read_rows(other, cfg.data)] == ["球赛", "股市"]
    cfg.data.sheet = "train"
    with pytest.raises(DataError, match=r"two.xlsx: no sheet named 'train'; its sheets are: 'notes', 'Data'"):
        read_rows(other, cfg.data)
    cfg.data.sheet = 2
    with pytest.raises(DataError, match=r"sheet 2 not found: the workbook has 2 sheet\(s\)"):
        read_rows(other, cfg.data)


def test_excel_cells_read_as_the_text_excel_shows():
    from datetime import date, datetime, time

    from tricklab.data.excel import cell_text, column_letter

    assert [cell_text(v) for v in (None, True, False, 3, 3.0, -2.0, 0.25, 1e20, "球赛 ")] == [
        "", "true", "false", "3", "3", "-2", "0.25", "1e+20", "球赛 "]
    assert cell_text(date(2024, 1, 2)) == "2024-01-02" and cell_text(datetime(2024, 1, 2)) == "2024-01-02"
    assert cell_text(datetime(2024, 1, 2, 9, 30)) == "2024-01-02 09:30:00" and cell_text(time(9, 5)) == "09:05:00"
    assert [column_letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]


def test_excel_problems_name_the_row_and_headerless_sheets_read_by_position(tmp_path):
    path = write_xlsx(tmp_path / "d" / "train.xlsx", {"Sheet1": [["text", "label"], ["球赛冠军", "sports"],
                                                                  ["", "finance"], ["玩家游戏", None]]})
    with pytest.raises(DataError) as e:
        load_data(Config(), path)
    assert f"{path} row 3: empty text; fix: fill it in or delete the row" in str(e.value)
    assert f"{path} row 4: empty label for '玩家游戏'" in str(e.value)
    bare = write_xlsx(tmp_path / "bare.xlsx", {"Sheet1": [["球赛冠军队员", "sports"], ["股市银行利率", "finance"]] * 6})
    b = load_data(Config(), bare)
    assert sorted({r.label for r in b.train.rows + b.dev.rows}) == ["finance", "sports"]
    # a broken workbook and a text file named .xlsx: one line each, with the fix
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(DataError, match=r"broken.xlsx: cannot read it as an Excel workbook .*save it again as .xlsx"):
        load_data(Config(), tmp_path / "broken.xlsx")
    (tmp_path / "locked.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)   # OLE: encrypted
    with pytest.raises(DataError, match=r"locked.xlsx: the workbook is password-protected .*remove the password"):
        load_data(Config(), tmp_path / "locked.xlsx")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.xlsx").write_text("text,label\n球赛,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"says an Excel workbook, but the file is text; fix: rename it"):
        load_data(Config(), tmp_path / "t" / "train.xlsx")
    # the CLI trains on a workbook, and evaluate reads one
    data = write_xlsx(tmp_path / "w" / "train.xlsx", {"Sheet1": [["text", "label"]] + [[r["text"], r["label"]]
                                                                                       for r in RECORDS]})
    write_xlsx(tmp_path / "w" / "dev.xlsx", {"Sheet1": [["text", "label"]] + [[r["text"], r["label"]]
                                                                             for r in RECORDS[:6]]})
    b = load_data(Config(), tmp_path / "w")                     # a folder of workbooks: train.xlsx, dev.xlsx
    assert (len(b.train), len(b.dev)) == (24, 6) and b.train.source == str(data)


def set_dimension(path: Path, ref: str) -> None:
    """Rewrite the first sheet's size record (<dimension ref=...>), as some programs write it wrong."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    name = "xl/worksheets/sheet1.xml"
    parts[name] = re.sub(rb'<dimension ref="[^"]*"', f'<dimension ref="{ref}"'.encode(), parts[name])
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)


def test_real_world_workbooks_title_rows_hidden_sheets_sizes_and_formulas(tmp_path):
    from tricklab.config import load_config
    from tricklab.data.columns import column_note
    from tricklab.data.readers import read_rows

    body = [[f"球赛冠军{i}", "sports" if i % 2 else "finance"] for i in range(100)]
    # a wrong size record (A1:B10) must not cut the sheet at row 10
    p = write_xlsx(tmp_path / "dim.xlsx", {"Sheet1": [["text", "label"]] + body})
    set_dimension(p, "A1:B10")
    assert len(read_rows(p, Config().data)) == 100
    # a title and a blank row above the header, a long header name, a hidden lookup sheet first
    wb = openpyxl.Workbook()
    lookup = wb.active
    lookup.title = "lookup"
    lookup.append(["code", "name"])
    lookup.sheet_state = "hidden"
    ws = wb.create_sheet("2024")
    ws.append(["Customer feedback export 2024"])
    ws.append([])
    ws.append(["text", "label (final, as agreed by the annotation team)", "label"])
    for t, y in body[:6]:
        ws.append([t, "x", y])
    p = tmp_path / "real.xlsx"
    wb.save(p)
    got = read_rows(p, Config().data)
    assert [(r.text, r.label, r.line) for r in got] == [(t, y, i + 4) for i, (t, y) in enumerate(body[:6])]
    note = column_note(got.columns)
    assert "(sheet '2024'; row 1 above the header passed over; other sheets: 'lookup' (hidden))" in note
    assert "--set data.sheet=2024 " in note
    # the printed pin reads the sheet named "2024", not index 2024; a wrong name names the settings
    cfg = load_config(None, ["data.sheet=2024"])
    assert len(read_rows(p, cfg.data)) == 6
    cfg = load_config(None, ["data.sheet=2025"])
    with pytest.raises(DataError, match=r"sheet 2025 not found: the workbook has 2 sheet\(s\) \('lookup', '2024'\); .*"
                                        r"--set data.sheet=NAME \(train, evaluate\) or --sheet NAME \(predict\)"):
        read_rows(p, cfg.data)
    cfg = load_config(None, ["data.sheet=train"])
    two = write_xlsx(tmp_path / "two.xlsx", {"a": [["text", "label"]] + body[:12], "b": [["text", "label"]] + body[:12]})
    with pytest.raises(DataError, match=r"no sheet named 'train'; its sheets are: 'a', 'b'; .*--set data.sheet"):
        read_rows(two, cfg.data)
    one = write_xlsx(tmp_path / "one.xlsx", {"Sheet1": [["text", "label"]] + body[:12]})   # one sheet: read it
    got = read_rows(one, cfg.data)
    assert len(got) == 12 and "(sheet 'Sheet1' (no sheet 'train' (data.sheet) here: its only sheet))" in column_note(got.columns)
    # formulas never computed (openpyxl saves no result) read empty: the first such row says why
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["text", "label", "a", "b"])
    for i in range(2, 5):
        ws.append([f"=C{i}&D{i}", "sports", "球赛", "冠军"])
    wb.save(tmp_path / "formula.xlsx")
    with pytest.raises(DataError) as e:
        read_rows(tmp_path / "formula.xlsx", Config().data)
    msg = str(e.value)
    assert "formula.xlsx row 2: empty text; fix: fill it in or delete the row (an Excel cell that reads empty may " \
           "hold a formula whose result was never saved" in msg and msg.count("formula whose result") == 1
    skip = Config()
    skip.data.on_invalid = "skip"      # still row problems: skipped, not a file-level stop
    ws.append(["球赛冠军", "sports"])
    wb.save(tmp_path / "formula.xlsx")
    from tricklab.data.invalid import InvalidRows

    inv = InvalidRows("skip")
    rows = inv.read("train", str(tmp_path / "formula.xlsx"),
                    lambda f: read_rows(tmp_path / "formula.xlsx", skip.data, True, f), [])
    assert [r.text for r in rows] == ["球赛冠军"] and len(inv.rows["train"]) == 3


def test_a_workbook_with_an_instructions_sheet_and_a_header_without_known_names(tmp_path):
    """The data sheet is the first whose header names a text column (an instructions sheet in front is passed
    over); a first row read as data that is a header after all stops with the setting; a failed read shows how the
    file was read."""
    from tricklab.data.readers import read_rows

    texts = ["这家酒店很好", "服务太差了", "还可以吧", "房间很干净", "早餐不错", "太吵了"]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "说明"
    for r in (["标注说明"], ["情感", "正面 / 负面"], ["备注", "可留空"]):
        ws.append(r)
    data = wb.create_sheet("标注数据")
    data.append(["编号", "评论内容", "情感", "备注"])
    for i in range(12):
        data.append([f"{i:05d}", texts[i % 6], "正面" if i % 2 == 0 else "负面", None])
    wb.save(tmp_path / "book.xlsx")
    got = read_rows(tmp_path / "book.xlsx", Config().data)
    assert [r.text for r in got][:2] == texts[:2] and {r.label for r in got} == {"正面", "负面"}
    assert "(sheet '标注数据' (the first whose header names a text column); other sheets: '说明')" in \
        __import__("tricklab.data.columns", fromlist=["x"]).column_note(got.columns)
    # headers with names tricklab does not know: the header row would become a one-example class
    odd = write_xlsx(tmp_path / "odd.xlsx", {"Sheet1": [["用户说的话", "人工判定结果"]]
                                                       + [[texts[i % 6], "好评" if i % 2 else "差评"] for i in range(12)]})
    note = next(n for n in load_data(Config(), odd).notes if n.startswith("columns of odd.xlsx"))
    assert "(sheet 'Sheet1'; no header line; first line: '用户说的话', '人工判定结果')" in note
    assert "WARNING: row 1 may be a header read as data: its label '人工判定结果' occurs nowhere else" in note
    # a failed read shows how each file was read
    (tmp_path / "d").mkdir()
    write_xlsx(tmp_path / "d" / "train.xlsx", {"Sheet1": [["用户说的话", "人工判定结果"]]
                                                        + [[texts[i % 6], "好评" if i % 2 else "差评"] for i in range(12)]})
    write_xlsx(tmp_path / "d" / "dev.xlsx", {"Sheet1": [["text", "label"], ["球赛", "别的"]]})
    with pytest.raises(DataError) as e:
        load_data(Config(), tmp_path / "d")
    lines = str(e.value).splitlines()
    assert "label '别的' does not occur in train" in lines[0]
    assert lines[1].startswith("how it was read: columns of train.xlsx (sheet 'Sheet1'; no header line")
    cfg = Config()
    cfg.data.text_column = "评论"                   # a misspelt name: the header's place in the sheet, the columns
    with pytest.raises(DataError, match=r"book.xlsx row 1: data.text_column='评论': column not found; the header's "
                                        r"columns are: '编号', '评论内容', '情感', '备注'; did you mean '评论内容'"):
        read_rows(tmp_path / "book.xlsx", cfg.data)
    cfg.data.header, cfg.data.text_column, cfg.data.label_column = "true", "用户说的话", "人工判定结果"
    b = load_data(cfg, odd)
    assert sorted(b.label_map.names) == ["好评", "差评"] and len(b.train) + len(b.dev) == 12


def test_sheet_header_search_is_not_fooled_by_values_and_follows_named_columns(tmp_path):
    from tricklab.data.readers import read_rows

    rows = [["我想退货", "question"], ["东西不错", "comment"], ["怎么付款", "question"], ["很好用", "comment"]] * 4
    p = write_xlsx(tmp_path / "bare.xlsx", {"Sheet1": rows})           # no header; labels that are column names
    got = read_rows(p, Config().data)
    assert len(got) == 16 and got[0].text == "我想退货" and got[0].label == "question"
    # the user's own column names pick the sheet and the header row below a title
    book = write_xlsx(tmp_path / "book.xlsx", {"说明": [["文本", "说明"], ["x", "y"]],
                                               "反馈": [["导出"], ["用户反馈", "打分"]] + rows})
    cfg = Config()
    cfg.data.text_column, cfg.data.label_column = "用户反馈", "打分"
    got = read_rows(book, cfg.data)
    assert len(got) == 16 and got[0].line == 3 and got.columns["sheet"]["name"] == "反馈"
    from tricklab.data.excel import cell_text

    assert cell_text(0.1 + 0.2) == "0.3" and cell_text(1 / 3) == "0.333333333333333"


def test_a_workbook_with_a_sheet_per_split_trains_and_evaluates_on_its_sheets(tiny_model, tmp_path, capsys):
    """Sheets named for the splits (训练集/验证集/测试集, train/dev/test) are the splits, as files in a folder are:
    each split's rows, problems and token cache entry are its own sheet's; evaluate scores the test sheet."""
    import random

    from conftest import CLASSES, make_text
    from tricklab.data.invalid import row_problem
    from tricklab.data.sources import cache_digest
    from tricklab.inference.evaluate import evaluate_run
    from tricklab.training import train

    rng = random.Random(5)

    def sheet(n: int, tag: str) -> list[list]:
        return [["文本", "标签"]] + [[make_text(rng, lab) + tag, lab] for lab in (list(CLASSES) * n)[:n]]
    tr, dv, te = sheet(36, "甲"), sheet(9, "乙"), sheet(6, "丙")
    book = write_xlsx(tmp_path / "book.xlsx", {"说明": [["标注说明"]], "训练集": tr, "验证集": dv, "测试集": te})
    b = load_data(Config(), book)
    assert ([r.text for r in b.train.rows], [r.text for r in b.dev.rows], [r.text for r in b.test.rows]) == (
        [r[0] for r in tr[1:]], [r[0] for r in dv[1:]], [r[0] for r in te[1:]])
    assert b.test.rows[0].where == f"{book}[测试集] row 2"
    assert "data: book.xlsx has a sheet per split: train = '训练集', dev = '验证集', test = '测试集'" in b.notes[0]
    assert [b.digests[s]["sheet"] for s in ("train", "dev", "test")] == ["训练集", "验证集", "测试集"]
    assert len({cache_digest(b.digests[s]) for s in ("train", "dev", "test")}) == 3    # one cache entry per sheet
    note = next(n for n in b.notes if n.startswith("columns of book.xlsx[训练集]"))
    assert "data.sheet" not in note             # pinning the sheet would turn the splits into one table
    # a row problem names the split's sheet, and data.on_invalid=skip drops just that row
    bad = write_xlsx(tmp_path / "bad.xlsx", {"Train": tr, "Test": te[:3] + [[None, "sports"]] + te[3:]})
    with pytest.raises(DataError, match=r"bad.xlsx\[Test\] row 4: empty text"):
        load_data(Config(), bad)
    cfg = Config()
    cfg.data.on_invalid = "skip"
    b2 = load_data(cfg, bad)
    assert len(b2.test) == 6 and [(s.source, s.line) for s in b2.skipped["test"]] == [(f"{bad}[Test]", 4)]
    assert row_problem(f"{bad}[Test]", f"{bad}[Test] row 4: empty text") == (4, "empty text")
    # data.sheet names one sheet: that sheet alone is the training data (dev held out of it), no test
    cfg = Config()
    cfg.data.sheet = "训练集"
    one = load_data(cfg, book)
    assert one.test is None and len(one.train) + len(one.dev) == 36
    # a train sheet alone (and other sheets) is one table, as before
    solo = write_xlsx(tmp_path / "solo.xlsx", {"notes": [["readme"]], "train": tr})
    lone = load_data(Config(), solo)
    assert lone.test is None and not any("sheet per split" in n for n in lone.notes)
    # names as people write them; the first sheet of a role counts, the others are named; hidden sheets are no split
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows_ in (("Train Set", tr), ("Validation_Data", dv), ("valid", dv[:3]), ("说明", [["x"]]), ("测试样本", te)):
        ws = wb.create_sheet(name)
        for r in rows_:
            ws.append(r)
    wb["测试样本"].sheet_state = "hidden"
    wb.save(tmp_path / "names.xlsx")
    got = load_data(Config(), tmp_path / "names.xlsx")
    assert (len(got.train), len(got.dev), got.test) == (36, 9, None)
    assert ("has a sheet per split: train = 'Train Set', dev = 'Validation_Data'; not read: 'valid', '说明', '测试样本'"
            in got.notes[0]), got.notes[0]
    # Kaggle's shape: a test sheet without labels is texts to predict, not a split; a class file beside the book
    ids = [[r[0], str(list(CLASSES).index(r[1]))] for r in tr[1:]]
    kag = write_xlsx(tmp_path / "k" / "kag.xlsx", {"train": [["文本", "标签"], *ids], "test": [["id", "文本"],
                                                                                             [1, "球赛"]]})
    (tmp_path / "k" / "class.txt").write_text("\n".join(CLASSES), encoding="utf-8")
    k = load_data(Config(), kag)
    assert k.test is None and k.label_map.names == list(CLASSES)
    assert "'test' has no label column: not a split (predict it: tricklab predict --sheet test)" in k.notes[0]
    from tricklab.config import load_config

    lab = load_data(load_config(None, ["data.label_column=标签"]), kag)     # with the label column named too
    assert lab.test is None and "'test' has no label column: not a split" in lab.notes[0]
    # a results sheet is no split: the workbook stays one table
    res = write_xlsx(tmp_path / "res.xlsx", {"train": tr, "Evaluation": [["metric", "value"], ["acc", 0.9]]})
    assert not any("sheet per split" in n for n in load_data(Config(), res).notes)
    # --test / --dev another workbook: its sheet of that role, never dropped, and none is an error
    with_test = load_data(Config(), solo, test=book)
    assert [r.text for r in with_test.test.rows] == [r[0] for r in te[1:]]
    with pytest.raises(DataError, match=r"--dev names a workbook with a sheet per split, and none of its sheets is a "
                                        r"dev sheet"):
        load_data(Config(), solo, dev=kag)
    with pytest.raises(DataError, match=r"kag.xlsx\[test\] row 1: no label column"):
        load_data(Config(), solo, test=kag)
    # training and evaluate: each split from its sheet; evaluate scores the test sheet, --split another
    run = tmp_path / "run"
    train(tiny_cfg(tiny_model, "train.max_steps=2"), book, out=run, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["evaluated_on"] == "test" and m["n"] == 6
    assert evaluate_run(run, book, verbose=False)["n"] == 6 and (run / "eval_book_测试集.json").is_file()
    assert evaluate_run(run, book, verbose=False, split="dev")["n"] == 9
    assert evaluate_run(run, book, verbose=False, split="训练集")["n"] == 36
    assert evaluate_run(run, book, verbose=False, split="Test")["n"] == 6
    assert evaluate_run(run, book, verbose=False, sets=["data.sheet=验证集"])["n"] == 9    # one sheet, as told
    # a run trained on one sheet (data.sheet): evaluate on the workbook still scores its test sheet
    one_run = tmp_path / "one_run"
    train(tiny_cfg(tiny_model, "train.max_steps=1", "data.sheet=训练集"), book, out=one_run, progress=False)
    assert evaluate_run(one_run, book, verbose=False)["n"] == 6
    with pytest.raises(DataError, match=r"this sheet has no labels to score \(texts to predict\); fix: --split NAME"):
        evaluate_run(one_run, write_xlsx(tmp_path / "k2.xlsx", {"train": tr, "test": [["id", "文本"], [1, "球赛"]]}),
                     verbose=False)
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(book), "--split", "验证集"]) == 0
    assert "book.xlsx[验证集]" in capsys.readouterr().out


# ---------------------------------------------------------------- multi-label as one 0/1 column per class

FLAG_NAMES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def flag_rows(n: int, seed: int = 0) -> list[list]:
    """Jigsaw-style rows: id, comment_text, one 0/1 column per class (identity_hate never 1)."""
    import random

    rng = random.Random(seed)
    words = "good bad awful nice hate love stupid idiot kill great".split()
    out = []
    for i in range(n):
        t = " ".join(rng.choice(words) for _ in range(6))
        out.append([f"c{i:04d}", t, int("hate" in t), int("kill" in t and "hate" in t), int("stupid" in t),
                    int("kill" in t), int("idiot" in t), 0])
    return out


def test_multi_label_from_one_0_1_column_per_class(tmp_path, capsys):
    import csv

    from tricklab.config import load_config

    rows = flag_rows(40)
    want = [[FLAG_NAMES.index(n) for n, v in zip(FLAG_NAMES, r[2:]) if v == 1] for r in rows]
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "comment_text", *FLAG_NAMES], *rows])
    b = load_data(Config(), path)
    assert b.task == "multi_label" and b.label_map.names == FLAG_NAMES     # the never-marked column is a class too
    got = {r.text: lab for r, lab in zip(b.train.rows + b.dev.rows, b.train.labels + b.dev.labels)}
    assert {r[1]: w for r, w in zip(rows, want)} == got and [] in want     # a row with no class marked: no label
    note = next(n for n in b.notes if n.startswith("columns of train.csv"))
    assert "label = the columns 'toxic', 'severe_toxic', 'obscene', 'threat', 'insult', 'identity_hate' (0/1 columns" in note
    assert "unused: 'id'" in note
    pin = note.split("--set ")[-1].strip("'")
    pinned = load_data(load_config(None, [pin]), path)                     # the note's pin reads the same
    assert pinned.label_map.names == FLAG_NAMES and pinned.train.labels == b.train.labels
    # a subset by name or index; the other 0/1 columns are left unused
    sub = load_data(load_config(None, ["data.label_column=[insult, 3]"]), path)
    assert sub.label_map.names == ["insult", "severe_toxic"]               # 0-based index 3 of the header
    # the same rows as TSV and as a workbook; as JSONL and a DataFrame with the columns named
    tsv = tmp_path / "t.tsv"
    tsv.write_text("\n".join("\t".join(map(str, r)) for r in [["id", "comment_text", *FLAG_NAMES], *rows]) + "\n",
                   encoding="utf-8")
    book = write_xlsx(tmp_path / "b.xlsx", {"Sheet1": [["id", "comment_text", *FLAG_NAMES], *rows]})
    jl = tmp_path / "t.jsonl"
    recs = [dict(zip(["id", "comment_text", *FLAG_NAMES], [r[0], r[1], *(bool(v) for v in r[2:])])) for r in rows]
    jl.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    listed = load_config(None, ['data.label_column=' + json.dumps(FLAG_NAMES)])
    df = pd.DataFrame([dict(zip(["id", "comment_text", *FLAG_NAMES], r)) for r in rows])
    for cfg_, data in ((Config(), tsv), (Config(), book), (listed, jl), (listed, df)):
        other = load_data(cfg_, data)
        assert other.label_map.names == FLAG_NAMES, data
        assert {r.text: lab for r, lab in zip(other.train.rows + other.dev.rows,
                                              other.train.labels + other.dev.labels)} == got, data
    # bad values name the row and column; data.on_invalid=skip drops the row
    with open(path, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["c9998", "bad value", 0, -1, 0, 0, 0, 0], ["c9999", "short", 1]])
    with pytest.raises(DataError) as e:
        load_data(Config(), path)
    assert "train.csv line 42: label column 'severe_toxic' holds '-1': expected 0 or 1" in str(e.value)
    assert "train.csv line 43: expected 8 comma-separated columns (id, comment_text, toxic, severe_toxic, obscene, threat, insult, identity_hate)" in str(e.value)
    skip = Config()
    skip.data.on_invalid = "skip"
    assert len(load_data(skip, path).skipped["train"]) == 2
    jl.write_text(jl.read_text() + '{"id": "x", "comment_text": "y", "toxic": 2}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl line 41: label column 'toxic' holds '2'"):
        load_data(listed, jl)
    assert b.columns["train"]["unused"] == ["id"] and b.columns["train"]["columns"] == 8
    # Parquet with the columns named; data.label_map renames (and merges) the classes the columns stand for
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "t.parquet")
    other = load_data(listed, tmp_path / "t.parquet")
    assert other.label_map.names == FLAG_NAMES and len(other.train) + len(other.dev) == 40
    upper = load_data(load_config(None, ['data.label_column=' + json.dumps([n.upper() for n in FLAG_NAMES])]),
                      tmp_path / "t.parquet")                                # names in any case, as in a CSV
    assert upper.label_map.names == FLAG_NAMES and upper.train.labels == other.train.labels
    with pytest.raises(DataError, match=r"data.label_column lists 'toxik': no such column .*did you mean 'toxic'"):
        load_data(load_config(None, ["data.label_column=[toxik, obscene]"]), tmp_path / "t.parquet")
    mapped = load_data(load_config(None, ['data.label_map={toxic: bad, insult: bad}']), tsv)
    assert mapped.label_map.names == ["bad", "severe_toxic", "obscene", "threat", "identity_hate"]
    name_of = {r.text: sorted(mapped.label_map.names[i] for i in lab)
               for r, lab in zip(mapped.train.rows + mapped.dev.rows, mapped.train.labels + mapped.dev.labels)}
    assert name_of == {r[1]: sorted({("bad" if n in ("toxic", "insult") else n) for n, v in zip(FLAG_NAMES, r[2:]) if v})
                       for r in rows}
    # true/yes/1.0 and empty cells read as 0/1; a trailing empty column is nothing; one 0/1 column is a binary label
    words = tmp_path / "w.csv"
    words.write_text("text,a,b,extra\n" + "".join(f"球赛{i},{['true', 'yes', '1.0', 'y'][i % 4]},,\n股市{i},0,1,\n"
                                                  for i in range(6)), encoding="utf-8")
    wb_ = load_data(Config(), words)
    assert wb_.label_map.names == ["a", "b"] and wb_.columns["train"]["unused"] == ["extra"]
    assert {r.text: lab for r, lab in zip(wb_.train.rows + wb_.dev.rows, wb_.train.labels + wb_.dev.labels)} == {
        **{f"球赛{i}": [0] for i in range(6)}, **{f"股市{i}": [1] for i in range(6)}}
    ids = tmp_path / "ids.csv"                          # an id column is never a class, whatever its values
    ids.write_text("id,text,a,b\n" + "".join(f"{i % 2},球赛{i},1,0\n{i % 2},股市{i},0,1\n" for i in range(6)),
                   encoding="utf-8")
    assert load_data(Config(), ids).label_map.names == ["a", "b"]
    one = tmp_path / "one.csv"
    one.write_text("text,is_spam\n" + "".join(f"球赛{i},{i % 2}\n" for i in range(12)), encoding="utf-8")
    assert load_data(Config(), one).task == "single_label"
    # no guess when another column may be the label: a named-unknown label, a remark, a 0-4 score beside 0/1 columns
    for extra, values in (("quality", ["好", "差"]), ("remark", [""] * 9 + ["客户说得对"]), ("stars", ["0", "1", "1", "2", "0",
                                                                                               "1", "0", "4", "1", "3"])):
        odd = tmp_path / f"odd_{extra}.csv"
        odd.write_text(f"text,is_new,has_url,{extra}\n" + "".join(
            f"球赛{i},{i % 2},{(i // 2) % 2},{values[i % len(values)]}\n" for i in range(20)), encoding="utf-8")
        with pytest.raises(DataError, match=r"no label column in header .*--set data.label_column=NAME \(or, one 0/1 "
                                            r"column per class: --set 'data.label_column=\[NAME, NAME, ...\]'\)"):
            load_data(Config(), odd)
    # every file read must have train's 0/1 columns
    (tmp_path / "dd").mkdir()
    with open(tmp_path / "dd" / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "comment_text", *FLAG_NAMES], *rows])
    with open(tmp_path / "dd" / "dev.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "comment_text", *FLAG_NAMES[:-1]], *(r[:-1] for r in rows[:8])])
    with pytest.raises(DataError, match=r"dev.csv: its 0/1 label columns \(toxic, .*, insult\) are not train's"):
        load_data(Config(), tmp_path / "dd")
    (tmp_path / "dd" / "class.txt").write_text("\n".join(reversed(FLAG_NAMES)), encoding="utf-8")   # a class file too
    with pytest.raises(DataError, match=r"dev.csv: its 0/1 label columns \(toxic, .*, insult\) are not train's"):
        load_data(Config(), tmp_path / "dd")
    # a file with a label column keeps it: 0/1 metadata columns beside it are no classes
    plain = tmp_path / "plain.csv"
    plain.write_text("text,label,is_new,has_url\n" + "".join(f"球赛{i},sports,{i % 2},0\n股市{i},finance,1,{i % 2}\n"
                                                             for i in range(10)), encoding="utf-8")
    assert load_data(Config(), plain).task == "single_label"
    # settings that cannot be 0/1 columns
    for bad in ("[toxic]", "[toxic, toxic]", "[toxic, 1.5]", "[toxic, -1]", "[yes, no]"):
        with pytest.raises(ConfigError, match="a list names the 0/1 label columns"):
            load_config(None, [f"data.label_column={bad}"])
    for bad, said in (("[toxic, 9]", "9 is no column of the header"), ("[toxic, 2]", "names the column 'toxic' twice"),
                      ("[comment_text, toxic]", "'comment_text' is read as the text")):
        with pytest.raises(DataError, match=said):
            load_data(load_config(None, [f"data.label_column={bad}"]), tsv)
    for bad, data, said in (("[id, toxic]", tsv, "lists 'id', whose values are not 0/1 .e.g. 'c0000'."),
                            ("[comment_text, toxic]", jl, "names 'comment_text', the text column"),
                            ("[comment_text, toxic]", tmp_path / "t.parquet", "names 'comment_text', the text column")):
        with pytest.raises(DataError, match=said):
            load_data(load_config(None, [f"data.label_column={bad}"]), data)
    with pytest.raises(DataError, match="JSON records have no column order"):
        load_data(load_config(None, ["data.label_column=[toxic, 3]"]), jl)
    jl.write_text('{"comment_text": "y", "toxic": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl line 1: no 'severe_toxic' field"):
        load_data(listed, jl)
    headless = tmp_path / "h.csv"
    headless.write_text("".join(f"球赛{i},1,0\n" for i in range(5)), encoding="utf-8")
    with pytest.raises(DataError, match=r"names 0/1 columns of a header, but line 1 holds data"):
        load_data(load_config(None, ["data.label_column=[1, 2]"]), headless)


def test_a_0_1_column_model_trains_evaluates_and_predicts(tiny_model, tmp_path, capsys):
    import csv

    from tricklab.inference.evaluate import evaluate_run
    from tricklab.training import train

    head = ["id", "comment_text", *FLAG_NAMES]
    for name, rows in (("train.csv", flag_rows(48, 1)), ("test.csv", flag_rows(12, 2))):
        (tmp_path / "d").mkdir(exist_ok=True)
        with open(tmp_path / "d" / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([head, *rows])
    run = tmp_path / "run"
    train(tiny_cfg(tiny_model, "train.max_steps=2", "data.lowercase=true"), tmp_path / "d", out=run, progress=False)
    meta = json.loads((run / "model" / "tricklab.json").read_text())
    assert meta["labels"]["names"] == FLAG_NAMES and meta["labels"]["task"] == "multi_label"
    m = evaluate_run(run, tmp_path / "d" / "test.csv", verbose=False)
    assert m["n"] == 12 and "micro_f1" in m
    with open(tmp_path / "shuffled.csv", "w", newline="", encoding="utf-8") as f:    # columns in another order
        csv.writer(f).writerows([[*reversed(FLAG_NAMES), "comment_text"], *([*reversed(r[2:]), r[1]]
                                                                             for r in flag_rows(12, 2))])
    assert evaluate_run(run, tmp_path / "shuffled.csv", verbose=False)["micro_f1"] == m["micro_f1"]
    with open(tmp_path / "short.csv", "w", newline="", encoding="utf-8") as f:      # a class column missing
        csv.writer(f).writerows([head[:-1], *(r[:-1] for r in flag_rows(6, 3))])
    with pytest.raises(DataError, match=r"short.csv: its 0/1 label columns \(toxic, .*, insult\) do not stand for "
                                        r"the model's classes"):
        evaluate_run(run, tmp_path / "short.csv", verbose=False)
    out = tmp_path / "p.csv"
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "d" / "test.csv"), "--output", str(out), "--quiet"]) == 0
    got = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [g["id"] for g in got] == [f"c{i:04d}" for i in range(12)] and "labels" in got[0] and "toxic" in got[0]
