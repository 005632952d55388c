"""From `--data` (a path, `hf:NAME`, or in-memory data: data/sources.py) to validated, labelled splits. Nothing here
touches a model. Each split keeps where its rows come from (`origin`, `index` into bundle.raw[origin]), so that the
token cache (data/cache.py) tokenises a whole source once and every run selects its rows from it."""
from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..errors import ConfigError, DataError
from .columns import column_note, flag_names, role_columns
from .invalid import InvalidRows, Skipped
from .labels import (LabelMap, build_label_map, detect_task, encode_labels, mapped_names, read_class_file, relabel,
                     relabel_note, task_hint)
from .excel import is_excel
from .readers import COMPRESSED, Row
from .sources import Source, is_path, resolve, sheet_sources, unlabelled

# the file names a data folder's train/dev/test may have, in order of preference (the first found is read): every
# extension readers.py reads, the ones added later after the first ones, so that no folder's choice changes
_FIRST = tuple(e + z for e in (".txt", ".tsv", ".csv", ".jsonl", ".json", ".parquet", ".arrow")
               for z in ("", ".gz", ".bz2", ".zst")) + (".xlsx", ".xlsm")
EXTS = tuple(dict.fromkeys(_FIRST + tuple(e + z for e in (".ndjson", ".pq", ".feather", ".ipc", ".txt", ".tsv", ".csv",
                                                          ".jsonl", ".json", ".parquet", ".arrow")
                                          for z in ("", *COMPRESSED))))
CLASS_FILES = ("class.txt", "classes.txt", "labels.txt", "label.txt")


@dataclass
class Split:
    name: str
    rows: list[Row]
    labels: list[Any]          # encoded: int | list[int] | float
    source: str
    soft: np.ndarray | None = None   # (N, C) soft labels from data.soft_label_column
    origin: str = ""                 # the source split the rows come from (train: also the held-out dev)
    index: np.ndarray | None = None  # (N,) positions of the rows in DataBundle.raw[origin]; None: all, in order

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
    raw: dict[str, list[Row]] = field(default_factory=dict)        # every valid row of each source, in order
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)  # per source: SHA-256 of the file or rows
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)   # per split file: data/columns.column_choice
    skipped: dict[str, list[Skipped]] | None = None   # data.on_invalid=skip: the rows skipped, per split file
    test_held_out: bool = False                        # test came out of train (data.test_ratio)

    @property
    def score_on(self) -> str:
        """The split the run's final scores are on, and what that means for them."""
        if self.test is None:
            return (f"dev ({'held out of train' if self.dev.source == self.train.source else _short_name(self.dev.source)}"
                    f"), the split that also picked the best checkpoint and fitted the calibration: optimistic")
        return "test (" + ("held out of train by data.test_ratio" if self.test_held_out
                           else _short_name(self.test.source)) + ")"

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
            raise DataError(f"{p}: no train file: expected train.txt, .tsv, .csv, .jsonl, .ndjson, .json, .parquet, "
                            f".pq, .arrow, .feather, .ipc (optionally .gz, .bz2, .zst), .xlsx or .xlsm in the folder "
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


def class_file_note(cls_p: Path, lm: LabelMap, beside_a_file: bool) -> str:
    """Which class file named the classes, and how: a class file is picked up from the data's folder, so the run
    says which one (one lying beside a single --data file may belong to other data)."""
    how = "the label ids in the data index its lines" if lm.from_ids else "the labels in the data are its names"
    where = "beside the --data file" if beside_a_file else "in the data folder"
    return (f"classes: {len(lm.names)} from {cls_p} ({where}; {how}); if it is not this data's class file, move or "
            f"rename it")


def _one(x: Any, role: str, label_column: Any) -> Source:
    """A --dev/--test given on its own: a file, or any other data (its split of that name, else its train; a
    workbook with a sheet per split: that split's sheet)."""
    sheets = sheet_sources(x)
    if sheets:
        if role not in sheets:
            raise DataError(f"{x}: --{role} names a workbook with a sheet per split, and none of its sheets is a "
                            f"{role} sheet (its splits: {', '.join(f'{r} = {s.sheet!r}' for r, s in sheets.items())}); "
                            f"fix: give --{role} a file, or name a sheet {role}")
        return dataclasses.replace(sheets[role], given=True)
    found = resolve(x, label_column)
    if found is None:
        p = Path(x)
        if not p.is_file():
            raise DataError(f"{p}: file not found: check the path given to --{role}")
        return Source(str(p), path=p, given=True)
    return found.get(role) or found["train"]


def data_sources(data: Any, dev: Any = None, test: Any = None, label_column: Any = None, sheet: Any = None
                 ) -> tuple[dict[str, Source], Path | None]:
    """Sources by split (train, dev, test) and the class file, from any --data (sources.py) and --dev/--test. A
    workbook with a sheet per split is read as its splits, unless `sheet` (data.sheet) names the one to train on."""
    found = resolve(data, label_column)
    if found is None and sheet in (None, ""):
        found = sheet_sources(data) or None
    if found is None:
        train_p, dev_p, test_p, cls = locate(data, dev if is_path(dev) else None, test if is_path(test) else None)
        found = {"train": Source(str(train_p), path=train_p)}
        found |= {r: Source(str(p), path=p) for r, p in (("dev", dev_p), ("test", test_p)) if p is not None}
        given = {r: x for r, x in (("dev", dev), ("test", test))            # data, or a workbook (_one reads it)
                 if x is not None and (not is_path(x) or is_excel(x))}
    else:
        given = {r: x for r, x in (("dev", dev), ("test", test)) if x is not None}
        cls = locate(data)[3] if found["train"].sheet is not None else None     # a class file beside the workbook
    for role, x in given.items():
        found[role] = _one(x, role, label_column)
    return found, cls


def _class_names(task: str, cls_p: Path | None, train: Source, columns: dict[str, dict[str, Any]],
                 d: Any) -> list[str] | None:
    """The classes when the labels alone do not say them all: a class file; a datasets ClassLabel's names (ids in
    the data); the 0/1 label columns of multi-label data, one class each, in order (a class no train row has is
    still a class; under data.label_map), which every other file read must have too."""
    flags = flag_names(columns.get("train")) if task == "multi_label" else None
    for name, c in columns.items():
        theirs = flag_names(c)
        if flags is not None and name != "train" and theirs is not None and set(theirs) != set(flags):
            raise DataError(f"{c['file']}: its 0/1 label columns ({', '.join(theirs)}) are not train's "
                            f"({', '.join(flags)}); fix: give it the same columns")
    if cls_p is not None and task != "regression":
        return read_class_file(cls_p, d.encoding)
    if task == "single_label":
        return train.class_names
    return None if flags is None else mapped_names(flags, d.label_map)


def _sheets_note(srcs: dict[str, Source], unlabelled: list[Any]) -> str:
    """Which sheet of a workbook each split is, the sheets without labels (texts to predict) and the others."""
    train = srcs["train"]
    others = [o for o in train.others or [] if o not in unlabelled]
    return (f"data: {Path(str(train.path)).name} has a sheet per split: " + ", ".join(
        f"{r} = {s.sheet!r}" for r, s in srcs.items() if s.sheet is not None and s.path == train.path)
        + "".join(f"; {n!r} has no label column: not a split (predict it: tricklab predict --sheet {n})"
                  for n in unlabelled)
        + (f"; not read: {', '.join(map(repr, others))}" if others else "")
        + "; to train on one sheet alone: --set data.sheet=NAME")


def _short_name(name: str) -> str:
    """A file's name without its folder (a workbook's split, `book.xlsx[dev]`, too); other sources as they are."""
    return Path(name).name if Path(name).exists() or Path(name.rsplit("[", 1)[0]).is_file() else name


def load_data(cfg: Config, data: Any, dev: Any = None, test: Any = None) -> DataBundle:
    """Read, validate and label every split; every problem is reported before any model loads (data.on_invalid=skip:
    rows with problems of their own are dropped and recorded instead, see data/invalid.py). `data` (and dev, test)
    may be a path, `hf:NAME[:CONFIG]`, or in-memory data (data/sources.py)."""
    srcs, cls_p = data_sources(data, dev, test, cfg.data.label_column, cfg.data.sheet)
    train_p = srcs["train"].name
    d = cfg.data
    problems: list[str] = []
    inv = InvalidRows(d.on_invalid)
    sheets = {r: s.sheet for r, s in srcs.items()}          # a workbook with a sheet per split: which
    raw = _read_sources(srcs, d, inv, problems)             # every valid row of each source, as read
    notes = [_sheets_note(srcs, [sheets[r] for r in sheets if r not in srcs])] if sheets["train"] is not None else []
    train_rows = raw["train"]
    columns = {name: rows.columns for name, rows in raw.items() if getattr(rows, "columns", None)}
    notes += [column_note(c, pin=name == "train") for name, c in columns.items()
              if name == "train" or "train" not in columns or role_columns(c) != role_columns(columns["train"])
              or c.get("suspect_header")]
    task = cfg.task
    if task == "auto":
        task = detect_task(train_rows, d.label_sep)
        notes.append(f"task: {task} (detected from {_short_name(train_p)}; set `task:` to override)"
                     + task_hint(task, train_rows, d.label_sep))
    if d.label_map:
        if task == "regression":
            raise ConfigError(f"config data.label_map: renames class labels, and {_short_name(train_p)} holds "
                              f"regression targets (numbers); fix: drop data.label_map, or set task: single_label")
        used: Counter[str] = Counter()
        for rows in raw.values():
            relabel(rows, d.label_map, d.label_sep, used, multi=task == "multi_label")
        notes.append(relabel_note(d.label_map, used))
    class_names = _class_names(task, cls_p, srcs["train"], columns, d)
    how = [f"how it was read: {column_note(c, pin=False)}" for c in columns.values()][:2]   # what a misread shows
    try:
        lm = build_label_map(task, train_rows, class_names, d.label_type, d.label_sep, str(cls_p or ""))
    except DataError as e:
        found = problems + e.problems
        raise DataError(found[:1] + how + found[1:]) from None
    if lm.note:
        notes.append(lm.note)
    if class_names is not None and cls_p is not None:
        notes.append(class_file_note(cls_p, lm, not Path(data).is_dir()))
    for name in ("dev", "test"):
        if name in raw and not raw[name] and not problems:
            problems.append(f"{srcs[name].name}: no examples in the file; fix: give it labelled lines, or leave it out")
    raw = {name: rows for name, rows in raw.items() if rows}
    kept: dict[str, list[Row]] = {}
    labels: dict[str, tuple[list[Any], np.ndarray | None]] = {}
    for name, rows in raw.items():
        soft = name == "train" and d.soft_label_column is not None

        def labelled(rs: list[Row], soft: bool = soft) -> tuple[list[Any], np.ndarray | None]:
            return (encode_labels(rs, lm, d.label_sep, str(cls_p or ""), label_map=d.label_map),
                    parse_soft_labels(rs, lm.num_labels) if soft else None)
        kept[name], labels[name] = inv.keep_valid(name, srcs[name].name, rows, labelled, problems)
    if problems:
        found = problems[:1] + how + problems[1:]
        hint = inv.hint()
        if hint:   # among the first 20 lines DataError shows
            found.insert(min(len(found), 19), hint)
        raise DataError(found)
    if task != "regression" and lm.num_labels < 2:
        raise DataError([f"{train_p}: only one class ({lm.names[0]!r}) in train: a classifier needs at least two"]
                        + how)
    pair_flags = {name: rows[0].text_b is not None for name, rows in kept.items()}
    if len(set(pair_flags.values())) > 1:
        raise DataError(f"{train_p}: train and other splits disagree on sentence pairs ({pair_flags}); "
                        f"fix: give every split the same columns")
    digests = {name: srcs[name].digest(rows) for name, rows in raw.items()}
    splits = {name: Split(name, rows, labels[name][0], srcs[name].name, labels[name][1], name,
                          _positions(raw[name], rows)) for name, rows in kept.items()}
    train, dev_s, test_s = held_out_splits(cfg, task, splits, notes)
    notes += repeat_notes(train, dev_s, test_s)
    if d.max_train_per_class:
        train, note = per_class_subset(train, task, lm.names, d.max_train_per_class, cfg.train.seed)
        notes.append(note)
    if d.max_train_samples and len(train) > d.max_train_samples:
        rng = random.Random(cfg.train.seed)
        keep = sorted(rng.sample(range(len(train)), d.max_train_samples))
        train = Split("train", [train.rows[i] for i in keep], [train.labels[i] for i in keep], train.source,
                      None if train.soft is None else train.soft[keep], "train",
                      np.asarray(keep) if train.index is None else train.index[keep])
        notes.append(f"train: using {len(train)} examples (data.max_train_samples)")
    bundle = DataBundle(task, lm, train, dev_s, test_s, notes, raw, digests, columns=columns,
                        skipped=inv.rows if inv.skip else None, test_held_out=test_s is not None and "test" not in raw)
    if test_s is None:
        notes.append(f"no test data: the final scores are on {bundle.score_on}; fix: give --test FILE (or a test "
                     f"file in the data folder), or hold one out with --set data.test_ratio=0.1")
    if bundle.is_pair and d.truncation != "head":  # before the model loads (encode() checks it again)
        raise ConfigError(f"config data.truncation={d.truncation}: single texts only, and {_short_name(train_p)} holds "
                          f"sentence pairs (cut from the end of the longer text); fix: --set data.truncation=head")
    return bundle


def repeat_notes(train: Split, dev: Split, test: Split | None) -> list[str]:
    """Repeated texts, which real exports are full of: rows of train that repeat an earlier one (text and label),
    texts train holds under two labels, and dev/test texts that train holds too (their scores then measure
    memory as much as generalisation). Counted, never changed."""
    def key(r: Row) -> tuple[str, str | None]:
        return (r.text, r.text_b)

    seen: dict[tuple[str, str | None], Any] = {}          # text -> its first label (most texts have one)
    more: dict[tuple[str, str | None], set[str]] = {}     # texts with other labels too -> all their labels
    repeats = 0
    for r, y in zip(train.rows, train.labels):
        k, lab = key(r), str(y)
        if k not in seen:
            seen[k] = lab
        elif k in more:
            repeats += lab in more[k]
            more[k].add(lab)
        elif seen[k] == lab:
            repeats += 1
        else:
            more[k] = {seen[k], lab}
    parts = []
    if repeats:
        parts.append(f"{repeats} of {len(train)} train rows repeat an earlier row (text and label)")
    clash = len(more)
    if clash:
        parts.append(f"{clash} {'text carries' if clash == 1 else 'texts carry'} more than one label in train")
    for name, split in (("dev", dev), ("test", test)):
        if split is not None and len(split):
            shared = sum(key(r) in seen for r in split.rows)
            if shared:
                parts.append(f"{shared} of {len(split)} {name} texts are also in train (their scores measure memory "
                             f"as well as generalisation)")
    return [f"repeats: {'; '.join(parts)}"] if parts else []


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
                None if split.soft is None else split.soft[keep], split.origin,
                np.asarray(keep, dtype=np.int64) if split.index is None else split.index[keep])
    note = (f"train: {len(sub)} of {len(split)} examples, at most {k} per class (data.max_train_per_class, "
            f"seed {seed})")
    if short:
        note += f"; fewer than {k} in train, all kept: {', '.join(short)}"
    missing = [names[c] for c in range(len(names)) if c not in groups]
    if missing:
        note += f"; no train example at all: {', '.join(missing)}"
    return sub, note


def _read_sources(srcs: dict[str, Source], d: Any, inv: InvalidRows, problems: list[str]) -> dict[str, list[Row]]:
    """The valid rows of each source as read (row problems: reported, or with data.on_invalid=skip recorded);
    a train source without any stops here."""
    raw: dict[str, list[Row]] = {}
    train = srcs["train"]
    raw["train"] = inv.read("train", train.name, lambda f: train.read(d, True, f), problems)
    if not raw["train"]:
        raise DataError(problems or [f"{train.name}: no examples"])
    pair = raw["train"][0].text_b is not None
    for name in ("dev", "test"):
        if name in srcs:
            src = srcs[name]
            n = len(problems)
            raw[name] = inv.read(name, src.name, lambda f, src=src: src.read(d, True, f, pair=pair), problems)
            if src.sheet is not None and not src.given and not raw[name] and unlabelled(problems[n:]):
                del problems[n:], raw[name], srcs[name]      # an unlabelled sheet: texts to predict, not a split
    return raw


def _positions(source_rows: list[Row], rows: list[Row]) -> np.ndarray | None:
    """Where `rows` (in order, some of source_rows: data.on_invalid=skip dropped others) are in source_rows; None:
    all of them."""
    if len(rows) == len(source_rows):
        return None
    ids = {id(r) for r in rows}
    return np.fromiter((i for i, r in enumerate(source_rows) if id(r) in ids), dtype=np.int64, count=len(rows))


def held_out_splits(cfg: Config, task: str, splits: dict[str, Split], notes: list[str]
                    ) -> tuple[Split, Split, Split | None]:
    """(train, dev, test): the files' splits; without a test file data.test_ratio of train is held out as test
    (when > 0), then without a dev file data.dev_ratio of it as dev (both seeded by train.seed, stratified by class
    for single-label, at random for multi-label and regression)."""
    d, seed = cfg.data, cfg.train.seed
    train, dev_s, test_s = splits["train"], splits.get("dev"), splits.get("test")
    n_file = len(train)
    how = "stratified" if task == "single_label" else "at random"     # _hold_out stratifies by class label only
    if test_s is None and d.test_ratio > 0:
        if dev_s is None and d.dev_ratio + d.test_ratio >= 1:
            raise ConfigError(f"config data.dev_ratio={d.dev_ratio} + data.test_ratio={d.test_ratio}: both are held "
                              f"out of {train.source}, so together they must stay below 1; fix: lower one of them")
        train, test_s = _hold_out(train, d.test_ratio, task, seed, "test")
        if len(test_s) == 0:
            raise DataError(f"{train.source}: too few examples per class to hold out a test set ({len(train)} in "
                            f"train); fix: give --test FILE, or --set data.test_ratio=0")
        notes.append(f"test: no test file, held out {len(test_s)} of {n_file} train examples ({d.test_ratio:.0%}, "
                     f"{how}, seed {seed}, data.test_ratio)")
    elif test_s is not None and d.test_ratio > 0:
        notes.append(f"data.test_ratio={d.test_ratio} is not used: the test file {_short_name(test_s.source)} is the test")
    if dev_s is None:
        ratio = d.dev_ratio / (len(train) / n_file) if 0 < d.dev_ratio < 1 else d.dev_ratio  # a share of the file
        train, dev_s = _hold_out(train, min(ratio, 0.99), task, seed)
        if len(dev_s) == 0:
            raise DataError(f"{train.source}: too few examples per class to hold out a dev set ({len(train)} in "
                            f"train); fix: give --dev FILE")
        notes.append(f"dev: no dev file, held out {len(dev_s)} of {n_file} train examples "
                     f"({d.dev_ratio:.0%}, {how}, seed {seed})")
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
                     None if split.soft is None else split.soft[ids], split.origin,
                     np.asarray(ids, dtype=np.int64) if split.index is None else split.index[ids])

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
            problems.append(f"{r.where}: soft labels {str(v)[:60]!r} must be {C} finite numbers "
                            f"(one per class); fix: write e.g. [0.1, 0.9] or `0.1 0.9`")
            continue
        out[i] = vals
    if problems:
        raise DataError(problems)
    return out
