"""Atomic, pickle-free checkpoints for --resume: a folder written under a temporary name, renamed
into place, then a `latest` pointer replaced atomically. A run killed at any instant resumes from
the last complete checkpoint."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import TrickLabError
from ..model.adapters import frozen_base_keys
from ..runfiles import atomic_open, atomic_write, confine

atomic_write_text = atomic_write   # the name of 0.1
STEP_RE = re.compile(r"step-\d{8}")


def remove(p: Path) -> None:
    """Remove a file, a folder, or a link (never what a link points to)."""
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place (the old one, if any, is removed after)."""
    old = final.with_name(final.name + ".old")
    remove(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    remove(old)


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def set_rng_state(s: dict[str, Any]) -> None:
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def weights_digest(state: dict[str, torch.Tensor], keys: set[str]) -> str:
    """SHA-256 of the named entries of a state dict (name, dtype, shape and bytes, in name order): checks on
    --resume that the frozen base weights a checkpoint leaves out are those it was trained on."""
    h = hashlib.sha256()
    for k in sorted(keys):
        t = state[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def resume_weights(model: torch.nn.Module, digest: str | None = None) -> tuple[dict[str, torch.Tensor],
                                                                               dict[str, Any] | None]:
    """What a resume checkpoint holds of `model`: its whole state dict; with adapters (trick lora) everything but
    the frozen base weights (the adapters, the head, any other trainable weight), and a record of what it leaves
    out, {"keys": n, "sha256": weights_digest} (`digest`: that hash when the caller already has it)."""
    state = model.state_dict()
    base = frozen_base_keys(model)
    if not base:
        return state, None
    return ({k: v for k, v in state.items() if k not in base},
            {"keys": len(base), "sha256": digest or weights_digest(state, base)})


def load_resume_weights(model: torch.nn.Module, saved: dict[str, torch.Tensor], frozen: dict[str, Any] | None,
                        path: Path) -> str | None:
    """Load a checkpoint's weights into the freshly built `model`. A checkpoint without the frozen base weights
    (adapters) loads onto the base the model was built on, once that base is checked to be the one trained on;
    anything else that does not fit is one error. Returns the base's digest (None without adapters)."""
    state = model.state_dict()
    base = frozen_base_keys(model)
    missing, unexpected = set(state) - set(saved), set(saved) - set(state)
    fix = "resume with the model and tricks the run was started with, or train again without --resume"
    if (missing and missing != base) or unexpected or (missing and frozen is None):
        raise TrickLabError(f"{path}: the checkpoint does not fit the model built for this run (missing "
                            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); fix: {fix}")
    if not missing:                                    # a whole state dict (no adapters, or from before)
        model.load_state_dict(saved)
        return weights_digest(state, base) if base else None
    digest = weights_digest(state, base)
    if frozen.get("keys") != len(base) or frozen.get("sha256") != digest:
        raise TrickLabError(f"{path}: the checkpoint holds the adapters and head only, and the base model's "
                            f"weights differ from those the run was trained on ({len(base)} frozen tensors, SHA-256 "
                            f"{digest[:12]}, trained on {str(frozen.get('sha256'))[:12]}); fix: put back the base "
                            f"model the run started from, or train again without --resume")
    model.load_state_dict(saved, strict=False)
    return digest


def save_checkpoint(root: Path, step: int, model_state: dict[str, torch.Tensor], blobs: dict[str, Any],
                    state: dict[str, Any], keep: int = 1) -> Path:
    """blobs: name -> object saved with torch.save (optimizer, scheduler, tricks; tensors/numbers only)."""
    root.mkdir(parents=True, exist_ok=True)
    confine(root.parent, root, "the checkpoints folder")         # never written through a link out of the run
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    remove(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    blobs = dict(blobs, torch_rng=torch.get_rng_state(),
                 cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    for name, obj in blobs.items():
        with atomic_open(tmp / f"{name}.pt", "wb") as f:
            torch.save(obj, f)
    atomic_write(tmp / "state.json", json.dumps(dict(state, rng=rng_state())))
    replace_dir(tmp, final)
    atomic_write(root / "latest", final.name)
    for old in sorted(root.glob("step-*")):
        if old.is_dir() and old.name != final.name and not old.name.endswith(".tmp"):
            if len([p for p in root.glob("step-*") if p.is_dir()]) > keep:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `root/latest` names: a step-NNNNNNNN folder of `root`, inside the run folder (root's parent)
    once links are resolved; anything else is refused with one line (a run folder is not trusted to point out)."""
    ptr = root / "latest"
    if not ptr.is_file():
        return None
    fix = f"delete {ptr} (and any link in {root}) to train again from the start, or restore the run folder"
    confine(root.parent, ptr, "the checkpoint pointer", fix)
    name = ptr.read_text(encoding="utf-8", errors="replace").strip()
    if not STEP_RE.fullmatch(name):
        raise TrickLabError(f"{ptr}: names {name[:80]!r}, not a checkpoint of this run (step-NNNNNNNN); fix: {fix}")
    p = root / name
    if p.exists() or p.is_symlink():
        confine(root.parent, p, "the checkpoint", fix)
    return p if (p / "state.json").is_file() else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    try:
        model_state = load_file(str(path / "model.safetensors"))
        blobs = {p.stem: torch.load(p, weights_only=True, map_location="cpu") for p in path.glob("*.pt")}
        state = json.loads((path / "state.json").read_text())
    except Exception as e:  # a corrupt checkpoint is a user-facing problem, not a traceback
        raise TrickLabError(f"{path}: checkpoint unreadable ({e}); fix: delete it to resume from the one before, "
                            f"or train again without --resume") from None
    torch.set_rng_state(blobs.pop("torch_rng"))
    cuda = blobs.pop("cuda_rng", [])
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    set_rng_state(state.pop("rng"))
    return model_state, blobs, state
