"""Where --data comes from: a file or a folder of files (readers.py), a `datasets` folder saved with save_to_disk
(a Dataset or a DatasetDict), `hf:NAME[:CONFIG]` (a Hugging Face dataset through `datasets.load_dataset`, which reads
its local cache when offline: HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1), or Python objects: a datasets.Dataset or
DatasetDict, a pandas DataFrame, a list of dicts or tuples, or a dict of those by split. Each becomes Sources by split
(train, dev, test; a DatasetDict's `validation`/`dev`/`valid` is dev), read with the checks of the files.

Library: `datasets` (pip install 'tricklab[data]'), imported only for the sources that need it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .excel import is_excel, sheet_role, split_sheets
from .readers import BATCH, Row, content_kind, need, read_rows, records_to_rows

HF_PREFIX = "hf:"
SPLIT_NAMES = {"train": ("train",), "dev": ("validation", "dev", "valid", "val"), "test": ("test",)}


@dataclass
class Source:
    """One split's data: a file (`path`) or records (`obj`: a datasets.Dataset, a DataFrame, a list)."""
    name: str                            # in messages and run.json: a path, `hf:NAME[train]`, `DataFrame`, ...
    path: Path | None = None
    obj: Any = None
    class_names: list[str] | None = None  # a datasets ClassLabel's names: the label ids' meaning
    sheet: str | None = None             # a workbook's sheet named for this split (sheet_sources)
    others: list[str] | None = None      # the train sheet's Source: the workbook's sheets not read (for a note)
    given: bool = False                  # named by --dev/--test (not found in --data): never dropped

    def read(self, cfg: DataConfig, labelled: bool, problems: list[str], pair: bool | None = None) -> list[Row]:
        if self.path is not None and self.sheet is not None:
            return read_rows(self.path, dataclasses.replace(cfg, sheet=self.sheet), labelled, problems, pair,
                             name=self.name)
        if self.path is not None:
            return read_rows(self.path, cfg, labelled, problems, pair)
        try:
            columns, records = _records(self.obj)
            return records_to_rows(records, self.name, "row", cfg, labelled, problems, columns)
        except DataError as e:
            problems.extend(e.problems)
            return []

    def digest(self, rows: list[Row] | None = None) -> dict[str, Any]:
        """run.json's record of it: a file's SHA-256, else the SHA-256 of the rows as read (text, text_b, label)."""
        if self.path is not None:
            h = hashlib.sha256()
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sheet = {"sheet": self.sheet} if self.sheet is not None else {}
            return {"path": str(self.path.resolve()), **sheet, "bytes": self.path.stat().st_size, "sha256": h.hexdigest()}
        return {"path": self.name, "rows": len(rows or []), "sha256": rows_digest(rows or [])}


def cache_digest(digest: dict[str, Any]) -> str | None:
    """What identifies a source's rows for the token cache: its SHA-256, and the sheet of a workbook's split."""
    sha = digest.get("sha256")
    return sha and sha + (f"[{digest['sheet']}]" if digest.get("sheet") is not None else "")


def rows_digest(rows: list[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.text}\x1f{r.text_b}\x1f{r.label!r}\x1f{r.soft!r}\x1e".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def describe(data: Any) -> str:
    """A short name for in-memory data: `DataFrame`, `list`, `Dataset`."""
    return type(data).__name__


def _records(obj: Any) -> tuple[list[str] | None, Any]:
    """(column names or None, (0-based position, record) pairs) of an in-memory table. A DataFrame's rows are
    numbered by position, not by index label: after pd.concat labels recur, and a row problem (data.on_invalid=skip)
    must drop that row alone."""
    mod = type(obj).__module__.split(".")[0]
    if mod == "pandas":
        cols = [str(c) for c in obj.columns]
        return cols, enumerate(dict(zip(cols, rec)) for rec in obj.itertuples(index=False, name=None))
    if mod == "datasets":
        cols = list(obj.column_names)

        def batches() -> Any:
            i = 0
            for batch in obj.iter(batch_size=BATCH):
                for j in range(len(batch[cols[0]]) if cols else 0):
                    yield i, {c: batch[c][j] for c in cols}
                    i += 1

        return cols, batches()
    if isinstance(obj, (list, tuple)):
        return None, enumerate(obj)
    raise DataError(f"data: a {type(obj).__name__} is not data tricklab reads; fix: give a file or folder path, "
                    f"`hf:NAME`, a datasets.Dataset/DatasetDict, a pandas DataFrame, or a list of dicts/tuples")


def _class_names(ds: Any, cfg_label: Any) -> list[str] | None:
    """A datasets ClassLabel column's names (ids in the data, names in the run), when the label column is one."""
    feats = getattr(ds, "features", None) or {}
    for name in ([cfg_label] if isinstance(cfg_label, str) else ["label", "labels"]):
        f = feats.get(name)
        if f is not None and type(f).__name__ == "ClassLabel":
            return list(f.names)
    return None


def _from_dict(splits: dict[str, Any], name: str, label_column: Any) -> dict[str, Source]:
    """A DatasetDict (or a dict of splits) -> train/dev/test Sources."""
    out: dict[str, Source] = {}
    for role, names in SPLIT_NAMES.items():
        key = next((k for k in names if k in splits), None)
        if key is not None:
            ds = splits[key]
            out[role] = Source(f"{name}[{key}]", obj=ds, class_names=_class_names(ds, label_column))
    if "train" not in out:
        raise DataError(f"{name}: no train split (splits: {', '.join(map(str, splits)) or 'none'}); fix: give data "
                        f"with a 'train' split, or pass the split itself (e.g. dataset['{next(iter(splits), 'train')}'])")
    return out


def load_hf(spec: str) -> Any:
    """`hf:NAME[:CONFIG]` -> a DatasetDict; NAME may also be a local folder (save_to_disk, or data files)."""
    datasets = need("datasets", "a Hugging Face dataset", spec)
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    if not name:
        raise DataError(f"{spec}: no dataset name; fix: --data hf:NAME or hf:NAME:CONFIG")
    try:
        if Path(name).is_dir() and is_saved_dataset(Path(name)):
            return datasets.load_from_disk(name)
        return datasets.load_dataset(name, config or None, cache_dir=os.environ.get("HF_DATASETS_CACHE"))
    except Exception as e:  # datasets raises many kinds (hub, cache, builder): one line for all of them
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{spec}: cannot load the dataset ({type(e).__name__}: {msg[:300]}); fix: check the name "
                        f"and config; offline, it must be in the local datasets cache (load it once online)") from None


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by Dataset.save_to_disk / DatasetDict.save_to_disk."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _has_splits(data: Any) -> bool:
    """A dict of splits or a (Iterable)DatasetDict, as opposed to one table."""
    mod = type(data).__module__.split(".")[0]
    return isinstance(data, dict) or (mod == "datasets" and type(data).__name__ in ("DatasetDict", "IterableDatasetDict"))


def from_object(data: Any, name: str, label_column: Any) -> dict[str, Source]:
    """In-memory data or a loaded DatasetDict -> Sources by split."""
    mod = type(data).__module__.split(".")[0]
    if _has_splits(data):
        return _from_dict(dict(data), name, label_column)
    if mod == "datasets" and not hasattr(data, "column_names"):
        raise DataError(f"{name}: a {type(data).__name__} is not supported; fix: give a Dataset or DatasetDict")
    return {"train": Source(name, obj=data, class_names=_class_names(data, label_column))}


def _loaded(data: Any) -> tuple[Any, str] | None:
    """(the data as loaded: a DatasetDict, Dataset or Python object, its name), or None for a plain file or folder."""
    if not is_path(data):
        return data, describe(data)
    s = str(data)
    if s.startswith(HF_PREFIX):
        return load_hf(s), s
    p = Path(s)
    if p.is_dir() and is_saved_dataset(p):
        datasets = need("datasets", "a datasets folder (save_to_disk)", p)
        try:
            return datasets.load_from_disk(str(p)), str(p)
        except Exception as e:  # a damaged folder: one line
            raise DataError(f"{p}: cannot load the datasets folder ({type(e).__name__}: {str(e)[:200]}); fix: save it "
                            f"again with save_to_disk") from None
    return None


def sheet_sources(data: Any) -> dict[str, Source]:
    """A workbook whose sheets are named for its splits (excel.SPLIT_SHEETS: `train`/`训练集`, `dev`/`验证集`,
    `test`/`测试集`): a Source per split, named `BOOK.xlsx[SHEET]`; else {} (one table, one sheet)."""
    if not is_path(data) or str(data).startswith(HF_PREFIX):
        return {}
    p = Path(data)
    if not (p.is_file() and is_excel(p)) or content_kind(p, None) != "zip":
        return {}
    found, others = split_sheets(p)
    out = {role: Source(f"{p}[{name}]", path=p, sheet=name) for role, name in found.items()}
    if out:
        out["train"].others = others
    return out


def unlabelled(problems: list[str]) -> bool:
    """Whether reading a workbook's split sheet failed for want of a label column (texts to predict, not a split)."""
    return any(": no label column" in p or "data.label_column=" in p and ": column not found" in p for p in problems)


def resolve(data: Any, label_column: Any = None) -> dict[str, Source] | None:
    """Sources by split for everything that is not a plain file or folder of files (None: leave it to locate)."""
    got = _loaded(data)
    return None if got is None else from_object(got[0], got[1], label_column)


def _role_names(split: str) -> tuple[str, ...]:
    """`split` and the other names of its role: validation -> (validation, dev, valid, val); dev -> the same."""
    for role, names in SPLIT_NAMES.items():
        if split == role or split in names:
            return tuple(dict.fromkeys((split, role, *names)))
    return (split,)


def eval_source(data: Any, split: str | None, label_column: Any = None, sheet: Any = None) -> Source | None:
    """What `evaluate` scores, for anything but a plain file (None): a dataset's split named `split`, by its own name
    (`validation_matched`) or by its role (`dev` finds `validation`, `validation` finds `dev`); without `split`, its
    test split, else its validation split. A single table (a Dataset, a DataFrame, a list) is scored whole. A workbook
    with a sheet per split (sheet_sources; unless data.sheet names one) is a dataset whose splits are its sheets."""
    sheets = sheet_sources(data) if sheet in (None, "") else {}
    if sheets:          # --split test, Test, 测试集: by its role
        return sheets[_split_key(list(sheets), sheet_role(split) or split if split else None, str(data))]
    got = _loaded(data)
    if got is None:
        return None
    obj, name = got
    if not _has_splits(obj):
        if split not in (None, "train"):
            raise ConfigError(f"--split {split}: {name} is one table, not a dataset with splits; fix: leave --split out")
        return from_object(obj, name, label_column)["train"]
    splits = dict(obj)
    key = _split_key(list(splits), split, name)
    return Source(f"{name}[{key}]", obj=splits[key], class_names=_class_names(splits[key], label_column))


def _split_key(splits: list[Any], split: str | None, name: str) -> Any:
    """The split `evaluate` scores (eval_source): `split` or a name of its role; by default test, else validation."""
    wanted = _role_names(split) if split else (*SPLIT_NAMES["test"], *SPLIT_NAMES["dev"])
    key = next((k for k in wanted if k in splits), None)
    if key is None:
        have = ", ".join(map(str, splits)) or "none"
        raise ConfigError(f"{name}: {'no split ' + repr(split) if split else 'no test or validation split'} (it has: "
                          f"{have}); fix: --split NAME with one of them" + ("" if split else " (--split train scores "
                          "the data the model may have been trained on)"))
    return key
