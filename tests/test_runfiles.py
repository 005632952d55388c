"""Run folders and bundles against hostile and broken files (runfiles.py): paths confined to the run folder,
manifests checked at load, files in other encodings, atomic writes, one writer per run folder, `compare --jobs`
children that die with their parent, and the resume / evaluate / data-coverage messages."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    """A finished tiny run (with its checkpoints folder) and its data in `data/` beside it."""
    from tricklab.training import train

    d = tmp_path_factory.mktemp("runfiles")
    data = write_thucnews(d / "data", n_train=36, n_dev=12)
    train(tiny_cfg(tiny_model, "train.epochs=1", "train.eval_every=2"), data, out=d / "run", progress=False)
    return d / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the finished run (tests damage it)."""
    shutil.copytree(trained, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- 9: paths confined to the run folder


def test_resume_refuses_a_checkpoint_outside_the_run(run, tmp_path, capsys):
    ck = run / "checkpoints"
    step = (ck / "latest").read_text().strip()
    outside = tmp_path / "elsewhere"
    shutil.copytree(ck / step, outside / "step-00000099")
    (ck / "step-00000099").symlink_to(outside / "step-00000099", target_is_directory=True)
    (ck / "latest").write_text("step-00000099")
    (run / "metrics.json").unlink()
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "the checkpoint points outside" in err and str(outside) in err and "fix:" in err
    (ck / "latest").write_text("../../elsewhere/step-00000099")           # a pointer that climbs out
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    assert "not a checkpoint of this run" in one_line_error(capsys)


def test_evaluate_never_writes_through_a_link_out_of_the_run(run, tmp_path, capsys):
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    (run / "eval_dev.json").symlink_to(victim)
    assert cli_main(["evaluate", "--run", str(run), "--data", str(run_data(run))]) == 2
    err = one_line_error(capsys)
    assert "symbolic link" in err and "eval_dev.json" in err and "fix: remove the link" in err
    assert victim.read_text() == "precious"
    (run / "eval_dev.json").unlink()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(run_data(run))]) == 0
    assert json.loads((run / "eval_dev.json").read_text())["n"] == 12


def test_train_never_writes_through_a_link_out_of_the_run(run, tmp_path, capsys):
    victim = tmp_path / "victim.tsv"
    victim.write_text("precious")
    (run / "bad_cases.tsv").unlink()
    (run / "bad_cases.tsv").symlink_to(victim)
    (run / "metrics.json").unlink()
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "bad_cases.tsv: a symbolic link" in err and victim.read_text() == "precious"
    assert not (run / "metrics.json").exists()             # refused before training, not half-way through finish


def run_data(run: Path) -> Path:
    return Path(json.loads((run / "run.json").read_text())["data"]["files"]["dev"]["path"])


# ---------------------------------------------------------------- 10: manifests and broken files


def test_model_folder_has_a_manifest_of_sizes_and_hashes(run):
    from tricklab.runfiles import file_digest

    man = json.loads((run / "model" / "manifest.json").read_text())
    files = man["files"]
    assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json", "tricklab.json", "config.json"} <= set(files)
    for name, rec in files.items():
        assert rec == file_digest(run / "model" / name), name     # still true after finish rewrote tricklab.json


def test_a_run_from_before_manifests_still_loads(run, tmp_path, capsys):
    (run / "model" / "manifest.json").unlink()
    (tmp_path / "in.txt").write_text("球赛冠军\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.txt")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in ("sports", "finance", "game")


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


@pytest.mark.parametrize("damage,manifest,expect", [
    ("rm tokenizer.json", True, "tokenizer.json: missing"),
    ("rm tokenizer.json", False, "tokenizer.json: missing"),
    ("truncate tricklab.json", True, "tricklab.json: "),
    ("truncate tricklab.json", False, "tricklab.json: unreadable"),
    ("truncate model.safetensors", True, "model.safetensors: "),
    ("truncate model.safetensors", False, "model.safetensors: unreadable"),
    ("edit config.json", True, "config.json: content differs"),
])
def test_damaged_model_folder_is_one_line_and_exit_2(run, tmp_path, capsys, damage, manifest, expect):
    m = run / "model"
    if not manifest:   # a run saved before manifests
        (m / "manifest.json").unlink(missing_ok=True)
    verb, name = damage.split()
    if verb == "rm":
        (m / name).unlink()
    elif verb == "truncate":
        truncate(m / name)
    else:
        (m / name).write_text((m / name).read_text().replace('"gelu"', '"relu"'))
    (tmp_path / "in.txt").write_text("球赛冠军\n", encoding="utf-8")
    assert cli_main(["predict", "--run", str(run), str(tmp_path / "in.txt")]) == 2
    err = one_line_error(capsys)
    assert expect in err and "fix:" in err


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from tricklab.inference.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "b"
    export_bundle(trained, out, log=None)
    return out


def test_bundle_manifest_covers_the_bundle_only(bundle, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    files = json.loads((b / "manifest.json").read_text())["files"]
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "tricklab.json", "bundle.json"} <= set(files)
    rows = run_data(bundle_run(b)).read_text(encoding="utf-8")
    (tmp_path / "t.txt").write_text(rows, encoding="utf-8")
    assert cli_main(["evaluate", "--bundle", str(b), "--data", str(tmp_path / "t.txt")]) == 0
    from tricklab.inference.export import export_bundle

    export_bundle(bundle_run(b), b, log=None)          # exported again into the folder that holds the reports
    assert not {"eval_t.json", "bad_cases_t.tsv"} & set(json.loads((b / "manifest.json").read_text())["files"])
    (b / "bad_cases_t.tsv").write_text("edited by hand\n")     # reports are not part of the bundle
    assert cli_main(["evaluate", "--bundle", str(b), "--data", str(tmp_path / "t.txt")]) == 0


def bundle_run(b: Path) -> Path:
    return Path(json.loads((b / "bundle.json").read_text())["run"])


@pytest.mark.parametrize("damage,manifest,expect", [
    ("rm tokenizer.json", True, "tokenizer.json: missing"),
    ("rm tokenizer.json", False, "tokenizer.json: missing"),
    ("truncate bundle.json", True, "bundle.json: "),
    ("truncate bundle.json", False, "bundle.json: unreadable"),
    ("truncate model.onnx", True, "model.onnx: "),
    ("truncate model.onnx", False, "model.onnx: unreadable"),
])
def test_damaged_bundle_is_one_line_and_exit_2(bundle, tmp_path, capsys, damage, manifest, expect):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    assert (b / "manifest.json").is_file() or not manifest
    if not manifest:   # a bundle exported before manifests
        (b / "manifest.json").unlink(missing_ok=True)
    verb, name = damage.split()
    (b / name).unlink() if verb == "rm" else truncate(b / name)
    (tmp_path / "in.txt").write_text("球赛冠军\n", encoding="utf-8")
    assert cli_main(["predict", "--bundle", str(b), str(tmp_path / "in.txt")]) == 2
    err = one_line_error(capsys)
    assert expect in err and "fix:" in err and "tricklab export" in err


@pytest.mark.parametrize("encoding,named,iconv", [("gbk", "GBK/GB18030", "GB18030"), ("big5", "Big5", "BIG5"),
                                                  ("cp1251", "Windows-1251", "CP1251")])
def test_predict_on_another_encoding_names_it(run, tmp_path, capsys, encoding, named, iconv):
    text = {"gbk": "球赛冠军\n股市银行利率\n", "big5": "體育新聞：球隊贏得冠軍，隊員們非常高興。\n",
            "cp1251": "Привет, как дела? Хорошо.\n"}[encoding]
    f = tmp_path / "in.txt"
    f.write_bytes(("ok\n" + text).encode(encoding))
    assert cli_main(["predict", "--run", str(run), str(f)]) == 2
    err = one_line_error(capsys)
    assert f"{f} line 2: undecodable bytes" in err and named in err and f"iconv -f {iconv} -t UTF-8 {f}" in err
    fix = err.split("read it as such with ")[1].split(",")[0].split()          # the error's other fix: --encoding X
    assert fix[0] == "--encoding"
    out = tmp_path / "out.jsonl"
    assert cli_main(["predict", "--run", str(run), str(f), *fix, "--output", str(out)]) == 0
    got = [json.loads(ln)["text"] for ln in out.read_text(encoding="utf-8").splitlines()]
    assert got == ["ok", *text.splitlines()]                                   # decoded as written
    # a UTF-8 BOM says UTF-8 whatever --encoding says, compressed too (its bytes are only seen once read)
    import gzip

    gz = tmp_path / "bom.txt.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + "发票\n中文\n".encode("utf-8")))
    assert cli_main(["predict", "--run", str(run), str(gz), *fix, "--output", str(out)]) == 0
    assert [json.loads(ln)["text"] for ln in out.read_text(encoding="utf-8").splitlines()] == ["发票", "中文"]
    capsys.readouterr()
    assert cli_main(["predict", "--run", str(run), str(f), "--encoding", "base64"]) == 2
    assert "--encoding: base64 cannot be read by line" in one_line_error(capsys)


def test_unknown_encoding_hint_is_not_always_gb18030(tmp_path):
    from tricklab.data.readers import read_text
    from tricklab.errors import DataError

    (tmp_path / "x.txt").write_bytes("Café déjà vu, naïve résumé\n".encode("cp1252"))
    with pytest.raises(DataError) as e:
        read_text(tmp_path / "x.txt")
    assert "Windows-1252" in str(e.value) and "GB18030" not in str(e.value)


# ---------------------------------------------------------------- 11: atomic writes


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    from tricklab.runfiles import atomic_open, write_json

    p = tmp_path / "metrics.json"
    write_json(p, {"accuracy": 0.5})
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(p) as f:
            f.write('{"accuracy": 0.')
            raise KeyboardInterrupt            # a kill in the middle of the write
    assert json.loads(p.read_text()) == {"accuracy": 0.5}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["metrics.json"]   # no temporary file left


def test_run_file_writers_use_the_atomic_helper(monkeypatch, tmp_path):
    """metrics.json, tricklab.json, run.json, config.yaml, predictions, bad cases: all through runfiles.atomic_open."""
    import ast

    import tricklab

    src = Path(tricklab.__file__).resolve().parent
    direct = []
    for f in sorted(src.rglob("*.py")):
        if f.name == "runfiles.py" or "generation" in f.parts:
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("write_text", "write_bytes"):
                direct.append(f"{f.relative_to(src)}:{node.lineno}")
    assert not direct, f"run files written in place (use runfiles.atomic_write): {direct}"


def test_compare_rerun_treats_a_torn_metrics_json_as_unfinished(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=36, n_dev=12)
    out = tmp_path / "grid"
    args = ["compare", "--data", str(data), "--model", str(tiny_model), "--variants", "baseline", "--seeds", "1",
            "--out", str(out), "--set", "train.batch_size=16", "--set", "train.precision=fp32", "--set",
            "data.max_length=24", "--set", "train.eval_every=2", "--epochs", "1"]
    assert cli_main(args) == 0
    m = out / "baseline" / "seed1" / "metrics.json"
    whole = json.loads(m.read_text())
    truncate(m)                                            # killed while writing it (before atomic writes)
    capsys.readouterr()
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "0 done, 1 to resume, 0 to train" in printed and "(resumed in" in printed
    assert json.loads(m.read_text())["accuracy"] == pytest.approx(whole["accuracy"])


# ---------------------------------------------------------------- 12: one writer per run folder, no orphans


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock (as a training run does), until killed."""
    code = ("import fcntl, os, sys, time; fd = os.open(os.path.join(sys.argv[1], '.tricklab.lock'), "
            "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); "
            "print('locked', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_writer_of_a_run_folder_is_refused(tiny_model, run, tmp_path, capsys):
    (run / "metrics.json").unlink()
    other = hold_lock(run)
    try:
        assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
        err = one_line_error(capsys)
        assert f"{run}: in use by another tricklab process (pid {other.pid})" in err
        data = write_thucnews(tmp_path / "d", n_train=24, n_dev=6)
        grid = tmp_path / "grid"
        (grid / "baseline" / "seed1").mkdir(parents=True)
        other2 = hold_lock(grid / "baseline" / "seed1")
        try:
            assert cli_main(["compare", "--data", str(data), "--model", str(tiny_model), "--variants", "baseline",
                             "--seeds", "1", "--out", str(grid), "--epochs", "1", "--set", "data.max_length=24"]) == 2
            err = one_line_error(capsys)
            assert f"seed1: in use by another tricklab process (pid {other2.pid})" in err
        finally:
            other2.kill()
            other2.wait()
    finally:
        other.kill()
        other.wait()
    # the holder is gone (killed: the kernel dropped its lock): the run resumes
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 0


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_compare_jobs_children_die_with_a_killed_parent(tiny_model, tmp_path):
    data = write_thucnews(tmp_path / "d", n_train=36, n_dev=12)
    out = tmp_path / "grid"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tricklab.cli", "compare", "--data", str(data), "--model", str(tiny_model),
           "--variants", "baseline,rdrop", "--seeds", "1", "--out", str(out), "--jobs", "2", "--set",
           "train.max_steps=100000", "--set", "train.eval_every=100000", "--set", "train.batch_size=4", "--set",
           "data.max_length=24"]
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(kids) < 2:   # killed at once: a child not yet watching exits too
            time.sleep(0.2)
            kids = children_of(parent.pid)
        assert len(kids) == 2, "the two training subprocesses did not start"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(alive(k) for k in kids):
            time.sleep(0.2)
        assert not any(alive(k) for k in kids), "training subprocesses outlived their killed parent"
    finally:
        for k in kids:
            if alive(k):
                os.kill(k, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    from tricklab.runfiles import holder

    assert holder(out / "baseline" / "seed1") is None      # their locks died with them: a rerun may continue
    assert holder(out / "rdrop" / "seed1") is None


# ---------------------------------------------------------------- 13: resume, evaluate, data coverage


def test_resume_without_a_checkpoint_says_so(tiny_model, tmp_path, capsys):
    from tricklab.training import train

    data = write_thucnews(tmp_path / "d", n_train=24, n_dev=6)
    train(tiny_cfg(tiny_model, "train.epochs=1", "train.checkpoint=false"), data, out=tmp_path / "run", progress=False)
    (tmp_path / "run" / "metrics.json").unlink()
    capsys.readouterr()
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"resume: no checkpoint in {tmp_path / 'run' / 'checkpoints'}" in out and "from step 0" in out


def test_resume_leaves_no_duplicate_log_records(tiny_model, tmp_path, monkeypatch, capsys):
    from tricklab.training import loop

    class Stop(Exception):
        pass

    real = loop.record

    def record_then_stop(run, log, rec):   # killed after logging step 6, two steps past the checkpoint at 4
        real(run, log, rec)
        if rec["step"] >= 6:
            raise Stop

    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    monkeypatch.setattr(loop, "record", record_then_stop)
    with pytest.raises(Stop):
        loop.train(tiny_cfg(tiny_model, "train.epochs=3", "train.eval_every=4"), data, out=tmp_path / "run",
                   progress=False)
    monkeypatch.setattr(loop, "record", real)
    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write('{"step": 7, "lo')                                 # a line torn by the kill
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    assert "log.jsonl: 2 record(s) past step 4 dropped" in capsys.readouterr().out
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    kinds = [(r["step"], "loss" in r, any(k.startswith("dev/") for k in r), any(k.startswith("final/") for k in r))
             for r in recs]
    assert len(kinds) == len(set(kinds)), f"duplicate records: {kinds}"
    assert [r["step"] for r in recs if "loss" in r] == [2, 4, 6, 8, 9]


def test_evaluate_accepts_the_set_it_suggests(run, tmp_path, capsys):
    rows = run_data(run).read_text(encoding="utf-8").splitlines()
    swapped = tmp_path / "swapped.tsv"
    swapped.write_text("".join(f"{y}\t{x}\n" for x, y in (r.split("\t") for r in rows)), encoding="utf-8")
    assert cli_main(["evaluate", "--run", str(run), "--data", str(swapped), "--out", str(tmp_path / "e"), "--set",
                     "data.text_column=1", "--set", "data.label_column=0"]) == 0
    ref = tmp_path / "ref"
    assert cli_main(["evaluate", "--run", str(run), "--data", str(run_data(run)), "--out", str(ref)]) == 0
    a = json.loads((tmp_path / "e" / "eval_swapped.json").read_text())
    b = json.loads((ref / "eval_dev.json").read_text())
    assert a["accuracy"] == b["accuracy"] and a["n"] == 12
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(swapped), "--set", "train.lr=1"]) == 2
    assert "'train.lr=1': is not a key of how --data is read; evaluate takes data.KEY for KEY in format, encoding" in \
        one_line_error(capsys)
    assert cli_main(["evaluate", "--run", str(run), "--data", str(swapped), "--set", "data.max_length=512"]) == 2
    assert "'data.max_length=512': is how the model reads its texts, fixed by its training" in one_line_error(capsys)
    assert cli_main(["evaluate", "--run", str(run), "--data", str(swapped), "--set", "data.encoding=gbkk"]) == 2
    assert "--set data.encoding: unknown text encoding 'gbkk'" in one_line_error(capsys)
    assert cli_main(["evaluate", "--run", str(run), "--data", str(swapped), "--set", "data.soft_label_column=3"]) == 2
    assert "is for training (kd's soft labels); evaluate scores the gold labels" in one_line_error(capsys)


def test_classes_without_train_examples_and_a_tiny_train_set_warn(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=24, n_dev=6)
    (data / "class.txt").write_text("sports\nfinance\ngame\nweather", encoding="utf-8")
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "a"), "--model", str(tiny_model),
                     "--epochs", "1", "--quiet", "--set", "data.max_length=24"]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "1 of 4 classes have no train example ('weather')" in out
    assert out.index("warning: ") < out.index("| dev ")                 # before training
    (data / "train.txt").write_text("球赛冠军队员\t0\n", encoding="utf-8")
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--model", str(tiny_model),
                     "--epochs", "1", "--quiet", "--set", "data.max_length=24"]) == 0
    out = capsys.readouterr().out
    assert "only 1 train example:" in out and "3 of 4 classes have no train example" in out


def test_a_label_map_run_evaluates_and_predicts_in_its_class_names(tiny_model, tmp_path):
    """data.label_map is part of how the run reads files: evaluate maps a file's raw labels as train did (the
    run's config.yaml), and predictions carry the mapped names."""
    from conftest import tiny_cfg, write_thucnews
    from tricklab.inference import Predictor
    from tricklab.inference.evaluate import evaluate_run
    from tricklab.training import train

    data = write_thucnews(tmp_path / "d", n_train=60, n_dev=15)
    (data / "class.txt").unlink()                                  # ids 0, 1, 2 as they are in the files
    names = {0: "体育", 1: "财经", 2: "游戏"}
    run = tmp_path / "run"
    train(tiny_cfg(tiny_model, "train.epochs=1", "data.label_map={0: 体育, 1: 财经, 2: 游戏}"), data, out=run,
          progress=False)
    pred = Predictor.from_run(run)
    assert pred.meta["labels"]["names"] == sorted(names.values())
    rows = [ln.split("\t") for ln in (data / "test.txt").read_text(encoding="utf-8").splitlines()]
    got = [p["label"] for p in pred.predict([t for t, _ in rows])]
    m = evaluate_run(run, data / "test.txt", verbose=False, out=tmp_path / "e")
    assert m["n"] == len(rows)
    assert m["accuracy"] == sum(g == names[int(y)] for g, (_, y) in zip(got, rows)) / len(rows)
