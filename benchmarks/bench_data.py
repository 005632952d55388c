"""Preparing the training set from a large CSV: a tricklab tree's reader and tokenisation, peak RSS and time.

Writes an N-row CSV (header `text,label`) by repeating ../shared/data/thucnews/train.txt (19,371 headlines), then
times, each in its own subprocess (so peak RSS is its own), what `tricklab train` does before the model's first step
with the data: data.load_data (read, validate, label, hold out 10% dev) and training.setup.encode_splits (tokenise
train and dev, m3e-small's tokenizer, max_length 32):

    before   --before-src (e.g. main's checkout): the reader and tokenisation of that tree
    after    this tree, an empty token cache (tokenise into the memory-mapped cache)
    cached   this tree again, the cache the `after` run filled (every later run of a grid)

Peak RSS is the process's maximum resident set (ru_maxrss), including Python, torch and the tokenizer (`baseline`:
the same process before reading the data).

    .venv/bin/python benchmarks/bench_data.py --before-src ../main/src [--rows 1000000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = next((p / "shared" / "data" / "thucnews" for p in (ROOT.parent, ROOT.parent.parent)
             if (p / "shared" / "data" / "thucnews").is_dir()), ROOT.parent / "shared" / "data" / "thucnews")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from tricklab.config import load_config
from tricklab.data import load_data
from tricklab.model.resolve import resolve_model
from tricklab.training.setup import encode_splits
from transformers import AutoTokenizer
cfg = load_config(None, ["model.name=m3e-small", "data.max_length=32", "task=single_label"])
tok = AutoTokenizer.from_pretrained(resolve_model("m3e-small"))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
bundle = load_data(cfg, sys.argv[1])
t1 = time.perf_counter()
enc = encode_splits(cfg, bundle, tok, False, [])
t2 = time.perf_counter()
print(json.dumps({"rows": len(bundle.train) + len(bundle.dev), "read_s": t1 - t0, "tokenise_s": t2 - t1,
                  "total_s": t2 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "baseline_mb": base, "tokens": int(enc.train.lengths.sum())}))
"""


def write_csv(path: Path, rows: int) -> None:
    lines = [ln.rsplit("\t", 1) for ln in (DATA / "train.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(rows):
            w.writerow(lines[i % len(lines)])


def run(src: Path, csv_path: Path, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), TRICKLAB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, "-c", CHILD, str(csv_path)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--before-src", required=True, help="src/ of the tree to compare with (e.g. main's checkout)")
    ap.add_argument("--keep", help="folder for the CSV and the cache (default: a temporary one, removed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        csv_path = work / "train.csv"
        if not csv_path.is_file() or sum(1 for _ in open(csv_path, encoding="utf-8")) != args.rows + 1:
            write_csv(csv_path, args.rows)
        cache = work / "cache"
        mb = csv_path.stat().st_size / 1e6
        results = {"before": run(Path(args.before_src), csv_path, cache),
                   "after": run(ROOT / "src", csv_path, cache),
                   "cached": run(ROOT / "src", csv_path, cache)}
    print(f"{args.rows:,} rows, {mb:.0f} MB CSV (m3e-small tokenizer, max_length 32)\n")
    print("| | read + validate (s) | tokenise (s) | total (s) | peak RSS (MB) | of which before the data (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['read_s']:.1f} | {r['tokenise_s']:.1f} | {r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['baseline_mb']:.0f} |")


if __name__ == "__main__":
    main()
