"""Tokenize once, then length-grouped batches padded to their own longest example."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..types import Batch
from .truncation import Truncation, aggregate, cut_long


@dataclass
class Encoded:
    """Token ids per row. A row is a document, or with `data.truncation=chunk` one window of a document:
    then doc_index (N,) names each row's document and models' logits are aggregated per document (`agg`)."""
    input_ids: Sequence[Sequence[int]]              # lists, or cache.Ragged rows of a memory-mapped token cache
    token_type_ids: Sequence[Sequence[int]] | None
    labels: list[Any] | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)   # per-example arrays, e.g. soft_labels (N, C)
    doc_index: np.ndarray | None = None   # (N,) window -> document, non-decreasing; None: one row per document
    agg: str = "mean"                     # chunk windows -> document logits: mean | max

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_docs(self) -> int:
        return len(self) if self.doc_index is None else (int(self.doc_index[-1]) + 1 if len(self.doc_index) else 0)

    def expand(self, per_doc: np.ndarray) -> np.ndarray:
        """A per-document array (D, ...) -> one entry per row (N, ...), e.g. soft labels for chunk windows."""
        return per_doc if self.doc_index is None else per_doc[self.doc_index]

    def aggregate(self, logits: np.ndarray) -> np.ndarray:
        """Row logits (N, C) -> document logits (D, C); unchanged when rows are documents."""
        return logits if self.doc_index is None else aggregate(logits, self.doc_index, self.agg)

    @property
    def lengths(self) -> np.ndarray:
        if hasattr(self.input_ids, "lengths"):
            return self.input_ids.lengths  # type: ignore[union-attr]
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def needs_lowercase(tokenizer: Any) -> bool:
    """True when the tokenizer keeps capitals but its vocabulary only knows lower-case Latin letters
    (e.g. bert-base-chinese vocab with a non-lower-casing tokenizer): capitals would become [UNK]."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return False
    letters = "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z"
    upper = tokenizer(letters, add_special_tokens=False)["input_ids"]
    lower = tokenizer(letters.lower(), add_special_tokens=False)["input_ids"]
    return upper != lower and upper.count(unk) > 13 and lower.count(unk) < 13


def encode(tokenizer: Any, texts: Sequence[str], texts_b: Sequence[str] | None, max_length: int,
           lowercase: bool, labels: list[Any] | None = None, truncation: Truncation | None = None) -> Encoded:
    """Tokenize once. `truncation` (data/truncation.py; default head) picks the tokens of long texts; with
    `chunk`, rows are windows carrying their document's label and doc_index maps them back."""
    if lowercase:
        texts = [t.lower() for t in texts]
        texts_b = [t.lower() for t in texts_b] if texts_b is not None else None
    t = truncation or Truncation()
    if t.policy != "head":
        if texts_b is not None:
            raise ConfigError(f"config data.truncation={t.policy}: single texts only; sentence pairs are cut from "
                              f"the end of the longer text; fix: --set data.truncation=head")
        ids, doc_index = cut_long(tokenizer, texts, max_length, t)
        if doc_index is not None and labels is not None:
            labels = [labels[d] for d in doc_index]
        return Encoded(ids, None, labels, doc_index=doc_index, agg=t.agg)
    enc = tokenizer(list(texts), list(texts_b) if texts_b is not None else None, truncation=True,
                    max_length=max_length, padding=False, return_attention_mask=False,
                    return_token_type_ids=texts_b is not None)
    return Encoded(enc["input_ids"], enc.get("token_type_ids") if texts_b is not None else None, labels)


def train_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffled batches for one epoch, the same for a given (seed, epoch) so that --resume can skip ahead.
    Grouping sorts pools of 64 batches by length, then shuffles the batch order.
    weights (N,), summing to 1: draw N rows with replacement with these probabilities instead of a permutation
    (data.sampler=balanced: balance.balanced_weights), then group and batch them the same way."""
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    perm = rng.permutation(n) if weights is None else rng.choice(n, size=n, replace=True, p=weights)
    if group_by_length:
        pool = batch_size * 64
        perm = np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in np.array_split(perm, max(1, -(-len(perm) // pool)))])
    batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    order = rng.permutation(len(batches)) if group_by_length else np.arange(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(enc: Encoded, idx: np.ndarray, pad_id: int, task: str | None, num_labels: int = 0) -> Batch:
    ids = [enc.input_ids[i] for i in idx]
    T = max(len(x) for x in ids)
    input_ids = np.full((len(ids), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), T), dtype=np.int64)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
    if enc.token_type_ids is not None:
        tt = np.zeros((len(ids), T), dtype=np.int64)
        for r, i in enumerate(idx):
            x = enc.token_type_ids[i]
            tt[r, : len(x)] = x
        inputs["token_type_ids"] = torch.from_numpy(tt)
    labels = None
    if enc.labels is not None and task is not None:
        ys = [enc.labels[i] for i in idx]
        if task == "single_label":
            labels = torch.tensor(ys, dtype=torch.long)
        elif task == "multi_label":
            labels = torch.zeros((len(ys), num_labels))
            for r, y in enumerate(ys):
                labels[r, y] = 1.0
        else:
            labels = torch.tensor(ys, dtype=torch.float)
    extra = {k: torch.from_numpy(v[np.asarray(idx)]) for k, v in enc.extra.items()}
    return Batch(inputs=inputs, labels=labels, index=torch.as_tensor(np.asarray(idx), dtype=torch.long), extra=extra)
