"""data.on_invalid: what a row-level problem does. `error` (the default): every problem of every file is reported
and the run stops. `skip`: the row is dropped and recorded (split, file, line, reason); the run prints the count,
writes the rows to OUT/skipped_rows.tsv and counts them in metrics.json. Row-level problems: wrong column counts,
empty texts or labels, invalid JSON lines, labels unknown to train or out of range, NaN/non-number regression
targets, bad soft labels. File-level problems (a missing file, an undecodable or empty file, a column that does
not exist, a file whose labels are nearly all unknown to train: another labelling scheme) always stop, and so does
a split that skipping leaves empty.

Problems are the readers' and labels' own messages, which start with `<file> line <n>: ` (or `row <n>`); a message
that names no row of the file is a file-level problem. Library: csv (standard library) writes the TSV."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..runfiles import atomic_open
from .readers import Row

WHERE = re.compile(r"(?:line|row) (\d+): (.*)", re.S)
SKIPPED_FILE = "skipped_rows.tsv"


@dataclass
class Skipped:
    split: str      # the split of the file the row is in (rows held out of train count as train)
    source: str
    line: int
    reason: str


def row_problem(source: str, msg: str) -> tuple[int, str] | None:
    """(line, reason) when `msg` is about one row of `source`, else None."""
    if not msg.startswith(source + " "):
        return None
    m = WHERE.fullmatch(msg[len(source) + 1:])
    return (int(m.group(1)), m.group(2)) if m else None


class InvalidRows:
    """Row problems of every file: added to `problems` (error) or recorded and their rows dropped (skip)."""

    def __init__(self, mode: str):
        self.skip = mode == "skip"
        self.rows: dict[str, list[Skipped]] = {}   # split -> skipped rows, for every split read from a file
        self.row_problems = 0                      # error mode: how many of the problems are about single rows

    def read(self, split: str, source: str, read: Callable[[list[str]], list[Row]], problems: list[str]) -> list[Row]:
        """`read(found)` -> the valid rows of one file, its problems appended to `found`. A file that yields no
        rows stops the run with its problems (a file-level problem, or every row invalid)."""
        found: list[str] = []
        rows = read(found)
        self.rows.setdefault(split, [])
        if rows:
            self.row_problems += len(found)
        if not self.skip or not found:
            problems += found
            return rows
        if not rows:
            problems += found
            if all(row_problem(source, m) for m in found):
                problems.append(f"{source}: no valid rows: data.on_invalid=skip dropped all {len(found)}; fix the "
                                f"file (the problems above)")
            return rows
        self._record(split, source, found, problems)
        return rows

    def keep_valid(self, split: str, source: str, rows: list[Row], fn: Callable[[list[Row]], Any],
                   problems: list[str]) -> tuple[list[Row], Any]:
        """(rows, fn(rows)). fn raises DataError naming bad rows: error mode adds its problems (result None); skip
        mode drops those rows and calls fn again on the rest."""
        while True:
            try:
                return rows, fn(rows)
            except DataError as e:
                lines = {p[0] for m in e.problems if (p := row_problem(source, m))}
                self.row_problems += len(lines)
                if not self.skip or not self._record(split, source, e.problems, problems):
                    if not self.skip:
                        problems += e.problems
                    return rows, None
                kept = [r for r in rows if r.line not in lines]
                if len(kept) == len(rows):   # the problems name no row of this file: they cannot be skipped
                    problems += e.problems
                    return rows, None
                rows = kept
                if not rows:
                    problems.append(f"{source}: no valid rows left: data.on_invalid=skip dropped them all; fix the "
                                    f"file (see {SKIPPED_FILE} in the run folder, or run with data.on_invalid=error)")
                    return rows, None

    def _record(self, split: str, source: str, found: list[str], problems: list[str]) -> bool:
        """Record row problems as skipped; any other problem goes to `problems` (False: nothing recorded)."""
        parsed = [(m, row_problem(source, m)) for m in found]
        problems += [m for m, p in parsed if p is None]
        got = [Skipped(split, source, p[0], p[1]) for _, p in parsed if p is not None]
        self.rows.setdefault(split, []).extend(got)
        return bool(got) and len(got) == len(parsed)

    def counts(self) -> dict[str, int] | None:
        """Skipped rows per split (None unless skipping): metrics.json's "skipped_rows"."""
        return {k: len(v) for k, v in self.rows.items()} if self.skip else None

    def hint(self, verb: str = "train", listed_in: str = f"the run folder's {SKIPPED_FILE}") -> str | None:
        """error mode: the line that tells how to go on without the bad rows."""
        if self.skip or not self.row_problems:
            return None
        return (f"{self.row_problems} row(s) above are invalid; fix them, or --set data.on_invalid=skip to {verb} "
                f"without them (each skipped row listed in {listed_in})")


def write_skipped(path: Path, skipped: dict[str, list[Skipped]]) -> None:
    """split, file, line, reason: one skipped row per line (a header line first)."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["split", "file", "line", "reason"])
        for rows in skipped.values():
            for s in rows:
                w.writerow([s.split, s.source, s.line, s.reason.replace("\t", " ").replace("\n", " ")])


def skipped_note(skipped: dict[str, list[Skipped]], where: Path) -> str:
    total = sum(len(v) for v in skipped.values())
    per = ", ".join(f"{k} {len(v)}" for k, v in skipped.items())
    return (f"data.on_invalid=skip: {total} invalid row(s) skipped ({per})" + (f", each with file:line and reason "
            f"in {where}" if total else ""))
