"""Run folders and bundles that survive kills, broken copies and hostile links. Every writer of run files uses this:

  atomic_open / atomic_write / write_json   a temporary file in the same folder (tempfile.mkstemp: a fresh name,
                                            never an existing link), fsync, os.replace: a kill leaves the old file
                                            or the new one, never half of one
  writable / confine                        a path must stay inside its folder once resolved; a write never goes
                                            through a symbolic link (or a linked folder) out of it
  check_tokenizer(_files)                   a tokenizer without its vocabulary (every character [UNK]) refused
  read_json                                 a damaged JSON file is one line naming it and the fix, not a traceback
  write_manifest / check_manifest           manifest.json: every file's size and SHA-256, checked at load
  RunLock                                   one writer per run folder (fcntl.flock on .tricklab.lock, holder's pid)
  child_env / watch_parent                  training subprocesses that die with their parent (Linux
                                            prctl(PR_SET_PDEATHSIG) through ctypes; elsewhere a watchdog thread)

Standard library only (os, tempfile, hashlib, fcntl, ctypes).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from .errors import TrickLabError

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".tricklab.lock"
PARENT_ENV = "TRICKLAB_PARENT_PID"
UNHASHED = (MANIFEST_FILE, "README.md", LOCK_FILE)   # the model card is rewritten after the manifest


# ---------------------------------------------------------------- paths


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(root: str | Path, path: str | Path, what: str, fix: str | None = None) -> Path:
    """`path` resolved (links followed), which must lie inside `root` (resolved); else one line naming both."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if not _inside(p, r):
        raise TrickLabError(f"{path}: {what} points outside {root} (to {p}); refusing to use it; fix: "
                            + (fix or f"remove the link, or copy the files into {root}"))
    return p


def writable(path: str | Path, root: str | Path | None = None) -> Path:
    """Where to write `path` so that the write stays inside `root` (default: the file's folder): its folder,
    resolved, must lie inside `root`, and the file must not be a link to anywhere else. Returns the resolved path."""
    p = Path(path)
    r = Path(root).resolve() if root is not None else p.parent.resolve()
    parent = p.parent.resolve()
    if not _inside(parent, r):
        raise TrickLabError(f"{p}: its folder {p.parent} links outside {root} (to {parent}); refusing to write "
                            f"there; fix: remove the link, or give another --out")
    if p.is_symlink():
        target = p.resolve()
        raise TrickLabError(f"{p}: a symbolic link (to {target}); refusing to write through it"
                            + (" out of " + str(root) if not _inside(target, r) else "")
                            + f"; fix: remove the link (rm {p}), or give another --out")
    return parent / p.name


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", root: str | Path | None = None, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Write to a fresh temporary file beside `path` (checked by `writable`), then fsync and os.replace it into
    place; on an exception the temporary file is removed and `path` keeps its old content."""
    dest = writable(path, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """Where tricklab keeps per-host caches (measured precision, token cache): $TRICKLAB_CACHE, else
    ~/.cache/tricklab."""
    return Path(os.environ.get("TRICKLAB_CACHE") or Path.home() / ".cache" / "tricklab")


def atomic_write(path: str | Path, data: str | bytes, root: str | Path | None = None) -> None:
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", root) as f:
        f.write(data)


def write_json(path: str | Path, obj: Any, root: str | Path | None = None, **kw: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, **kw), root)


def read_json(path: str | Path, fix: str) -> Any:
    """A JSON file, or one line: which file is damaged (truncated by a kill, edited) and the fix."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrickLabError(f"{p}: missing; fix: {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TrickLabError(f"{p}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}: "
                            f"truncated or damaged); fix: {fix}") from None


# ---------------------------------------------------------------- manifests


def file_digest(path: str | Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def write_manifest(folder: str | Path, names: Iterable[str] | None = None) -> dict[str, Any]:
    """manifest.json: size and SHA-256 of the files `names` of `folder` (default: every file, subfolders included,
    but the model card and the manifest itself), for check_manifest at load. Files added later (e.g. evaluate's
    reports in a bundle folder) are not part of it."""
    d = Path(folder)
    paths = sorted(d.rglob("*")) if names is None else [d / n for n in sorted(set(names))]
    files = {p.relative_to(d).as_posix(): file_digest(p) for p in paths
             if p.is_file() and not p.is_symlink() and p.name not in UNHASHED and not p.name.endswith(".tmp")}
    man = {"manifest_version": 1, "files": files}
    write_json(d / MANIFEST_FILE, man)
    return man


def check_manifest(folder: str | Path, fix: str) -> bool:
    """True when `folder` has a manifest and every file in it is there, inside the folder, with its size and
    SHA-256; False when it has none (made before manifests). Else one line naming the file and `fix`."""
    d = Path(folder)
    if not (d / MANIFEST_FILE).is_file():
        return False
    man = read_json(d / MANIFEST_FILE, fix)
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, dict):
        raise TrickLabError(f"{d / MANIFEST_FILE}: not a manifest (no files); fix: {fix}")
    for name, want in files.items():
        p = d / name
        if not p.is_file():
            raise TrickLabError(f"{p}: missing (listed in {MANIFEST_FILE}); fix: {fix}")
        confine(d, p, "a file of the manifest")
        size = p.stat().st_size
        if size != want.get("bytes"):
            raise TrickLabError(f"{p}: {size} bytes, {MANIFEST_FILE} says {want.get('bytes')} (truncated or "
                                f"replaced); fix: {fix}")
        if file_digest(p)["sha256"] != want.get("sha256"):
            raise TrickLabError(f"{p}: content differs from {MANIFEST_FILE} (sha256 mismatch: damaged or edited); "
                                f"fix: {fix}")
    return True


# ---------------------------------------------------------------- tokenizer files (folders without a manifest)

# files holding a tokenizer's vocabulary (one of them is needed; without it every character reads as [UNK])
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
               "tokenizer.model")


def check_tokenizer_files(d: Path, fix: str) -> None:
    """Folders without a manifest (saved before manifests): the tokenizer's files must be there."""
    if not (d / "tokenizer_config.json").is_file():
        raise TrickLabError(f"{d / 'tokenizer_config.json'}: missing (the tokenizer cannot be rebuilt); fix: {fix}")
    if not any((d / f).is_file() for f in VOCAB_FILES):
        raise TrickLabError(f"{d / 'tokenizer.json'}: missing, and no other vocabulary file ({', '.join(VOCAB_FILES[1:])})"
                            f": every character would read as [UNK]; fix: {fix}")


def check_tokenizer(tok: Any, d: Path, fix: str) -> None:
    """A tokenizer that knows only its special tokens (its vocabulary file lost) would predict garbage."""
    if len(tok) <= len(set(tok.all_special_tokens)):
        raise TrickLabError(f"{d}: the tokenizer loaded with {len(tok)} tokens, only its special ones (its vocabulary "
                            f"file, e.g. tokenizer.json, is missing or empty); fix: {fix}")


# ---------------------------------------------------------------- one writer per run folder

_HELD: dict[Path, "RunLock"] = {}


class RunLock:
    """An exclusive lock on a run folder for the life of a run: fcntl.flock on FOLDER/.tricklab.lock, which holds
    the holder's pid. The kernel releases it when the holder exits, even on kill -9. Re-entrant in a process.
    Without fcntl (Windows) it does nothing."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.key = self.folder.resolve()
        self.fd: int | None = None
        self.depth = 0
        self.created = False   # the folder did not exist before the lock

    def acquire(self) -> "RunLock":
        held = _HELD.get(self.key)
        if held is not None:
            held.depth += 1
            return held
        try:
            import fcntl
        except ImportError:
            return self
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = writable(self.folder / LOCK_FILE, self.folder)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise TrickLabError(f"{self.folder}: in use by another tricklab process (pid {holder}), which is "
                                f"writing this run; fix: wait for it to end, stop it (kill {holder}), or use "
                                f"another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self.fd, self.depth = fd, 1
        _HELD[self.key] = self
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        _HELD.pop(self.key, None)
        if self.created:   # a run that stopped before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                if [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                    os.unlink(self.folder / LOCK_FILE)   # still locked: no other process holds it meanwhile
                    os.rmdir(self.folder)
        os.close(self.fd)   # closing the descriptor drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        _HELD.get(self.key, self).release()


def holder(folder: str | Path) -> str | None:
    """The pid holding the run folder's lock, or None when it is free (checked by taking it and letting go)."""
    try:
        with RunLock(folder):
            return None
    except TrickLabError:
        return (Path(folder) / LOCK_FILE).read_text(encoding="ascii", errors="replace").strip() or "unknown"


# ---------------------------------------------------------------- children that die with their parent


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a training subprocess: it will stop when this process ends (watch_parent)."""
    return dict(env, **{PARENT_ENV: str(os.getpid())})


def watch_parent() -> None:
    """In a subprocess started with child_env: end this process when its parent ends (kill -9 included).
    Linux: prctl(PR_SET_PDEATHSIG, SIGTERM); elsewhere, a thread that polls the parent pid. Idempotent."""
    want = os.environ.pop(PARENT_ENV, None)    # popped: this process's own children watch it, not its parent
    if not want or not want.isdigit():
        return
    parent = int(want)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:                  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)

    def poll() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)                   # a handler that ignores SIGTERM does not keep it alive
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=poll, name="tricklab-watch-parent", daemon=True).start()
