"""Collect finished runs' metrics.json into one markdown table, mean +- std over seeds.

    python benchmarks/collect_runs.py runs/duee                       # every run folder below
    python benchmarks/collect_runs.py 'runs/tnews/*/seed*' --split dev

A run folder holds metrics.json (`tricklab train --out`). Folders named `<variant>/seed<k>` are
grouped by `<variant>` (mean +- sample std over the seeds, n in the `runs` column); any other folder
is a variant of its own. Metrics are read from the split the run was evaluated on (its test split if
it had one: metrics.json "evaluated_on"), or from `--split`.

Columns (only those some run has):
  accuracy, macro_f1, f1_positive, weighted_f1       single-label
  micro_f1 / macro_f1 at threshold 0.5, *_tuned      multi-label, thresholds tuned per label on dev
  ece, ece_calibrated, temperature                   single-label calibration (15-bin ECE; T fitted on dev)
  pearson, spearman                                  regression
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

FIELDS = ("accuracy", "macro_f1", "f1_positive", "micro_f1", "micro_f1_tuned", "macro_f1_tuned", "ece",
          "ece_calibrated", "temperature", "pearson", "spearman")
SEED = re.compile(r"^seed\d+$")


def find_runs(specs: list[str]) -> list[Path]:
    """Run folders (holding metrics.json) from folders, globs, or parents of run folders."""
    runs: list[Path] = []
    for spec in specs:
        paths = [Path(p) for p in sorted(glob.glob(spec))] if glob.has_magic(spec) else [Path(spec)]
        for p in paths:
            if (p / "metrics.json").is_file():
                runs.append(p)
            elif p.is_dir():
                runs += sorted(m.parent for m in p.rglob("metrics.json"))
    return list(dict.fromkeys(runs))


def variant_of(run: Path) -> str:
    return run.parent.name if SEED.match(run.name) else run.name


def read_metrics(run: Path, split: str | None) -> dict[str, Any]:
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    if split is None:
        return {**m, "split": m.get("evaluated_on", "?")}
    if split not in m:
        raise SystemExit(f"error: {run / 'metrics.json'} has no {split!r} split (it has: "
                         f"{', '.join(k for k in ('dev', 'test') if k in m)}); fix: choose another --split")
    return {**m[split], "split": split, "temperature": m.get("temperature")}


def fmt(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(runs: list[Path], split: str | None = None) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(variant_of(run), []).append(read_metrics(run, split))
    cols = [f for f in FIELDS if any(isinstance(m.get(f), (int, float)) for ms in groups.values() for m in ms)]
    lines = ["| variant | runs | split | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for name, ms in groups.items():
        cells = [fmt([float(m[c]) for m in ms if isinstance(m.get(c), (int, float))]) for c in cols]
        splits = ",".join(sorted({str(m["split"]) for m in ms}))
        lines.append(f"| {name} | {len(ms)} | {splits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders, globs ('runs/x/*/seed*'), or folders holding runs")
    ap.add_argument("--split", choices=["dev", "test"], help="read this split (default: the run's evaluated_on)")
    args = ap.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"error: no metrics.json under {', '.join(args.runs)}; give finished run folders (tricklab train --out)",
              file=sys.stderr)
        return 2
    print(table(runs, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
