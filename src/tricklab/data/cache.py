"""Token ids tokenised once per data source and kept memory-mapped: a grid of runs (compare, tune) and every later
run on the same data and tokenizer read them instead of tokenising again.

A source (every valid row of one file, `hf:` split or in-memory table, data/dataset.py: DataBundle.raw) is tokenised
in chunks of CHUNK rows into flat int32 token ids + offsets, written to numpy memmaps under the cache folder
(data.cache: auto = $TRICKLAB_CACHE, else ~/.cache/tricklab; off = in memory only; or a folder) and keyed by the
SHA-256 of the source's content (the file's bytes, or its rows), how it is read (data.* column and format settings),
the tokenizer (its full definition), max_length, lower-casing and the truncation policy. A split is a selection of
rows of its source (the held-out dev, data.max_train_samples), so seeds and dev ratios share one tokenisation.
Library: numpy (np.memmap); the tokenizer is transformers'. Writes are atomic (a temporary folder renamed), so
parallel runs (compare --jobs) at worst both tokenise once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..runfiles import cache_dir, write_json
from .batching import Encoded, encode
from .readers import Row
from .truncation import Truncation

CHUNK = 4096
VERSION = 3   # bumped when the readers may read the same bytes into other rows (2: header, separator and column rules;
              # 3: a first line naming the label column is a header)
NOT_READING = ("sampler", "cache", "dev_ratio", "test_ratio", "max_train_samples", "on_invalid", "label_type", "label_map",
               "label_sep", "chunk_train", "chunk_agg")   # settings that change neither which rows a source has (as
                                                          # read: on_invalid only selects among them) nor their tokens


class Ragged(Sequence):
    """Rows of token ids stored flat: row i is flat[offsets[rows[i]]:offsets[rows[i] + 1]] (rows None: all)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None = None):
        self.flat, self.offsets, self.rows = flat, offsets, rows

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.rows is None else len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = int(i if self.rows is None else self.rows[i])
        return self.flat[self.offsets[j]:self.offsets[j + 1]]

    @property
    def lengths(self) -> np.ndarray:
        n = np.diff(self.offsets)
        return (n if self.rows is None else n[self.rows]).astype(np.int64)


@dataclasses.dataclass
class Tokens:
    """A source's token ids: windows (rows) and, per document, its first window (doc_rows, D + 1 entries)."""
    ids: np.ndarray
    offsets: np.ndarray
    token_types: np.ndarray | None
    doc_rows: np.ndarray

    def select(self, docs: np.ndarray | None, labels: list[Any] | None, agg: str) -> Encoded:
        """The Encoded of some documents (None: all, in order), their windows in order, labels repeated per window."""
        n_docs = len(self.doc_rows) - 1
        docs = np.arange(n_docs) if docs is None else np.asarray(docs, dtype=np.int64)
        starts, counts = self.doc_rows[docs], np.diff(self.doc_rows)[docs]
        windowed = len(self.offsets) - 1 != n_docs
        if windowed:
            rows = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
            doc_index = np.repeat(np.arange(len(docs)), counts)
            labels = None if labels is None else [labels[d] for d in doc_index]
        else:
            rows, doc_index = docs, None
        tt = None if self.token_types is None else Ragged(self.token_types, self.offsets, rows)
        return Encoded(Ragged(self.ids, self.offsets, rows), tt, labels, doc_index=doc_index, agg=agg)  # type: ignore[arg-type]


def cache_root(setting: Any) -> Path | None:
    """data.cache: auto -> $TRICKLAB_CACHE or ~/.cache/tricklab; off -> None; else the folder given."""
    if str(setting).lower() in ("off", "false", "no", "none", ""):   # `--set data.cache=off` arrives as false
        return None
    if setting != "auto":
        return Path(setting).expanduser()
    return cache_dir()


def tokenizer_fingerprint(tok: Any) -> str:
    h = hashlib.sha256(type(tok).__name__.encode())
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:   # its definition, less the truncation/padding state the last call left behind
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False).encode())
    h.update(repr((sorted(map(str, tok.special_tokens_map.items())), getattr(tok, "do_lower_case", None),
                   tok.padding_side, tok.truncation_side)).encode())
    return h.hexdigest()


def cache_key(digest: str, data_cfg: Any, tok: Any, lower: bool, trunc: Truncation, pair: bool) -> str:
    reading = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in NOT_READING}
    spec = {"v": VERSION, "source": digest, "data": reading, "tokenizer": tokenizer_fingerprint(tok), "lower": lower,
            "truncation": trunc.to_meta(), "pair": pair}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _tokenise(rows: list[Row], pair: bool, tok: Any, max_length: int, lower: bool, trunc: Truncation,
              folder: Path | None) -> Tokens:
    """Tokenise in chunks; token ids go to files in `folder` as they come (None: kept in memory)."""
    sinks = {k: open(folder / f"{k}.bin", "wb") if folder else [] for k in ("ids", "types")}
    lengths: list[np.ndarray] = []
    per_doc: list[np.ndarray] = []
    try:
        for s in range(0, len(rows), CHUNK):
            part = rows[s:s + CHUNK]
            enc = encode(tok, [r.text for r in part], [r.text_b or "" for r in part] if pair else None, max_length,
                         lower, None, trunc)
            n = np.fromiter(map(len, enc.input_ids), dtype=np.int64, count=len(enc.input_ids))
            lengths.append(n)
            per_doc.append(np.ones(len(part), np.int64) if enc.doc_index is None
                           else np.bincount(enc.doc_index, minlength=len(part)))
            for k, seqs in (("ids", enc.input_ids), ("types", enc.token_type_ids)):
                if seqs is not None:
                    arr = np.fromiter((t for x in seqs for t in x), dtype=np.int32 if k == "ids" else np.int8,
                                      count=int(n.sum()))
                    sinks[k].write(arr.tobytes()) if folder else sinks[k].append(arr)
    finally:
        for f in sinks.values():
            if folder:
                f.close()
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else [])]).astype(np.int64)
    doc_rows = np.concatenate([[0], np.cumsum(np.concatenate(per_doc) if per_doc else [])]).astype(np.int64)
    if folder is None:
        ids = np.concatenate(sinks["ids"]) if sinks["ids"] else np.zeros(0, np.int32)
        types = np.concatenate(sinks["types"]) if sinks["types"] else None
        return Tokens(ids, offsets, types, doc_rows)
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "doc_rows.npy", doc_rows)
    write_json(folder / "meta.json", {"rows": len(rows), "windows": len(offsets) - 1, "pair": pair,
                                      "tokens": int(offsets[-1])})
    return _load(folder)


def _load(folder: Path) -> Tokens:
    offsets = np.load(folder / "offsets.npy")
    n = int(offsets[-1])

    def mm(name: str, dtype: Any) -> np.ndarray | None:
        p = folder / name
        if not p.is_file():
            return None
        return np.memmap(p, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)

    types = mm("types.bin", np.int8) if (folder / "types.bin").stat().st_size else None
    return Tokens(mm("ids.bin", np.int32), offsets, types, np.load(folder / "doc_rows.npy"))  # type: ignore[arg-type]


def source_tokens(rows: list[Row], digest: str, data_cfg: Any, tok: Any, lower: bool, trunc: Truncation,
                  pair: bool) -> tuple[Tokens, str]:
    """A source's Tokens, from the cache when there (and into it when not); and a note of which it was."""
    root = cache_root(data_cfg.cache)
    if root is None:
        return _tokenise(rows, pair, tok, data_cfg.max_length, lower, trunc, None), "tokenised (data.cache=off)"
    key = cache_key(digest, data_cfg, tok, lower, trunc, pair)
    final = root / "tokens" / key[:2] / key
    if (final / "meta.json").is_file():
        return _load(final), f"tokens from the cache ({root})"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
    try:
        _tokenise(rows, pair, tok, data_cfg.max_length, lower, trunc, tmp)
        try:
            os.replace(tmp, final)
        except OSError:            # another process wrote it first: theirs is the same
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load(final), f"tokenised into the cache ({root})"
