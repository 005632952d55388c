"""From `--data PATH` to validated, labelled splits. Nothing here touches a model."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..errors import ConfigError, DataError
from .columns import column_note
from .invalid import InvalidRows, Skipped
from .labels import LabelMap, build_label_map, detect_task, encode_labels, read_class_file
from .readers import Row, read_rows

EXTS = (".txt", ".tsv", ".csv", ".jsonl", ".json")
CLASS_FILES = ("class.txt", "classes.txt", "labels.txt", "label.txt")


@dataclass
class Split:
    name: str
    rows: list[Row]
    labels: list[Any]          # encoded: int | list[int] | float
    source: str
    soft: np.ndarray | None = None   # (N, C) soft labels from data.soft_label_column

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class DataBundle:
    task: str
    label_map: LabelMap
    train: Split
    dev: Split
    test: Split | None
    notes: list[str] = field(default_factory=list)
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)   # per split file: data/columns.column_choice
    skipped: dict[str, list[Skipped]] | None = None   # data.on_invalid=skip: the rows skipped, per split file
    test_held_out: bool = False                        # test came out of train (data.test_ratio)

    @property
    def score_on(self) -> str:
        """The split the run's final scores are on, and what that means for them."""
        if self.test is None:
            return (f"dev ({'held out of train' if self.dev.source == self.train.source else Path(self.dev.source).name}"
                    f"), the split that also picked the best checkpoint and fitted the calibration: optimistic")
        return "test (" + ("held out of train by data.test_ratio" if self.test_held_out
                           else Path(self.test.source).name) + ")"

    def skipped_counts(self) -> dict[str, int] | None:
        return None if self.skipped is None else {k: len(v) for k, v in self.skipped.items()}

    @property
    def is_pair(self) -> bool:
        return self.train.rows[0].text_b is not None

    def class_counts(self) -> list[int]:
        if self.task == "regression":
            return []
        counts = [0] * self.label_map.num_labels
        for y in self.train.labels:
            for c in (y if isinstance(y, list) else [y]):
                counts[c] += 1
        return counts


def _find(folder: Path, stem: str) -> Path | None:
    for ext in EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def locate(data: str | Path, dev: str | Path | None = None, test: str | Path | None = None
           ) -> tuple[Path, Path | None, Path | None, Path | None]:
    """(train, dev, test, class_file) from a folder (train/dev/test.*) or a single train file."""
    p = Path(data)
    if p.is_dir():
        train = _find(p, "train")
        if train is None:
            raise DataError(f"{p}: no train file: expected train.txt, train.tsv, train.csv or train.jsonl in the folder "
                            f"(found: {', '.join(sorted(x.name for x in p.iterdir())[:10]) or 'nothing'})")
        dev_p = Path(dev) if dev else _find(p, "dev") or _find(p, "valid") or _find(p, "validation")
        test_p = Path(test) if test else _find(p, "test")
        folder = p
    elif p.is_file():
        train, dev_p, test_p, folder = p, Path(dev) if dev else None, Path(test) if test else None, p.parent
    else:
        raise DataError(f"{p}: not found: --data takes a folder (train/dev/test files) or a training file")
    cls = next((folder / c for c in CLASS_FILES if (folder / c).is_file()), None)
    for q, flag in ((dev_p, "--dev"), (test_p, "--test")):
        if q is not None and not q.is_file():
            raise DataError(f"{q}: file not found: check the path given to {flag}")
    return train, dev_p, test_p, cls


def load_data(cfg: Config, data: str | Path, dev: str | Path | None = None, test: str | Path | None = None) -> DataBundle:
    """Read, validate and label every split; every problem is reported before any model loads (data.on_invalid=skip:
    rows with problems of their own are dropped and recorded instead, see data/invalid.py)."""
    train_p, dev_p, test_p, cls_p = locate(data, dev, test)
    d = cfg.data
    notes: list[str] = []
    problems: list[str] = []
    inv = InvalidRows(d.on_invalid)
    paths = {"train": train_p, "dev": dev_p, "test": test_p}
    raw: dict[str, list[Row]] = {}
    raw["train"] = train_rows = inv.read("train", str(train_p), lambda f: read_rows(train_p, d, problems=f), problems)
    if not train_rows:
        raise DataError(problems or [f"{train_p}: no examples"])
    for name, p in (("dev", dev_p), ("test", test_p)):
        if p is not None:
            raw[name] = inv.read(name, str(p), lambda f, p=p: read_rows(p, d, problems=f, pair=train_rows[0].text_b
                                                                       is not None), problems)
    columns = {name: rows.columns for name, rows in raw.items() if getattr(rows, "columns", None)}
    notes += [column_note(c, pin=name == "train") for name, c in columns.items()
              if name == "train" or c["roles"] != columns["train"]["roles"]]
    task = cfg.task
    if task == "auto":
        task = detect_task(train_rows, d.label_sep)
        notes.append(f"task: {task} (detected from {train_p.name}; set `task:` to override)")
    class_names = read_class_file(cls_p) if cls_p is not None and task != "regression" else None
    try:
        lm = build_label_map(task, train_rows, class_names, d.label_type, d.label_sep, str(cls_p or ""))
    except DataError as e:
        raise DataError(problems + e.problems) from None
    for name, p in (("dev", dev_p), ("test", test_p)):
        if name in raw and not raw[name] and not problems:
            problems.append(f"{p}: no examples in the file; fix: give it labelled lines, or leave it out")
    labels: dict[str, tuple[list[Any], np.ndarray | None]] = {}
    for name, rows in list(raw.items()):
        if not rows:
            raw.pop(name)
            continue
        soft = name == "train" and d.soft_label_column is not None

        def labelled(rs: list[Row], soft: bool = soft) -> tuple[list[Any], np.ndarray | None]:
            return (encode_labels(rs, lm, d.label_sep, str(cls_p or "")),
                    parse_soft_labels(rs, lm.num_labels) if soft else None)
        raw[name], labels[name] = inv.keep_valid(name, str(paths[name]), rows, labelled, problems)
    if problems:
        hint = inv.hint()
        if hint:   # among the first 20 lines DataError shows
            problems.insert(min(len(problems), 19), hint)
        raise DataError(problems)
    if task != "regression" and lm.num_labels < 2:
        raise DataError(f"{train_p}: only one class ({lm.names[0]!r}) in train: a classifier needs at least two")
    pair_flags = {name: rows[0].text_b is not None for name, rows in raw.items()}
    if len(set(pair_flags.values())) > 1:
        raise DataError(f"{train_p}: train and other splits disagree on sentence pairs ({pair_flags}); "
                        f"fix: give every split the same columns")
    splits = {name: Split(name, rows, labels[name][0], str(paths[name]), labels[name][1]) for name, rows in raw.items()}
    train, dev_s, test_s = held_out_splits(cfg, task, splits, notes)
    if d.max_train_per_class:
        train, note = per_class_subset(train, task, lm.names, d.max_train_per_class, cfg.train.seed)
        notes.append(note)
    if d.max_train_samples and len(train) > d.max_train_samples:
        rng = random.Random(cfg.train.seed)
        keep = sorted(rng.sample(range(len(train)), d.max_train_samples))
        train = Split("train", [train.rows[i] for i in keep], [train.labels[i] for i in keep], train.source,
                      None if train.soft is None else train.soft[keep])
        notes.append(f"train: using {len(train)} examples (data.max_train_samples)")
    bundle = DataBundle(task, lm, train, dev_s, test_s, notes, columns=columns, skipped=inv.rows if inv.skip else None,
                        test_held_out=test_s is not None and "test" not in raw)
    if test_s is None:
        notes.append(f"no test data: the final scores are on {bundle.score_on}; fix: give --test FILE (or a test "
                     f"file in the data folder), or hold one out with --set data.test_ratio=0.1")
    if bundle.is_pair and d.truncation != "head":  # before the model loads (encode() checks it again)
        raise ConfigError(f"config data.truncation={d.truncation}: single texts only, and {train_p.name} holds "
                          f"sentence pairs (cut from the end of the longer text); fix: --set data.truncation=head")
    return bundle


def per_class_subset(split: Split, task: str, names: list[str], k: int, seed: int) -> tuple[Split, str]:
    """A stratified sample of `k` rows per class (single-label), drawn with random.Random(seed) class by class in
    label-id order; classes with fewer than `k` rows keep them all. Rows keep their file order. (split, note)."""
    if task != "single_label":
        raise ConfigError(f"config data.max_train_per_class: a per-class sample is for single_label tasks, not "
                          f"{task}; fix: --set data.max_train_samples=N instead")
    rng = random.Random(seed)
    groups: dict[int, list[int]] = {}
    for i, y in enumerate(split.labels):
        groups.setdefault(y, []).append(i)
    keep: list[int] = []
    short = []
    for y in sorted(groups):
        idx = groups[y]
        if len(idx) <= k:
            keep += idx
            if len(idx) < k:
                short.append(f"{names[y]} ({len(idx)})")
        else:
            keep += rng.sample(idx, k)
    keep.sort()
    sub = Split(split.name, [split.rows[i] for i in keep], [split.labels[i] for i in keep], split.source,
                None if split.soft is None else split.soft[keep])
    note = (f"train: {len(sub)} of {len(split)} examples, at most {k} per class (data.max_train_per_class, "
            f"seed {seed})")
    if short:
        note += f"; fewer than {k} in train, all kept: {', '.join(short)}"
    missing = [names[c] for c in range(len(names)) if c not in groups]
    if missing:
        note += f"; no train example at all: {', '.join(missing)}"
    return sub, note


def held_out_splits(cfg: Config, task: str, splits: dict[str, Split], notes: list[str]
                    ) -> tuple[Split, Split, Split | None]:
    """(train, dev, test): the files' splits; without a test file data.test_ratio of train is held out as test
    (when > 0), then without a dev file data.dev_ratio of it as dev (both stratified, seeded by train.seed)."""
    d, seed = cfg.data, cfg.train.seed
    train, dev_s, test_s = splits["train"], splits.get("dev"), splits.get("test")
    n_file = len(train)
    if test_s is None and d.test_ratio > 0:
        if dev_s is None and d.dev_ratio + d.test_ratio >= 1:
            raise ConfigError(f"config data.dev_ratio={d.dev_ratio} + data.test_ratio={d.test_ratio}: both are held "
                              f"out of {train.source}, so together they must stay below 1; fix: lower one of them")
        train, test_s = _hold_out(train, d.test_ratio, task, seed, "test")
        if len(test_s) == 0:
            raise DataError(f"{train.source}: too few examples per class to hold out a test set ({len(train)} in "
                            f"train); fix: give --test FILE, or --set data.test_ratio=0")
        notes.append(f"test: no test file, held out {len(test_s)} of {n_file} train examples ({d.test_ratio:.0%}, "
                     f"stratified, seed {seed}, data.test_ratio)")
    elif test_s is not None and d.test_ratio > 0:
        notes.append(f"data.test_ratio={d.test_ratio} is not used: the test file {Path(test_s.source).name} is the test")
    if dev_s is None:
        ratio = d.dev_ratio / (len(train) / n_file) if 0 < d.dev_ratio < 1 else d.dev_ratio  # a share of the file
        train, dev_s = _hold_out(train, min(ratio, 0.99), task, seed)
        if len(dev_s) == 0:
            raise DataError(f"{train.source}: too few examples per class to hold out a dev set ({len(train)} in "
                            f"train); fix: give --dev FILE")
        notes.append(f"dev: no dev file, held out {len(dev_s)} of {n_file} train examples "
                     f"({d.dev_ratio:.0%}, stratified, seed {seed})")
    return train, dev_s, test_s


def _hold_out(split: Split, ratio: float, task: str, seed: int, name: str = "dev") -> tuple[Split, Split]:
    if not 0 < ratio < 1:
        raise DataError(f"{split.source}: there is no {name} file and data.{name}_ratio={ratio}; fix: give --{name} "
                        f"FILE or set data.{name}_ratio between 0 and 1")
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = {}
    for i, y in enumerate(split.labels):
        key = y if task == "single_label" else 0
        groups.setdefault(key, []).append(i)
    dev_idx: set[int] = set()
    for idx in groups.values():
        rng.shuffle(idx)
        dev_idx.update(idx[: max(1, round(len(idx) * ratio))] if len(idx) > 1 else [])
    tr = [i for i in range(len(split)) if i not in dev_idx]
    dv = sorted(dev_idx)
    def pick(ids: list[int], name: str) -> Split:
        return Split(name, [split.rows[i] for i in ids], [split.labels[i] for i in ids], split.source,
                     None if split.soft is None else split.soft[ids])

    return pick(tr, "train"), pick(dv, name)


def parse_soft_labels(rows: list[Row], C: int) -> np.ndarray:
    """One probability or logit per class: a JSON list or numbers separated by spaces/commas."""
    out = np.zeros((len(rows), C), dtype=np.float32)
    problems = []
    for i, r in enumerate(rows):
        v = r.soft
        try:
            vals = v if isinstance(v, list) else json.loads(v) if str(v).startswith("[") else str(v).replace(",", " ").split()
            vals = [float(x) for x in vals]
        except (ValueError, TypeError):
            vals = []
        if len(vals) != C or not np.all(np.isfinite(vals)):
            problems.append(f"{r.source} line {r.line}: soft labels {str(v)[:60]!r} must be {C} finite numbers "
                            f"(one per class); fix: write e.g. [0.1, 0.9] or `0.1 0.9`")
            continue
        out[i] = vals
    if problems:
        raise DataError(problems)
    return out
