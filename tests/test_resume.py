"""--resume from the run folder alone, run.json (versions and data hashes) and what --resume refuses, checkpoints
(when, how big, how many kept), --overwrite."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    pass


def interrupted_run(tiny_model, data: Path, out: Path, monkeypatch, at_step: int = 4, *sets: str) -> None:
    """Train until the checkpoint at `at_step` is written, then stop as a killed run would."""
    from tricklab.training import loop

    real = loop.save_resume_checkpoint

    def save_then_stop(run):
        real(run)
        if run.state.step >= at_step:
            raise Stop

    monkeypatch.setattr(loop, "save_resume_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        loop.train(tiny_cfg(tiny_model, "train.epochs=3", "train.eval_every=2", *sets), data, out=out, progress=False)
    monkeypatch.setattr(loop, "save_resume_checkpoint", real)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r}


def test_resume_needs_only_the_run_folder(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    from tricklab.training import train

    ref = train(tiny_cfg(tiny_model, "train.epochs=3", "train.eval_every=2"), data, out=tmp_path / "ref", progress=False)
    interrupted_run(tiny_model, data, tmp_path / "run", monkeypatch)
    capsys.readouterr()
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0   # no --data
    err = capsys.readouterr()
    assert "resume: from step-00000004" in err.out + err.err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == ref["steps"] == 9 and m["accuracy"] == pytest.approx(ref["accuracy"])
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    after = [s for s in a if s > 4]
    assert after and all(b[s] == pytest.approx(a[s], rel=1e-4) for s in after)


def test_run_json_records_versions_and_data_hashes(tiny_model, tmp_path):
    import torch
    import transformers

    from tricklab.training import train

    data = write_thucnews(tmp_path / "d", n_train=24, n_dev=9)
    train(tiny_cfg(tiny_model, "train.epochs=1"), data, out=tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    v = info["versions"]
    assert v["python"] == sys.version.split()[0] and v["torch"] == torch.__version__
    assert v["transformers"] == transformers.__version__ and v["tricklab"]
    if (ROOT / ".git").exists():
        assert len(v["tricklab_git"]["commit"]) == 40
    files = info["data"]["files"]
    assert set(files) == {"train", "dev", "test", "class_file"}
    for role, name in (("train", "train.txt"), ("dev", "dev.txt"), ("test", "test.txt"), ("class_file", "class.txt")):
        assert files[role]["path"] == str((data / name).resolve())
        assert files[role]["sha256"] == hashlib.sha256((data / name).read_bytes()).hexdigest()
        assert files[role]["bytes"] == (data / name).stat().st_size


def test_resume_refuses_other_data_unless_forced(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    other = write_thucnews(tmp_path / "other", n_train=48, n_dev=12, seed=5)
    run = tmp_path / "run"
    interrupted_run(tiny_model, data, run, monkeypatch)
    capsys.readouterr()
    assert cli_main(["train", "--data", str(other), "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train file differs" in err and str(other / "train.txt") in err and "--force" in err
    # the run's own files, changed in place, are refused too
    (data / "dev.txt").write_text((data / "dev.txt").read_text() + "球赛冠军\t0\n", encoding="utf-8")
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    assert "dev file differs" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(run), "--resume", "--force", "--quiet"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert "dev file differs" in " ".join(info["resumes"][-1]["forced"])


def test_resume_refuses_other_versions(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    run = tmp_path / "run"
    interrupted_run(tiny_model, data, run, monkeypatch)
    info = json.loads((run / "run.json").read_text())
    info["versions"]["torch"] = "1.0.0"
    (run / "run.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "torch 1.0.0 -> " in err and "--force" in err and "Traceback" not in err


def test_data_that_is_a_run_folder_points_to_out(tmp_path, capsys):
    run = tmp_path / "x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}")
    assert cli_main(["train", "--data", str(run), "--resume"]) == 2
    assert f"did you mean --out {run} --resume" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(tmp_path / "new")]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_checkpoints_kept_and_their_size_announced(tiny_model, tmp_path, capsys):
    from tricklab.training import train

    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    train(tiny_cfg(tiny_model, "train.epochs=2", "train.eval_every=2", "train.keep_checkpoints=2"), data,
          out=tmp_path / "run", progress=False)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert kept == ["step-00000004", "step-00000006"]
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: checkpoints:"))
    assert "every 2 steps" in line and "latest 2 kept (train.keep_checkpoints)" in line
    est = float(line.split("about ")[1].split(" MB")[0])
    real = sum(f.stat().st_size for f in (tmp_path / "run" / "checkpoints" / kept[-1]).rglob("*")) / 1e6
    assert est == pytest.approx(real, rel=0.1), (est, real)
    train(tiny_cfg(tiny_model, "train.epochs=1", "train.eval_every=2"), data, out=tmp_path / "one", progress=False)
    assert len(list((tmp_path / "one" / "checkpoints").glob("step-*"))) == 1   # default: the latest only


def test_train_flags_epochs_samples_overwrite(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--model", str(tiny_model), "--quiet",
            "--set", "train.batch_size=8", "--set", "data.max_length=24", "--set", "train.precision=fp32"]
    assert cli_main([*args, "--epochs", "2", "--max-train-samples", "16"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["max_train_samples"] == 16
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4                # 16 / 8 x 2 epochs
    capsys.readouterr()
    assert cli_main([*args, "--epochs", "1"]) == 2                                       # a run is there
    assert "--overwrite" in capsys.readouterr().err
    (run / "stale.txt").write_text("old")
    assert cli_main([*args, "--epochs", "1", "--overwrite"]) == 0
    assert not (run / "stale.txt").exists() and json.loads((run / "metrics.json").read_text())["steps"] == 6
    notrun = tmp_path / "notes"
    notrun.mkdir()
    (notrun / "mine.txt").write_text("keep me")
    assert cli_main([*args[:3], "--out", str(notrun), *args[5:], "--overwrite"]) == 2             # not a run folder
    assert (notrun / "mine.txt").read_text() == "keep me" and "not a run folder" in capsys.readouterr().err


def test_readme_resume_example_is_the_working_one():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--data runs/x --resume" not in text and "train --out runs/mine --resume" in text
