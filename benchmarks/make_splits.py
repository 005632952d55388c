"""Deterministic splits (seed 1) of shared datasets that ship without the split an experiment needs,
in formats tricklab reads as they are (`tricklab train --data OUT/<name>`):

  chnsenticorp_htl/  hotel reviews (long texts), stratified by label; train/dev/test.tsv with a header
                     `text<TAB>label`, labels `negative`/`positive` (source 0/1); empty reviews dropped
  stsb_zh/           Chinese STS-B dev pairs (the only split published here), random split;
                     train/dev/test.tsv with a header `text_a<TAB>text_b<TAB>score`; scores are written as
                     decimals (`4.0`) so the task is detected as regression (integers would read as classes)
  thucnews_longtail/ THUCNews with a long tail: train and dev keep each class at LONGTAIL[class id] of its
                     lines (100%, 100%, 30%, 30%, 10%, 10%, 3%, 3%, 1%, 1%: about 1937 ... 19 training
                     headlines), drawn with the seed; test is the full balanced test set (1,000 per class), so
                     per-class F1 and macro-F1 of the rare classes are measured on 1,000 headlines each

A `splits.json` in each folder records the source file, its SHA-256, the seed and the counts.

    .venv/bin/python benchmarks/make_splits.py [--shared ../shared/data] [--out benchmarks/data]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 1
RATIOS = (0.8, 0.1, 0.1)
LONGTAIL = (1.0, 1.0, 0.3, 0.3, 0.1, 0.1, 0.03, 0.03, 0.01, 0.01)   # share kept per THUCNews class id
SPLITS = ("train", "dev", "test")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cut(items: list, rng: random.Random) -> dict[str, list]:
    """Shuffle, then 80/10/10 (dev and test rounded, train takes the rest)."""
    items = list(items)
    rng.shuffle(items)
    n_dev, n_test = round(len(items) * RATIOS[1]), round(len(items) * RATIOS[2])
    return {"dev": items[:n_dev], "test": items[n_dev:n_dev + n_test], "train": items[n_dev + n_test:]}


def clean(text: str) -> str:
    """One line per example in a TSV: tabs and line breaks inside a text become spaces."""
    return " ".join(text.replace("\t", " ").splitlines()).strip()


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header] + rows) + "\n", encoding="utf-8")


def write_info(folder: Path, source: Path, counts: dict[str, int], extra: dict, ratios: tuple | None = RATIOS) -> None:
    info = {"source": str(source), "sha256": sha256(source), "seed": SEED, "counts": counts, **extra}
    if ratios is not None:
        info["ratios"] = ratios
    (folder / "splits.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def chnsenticorp_htl(shared: Path, out: Path) -> dict[str, int]:
    src = shared / "chnsenticorp_htl" / "ChnSentiCorp_htl_all.csv"
    with src.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != ["label", "review"]:
        sys.exit(f"error: {src} line 1: expected the header label,review, got {rows[0]}")
    names = {"0": "negative", "1": "positive"}
    by_label: dict[str, list[list[str]]] = {}
    dropped = 0
    for line, r in enumerate(rows[1:], 2):
        if len(r) != 2 or r[0] not in names:
            sys.exit(f"error: {src} record {line}: expected label 0 or 1 and a review, got {r!r}")
        text = clean(r[1])
        if not text:
            dropped += 1
            continue
        by_label.setdefault(names[r[0]], []).append([text, names[r[0]]])
    rng = random.Random(SEED)
    parts = {s: [] for s in SPLITS}
    for label in sorted(by_label):                      # stratified: each class cut 80/10/10 on its own
        for s, items in cut(by_label[label], rng).items():
            parts[s] += items
    folder = out / "chnsenticorp_htl"
    folder.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        rng.shuffle(parts[s])                           # mix the classes within each split
        write_tsv(folder / f"{s}.tsv", ["text", "label"], parts[s])
    counts = {s: len(parts[s]) for s in SPLITS}
    write_info(folder, src, counts, {"stratified": True, "dropped_empty": dropped,
                                     "per_class": {s: {c: sum(r[1] == c for r in parts[s]) for c in sorted(by_label)}
                                                   for s in SPLITS}})
    return counts


def stsb_zh(shared: Path, out: Path) -> dict[str, int]:
    src = shared / "stsb_zh" / "sts-b-dev.txt"
    rows = []
    for line, ln in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not ln.strip():
            continue
        cells = ln.split("\t")
        try:
            score = float(cells[2])
        except (IndexError, ValueError):
            sys.exit(f"error: {src} line {line}: expected text_a<TAB>text_b<TAB>score, got {ln[:80]!r}")
        rows.append([clean(cells[0]), clean(cells[1]), f"{score:.1f}"])
    parts = cut(rows, random.Random(SEED))
    folder = out / "stsb_zh"
    folder.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_tsv(folder / f"{s}.tsv", ["text_a", "text_b", "score"], parts[s])
    counts = {s: len(parts[s]) for s in SPLITS}
    write_info(folder, src, counts, {"stratified": False, "task": "regression"})
    return counts


def thucnews_longtail(shared: Path, out: Path) -> dict[str, int]:
    src = shared / "thucnews"
    folder = out / "thucnews_longtail"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    counts, per_class = {}, {}
    for split in SPLITS:
        lines = [ln for ln in (src / f"{split}.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
        if split != "test":
            by_class: dict[int, list[str]] = {}
            for ln in lines:
                by_class.setdefault(int(ln.rsplit("\t", 1)[1]), []).append(ln)
            lines = []
            for c in sorted(by_class):
                keep = max(1, round(len(by_class[c]) * LONGTAIL[c]))
                lines += rng.sample(by_class[c], keep)
            rng.shuffle(lines)
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(lines)
        per_class[split] = {c: sum(ln.endswith(f"\t{c}") for ln in lines) for c in range(len(LONGTAIL))}
    (folder / "class.txt").write_text((src / "class.txt").read_text(encoding="utf-8"), encoding="utf-8")
    write_info(folder, src / "train.txt", counts, {"kept_share_per_class": LONGTAIL, "per_class": per_class,
                                                   "test": "the full test.txt"}, ratios=None)
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data", help="where the split folders go")
    a = ap.parse_args(argv)
    for need in ("chnsenticorp_htl/ChnSentiCorp_htl_all.csv", "stsb_zh/sts-b-dev.txt", "thucnews/train.txt"):
        if not (a.shared / need).is_file():
            sys.exit(f"error: {a.shared / need} not found; fix: give the shared data folder with --shared")
    for name, fn in (("chnsenticorp_htl", chnsenticorp_htl), ("stsb_zh", stsb_zh), ("thucnews_longtail", thucnews_longtail)):
        counts = fn(a.shared, a.out)
        print(f"{a.out / name}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))


if __name__ == "__main__":
    main()
