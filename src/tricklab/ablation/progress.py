"""compare's console while runs train: one line per run at each of its dev evaluations (variant, seed, step of total,
elapsed, ETA, the dev metric and macro-F1), and a line with the training loss when a run has been quiet for
`quiet_s` seconds. It reads what every run already writes, OUT/<variant>/seed<k>/log.jsonl (training.loop: train
records {"step", "total_steps", "loss", ...}, dev records {"step", "total_steps", "dev/<metric>", ...}), so it works
the same for runs in this process and for `--jobs` subprocesses: a background thread polls the logs of the runs
that are training, and `stop` reads a run's last records before its result is reported.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Watched:
    label: str
    log: Path
    offset: int                       # bytes of log.jsonl already read
    started: float = field(default_factory=time.monotonic)
    first: tuple[float, int] | None = None   # (time, step) of the first record seen (ETA of resumed runs)
    fresh: bool = True                # the run starts at step 0 (not resumed): ETA from the start time
    last_line: float = field(default_factory=time.monotonic)
    pending: str = ""                 # a partial last line of the log


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Watch the log.jsonl of running runs and print their progress lines with `say`."""

    def __init__(self, say: Callable[[str], None], metric: str, poll_s: float = 1.0, quiet_s: float = 60.0):
        self.say, self.metric, self.poll_s, self.quiet_s = say, metric, poll_s, quiet_s
        self.runs: dict[str, Watched] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="compare-progress")

    def __enter__(self) -> "Progress":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def start(self, label: str, folder: Path, resumed: bool) -> None:
        """Watch a run whose folder is ready (a restarted run's old folder already removed)."""
        log = folder / "log.jsonl"
        offset = log.stat().st_size if resumed and log.is_file() else 0
        with self.lock:
            self.runs[label] = Watched(label, log, offset, fresh=not resumed)

    def stop(self, label: str) -> None:
        """Read the run's last records, then stop watching it."""
        with self.lock:
            w = self.runs.pop(label, None)
            if w is not None:
                self._read(w)

    def _loop(self) -> None:
        while not self.done.wait(self.poll_s):
            with self.lock:
                for w in list(self.runs.values()):
                    self._read(w)

    def _read(self, w: Watched) -> None:
        try:
            with open(w.log, "rb") as f:
                f.seek(w.offset)
                chunk = f.read()
        except OSError:
            return
        w.offset += len(chunk)
        text = w.pending + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        w.pending = lines.pop()
        for line in filter(None, (ln.strip() for ln in lines)):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._record(w, rec)

    def _record(self, w: Watched, rec: dict[str, Any]) -> None:
        now = time.monotonic()
        step, total = rec.get("step"), rec.get("total_steps")
        if not isinstance(step, int) or not isinstance(total, int):
            return
        if w.first is None:
            w.first = (now, step)
        dev = f"dev/{self.metric}" in rec
        if not dev and now - w.last_line < self.quiet_s:
            return
        w.last_line = now
        parts = [f"step {step}/{total} ({step / max(total, 1):.0%})", f"{_clock(now - w.started)} elapsed"]
        t0, s0 = (w.started, 0) if w.fresh else w.first
        if step > s0 and step < total:
            parts.append(f"ETA {_clock((now - t0) / (step - s0) * (total - step))}")
        if dev:
            parts.append(f"dev {self.metric} {rec[f'dev/{self.metric}']:.4f}")
            if self.metric != "macro_f1" and "dev/macro_f1" in rec:
                parts.append(f"macro-F1 {rec['dev/macro_f1']:.4f}")
        elif isinstance(rec.get("loss"), (int, float)):
            parts.append(f"loss {rec['loss']:.4f}")
        self.say(f"  {w.label}: " + ", ".join(parts))
