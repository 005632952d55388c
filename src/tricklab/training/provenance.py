"""What a run was made from, in OUT/run.json: the versions of Python, torch, transformers and tricklab (and its git
commit when it runs from a checkout), the data arguments, and a SHA-256 content hash of every data file. A fresh
run writes it; `--resume` reads it: without --data it continues on the recorded files, and it refuses when a data
file's content or a version differs (the run would not be the one it continues) unless forced, which run.json
then records under `resumes`.

    {"versions": {"python": "3.11.9", "torch": "2.13.0", "transformers": "5.1.0", "tricklab": "0.1.0",
                  "tricklab_git": {"commit": "<40 hex>", "dirty": false}},
     "data": {"args": {"data": "/abs/path", "dev": null, "test": null},
              "files": {"train": {"path": "/abs/train.txt", "bytes": 123, "sha256": "..."}, "dev": ..., ...}},
     "created": "2026-01-01T12:00:00", "command": ["tricklab", "train", ...], "resumes": [...]}
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..data import locate
from ..errors import TrickLabError
from ..runfiles import read_json, write_json

RUN_FILE = "run.json"
PACKAGES = ("torch", "transformers", "tricklab")
ROLES = ("train", "dev", "test", "class_file")
RUN_FIX = "restore {path} from a copy, or delete it and give the run's --data (and --dev/--test) again"


def git_commit() -> dict[str, Any] | None:
    """tricklab's own commit (and whether its tree has uncommitted changes) when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    if out["tricklab"] is None:
        from .. import __version__ as v  # type: ignore[attr-defined]

        out["tricklab"] = v
    out["tricklab_git"] = git_commit()
    return out


def file_digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def data_record(data: str | Path, dev: str | Path | None, test: str | Path | None) -> dict[str, Any]:
    """The data arguments (absolute) and a digest of every file they name (data.locate: train, dev, test, class file)."""
    files = dict(zip(ROLES, locate(data, dev, test)))
    return {"args": {k: str(Path(v).resolve()) if v else None for k, v in (("data", data), ("dev", dev), ("test", test))},
            "files": {role: file_digest(p) for role, p in files.items() if p is not None}}


def write_run_json(out: Path, record: dict[str, Any]) -> None:
    info = {"versions": versions(), "data": record, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": sys.argv if sys.argv and sys.argv[0] else None, "resumes": []}
    write_json(out / RUN_FILE, info)


def differences(saved: dict[str, Any], record: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Why resuming would continue another run: data files that differ, versions that differ."""
    out = []
    old_files, new_files = saved.get("data", {}).get("files", {}), record["files"]
    for role in ROLES:
        a, b = old_files.get(role), new_files.get(role)
        if a == b or (a and b and a["sha256"] == b["sha256"]):
            continue
        what = role.replace("_", " ")
        if a is None or b is None:
            out.append(f"{what}: {'none' if a is None else a['path']} -> {'none' if b is None else b['path']}")
        else:
            same = a["path"] == b["path"]
            out.append(f"{what} file differs: {b['path']} (sha256 {b['sha256'][:12]}, {b['bytes']} bytes) "
                       + ("changed since the run started" if same else f"is not {a['path']}")
                       + f" (sha256 {a['sha256'][:12]}, {a['bytes']} bytes)")
    old_v = saved.get("versions", {})
    for k in ("python", *PACKAGES):
        if old_v.get(k) != now.get(k):
            out.append(f"{k} {old_v.get(k)} -> {now.get(k)}")
    old_git, new_git = (old_v.get("tricklab_git") or {}).get("commit"), (now.get("tricklab_git") or {}).get("commit")
    if old_git and new_git and old_git != new_git:
        out.append(f"tricklab commit {old_git[:10]} -> {new_git[:10]}")
    return out


def resume_data(out: Path, data: str | Path | None, dev: str | Path | None, test: str | Path | None,
                force: bool) -> tuple[str | Path, str | Path | None, str | Path | None, dict[str, Any], list[str]]:
    """--resume: (data, dev, test) to continue on, their record, and the differences forced past (empty unless
    force). Without --data the recorded arguments; refuses differing data or versions unless `force`."""
    path = out / RUN_FILE
    saved = read_json(path, RUN_FIX.format(path=path)) if path.is_file() else None
    if data is None:
        if saved is None:
            raise TrickLabError(f"--resume: {out} has no {RUN_FILE} (a run from an older tricklab) to tell its data; "
                                f"fix: give the run's --data (and --dev/--test) again")
        args = saved["data"]["args"]
        data, dev, test = args["data"], args.get("dev"), args.get("test")
        for what, p in (("data", data), ("dev", dev), ("test", test)):
            if p and not Path(p).exists():
                raise TrickLabError(f"--resume: the run's --{what} {p} (from {path}) is gone; fix: give --data (and "
                                    f"--dev/--test) where the files are now, with --force if they are not the same")
    record = data_record(data, dev, test)
    diffs = differences(saved, record, versions()) if saved is not None else []
    if diffs and not force:
        raise TrickLabError(f"--resume: {out} was trained with other data or software, so resuming would not continue "
                            f"the same run: " + "; ".join(diffs) + ". Fix: resume with the run's own files and versions, "
                            f"start a new run (another --out, or --overwrite), or add --force to continue anyway")
    return data, dev, test, record, diffs


def note_resume(out: Path, record: dict[str, Any], forced: list[str]) -> None:
    """Append this resume (time, versions, and what was forced) to run.json; write one if the run had none."""
    path = out / RUN_FILE
    if not path.is_file():
        write_run_json(out, record)
    info = read_json(path, RUN_FIX.format(path=path))
    info.setdefault("resumes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
                                           "data": record, "forced": forced})
    write_json(path, info)
