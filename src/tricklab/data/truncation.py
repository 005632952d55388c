"""Texts longer than the encoder window: which tokens the model sees (head, tail, head_tail), or every
part of the text as overlapping windows (chunk) whose logits are aggregated per document.

  head       the first tokens (the tokenizer's own truncation; today's behaviour, and pairs' only policy)
  tail       the last tokens
  head_tail  round(head_ratio * budget) first tokens + the rest from the end; head_ratio 0.25 at
             max_length 512 keeps 128 + 382 tokens, the best recipe of Sun et al. 2019, "How to
             Fine-Tune BERT for Text Classification?" (arXiv:1905.05583)
  chunk      windows of max_length tokens, consecutive windows sharing `stride` text tokens, at most
             `max_chunks` per document (tokens past the last window are dropped); the model scores
             every window and the document's logits are the mean (or max) of its windows' logits

Every window carries the tokenizer's own special tokens ([CLS] ... [SEP] for BERT, ... <sep> <cls>
for XLNet). The budget of text tokens is max_length minus their number.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, TrickLabError

POLICIES = ("head", "tail", "head_tail", "chunk")
AGGREGATIONS = ("mean", "max")


@dataclass(frozen=True)
class Truncation:
    policy: str = "head"
    head_ratio: float = 0.25      # head_tail: share of the text-token budget taken from the start
    stride: int | None = None     # chunk: text tokens shared by consecutive windows; None: a quarter of the budget
    max_chunks: int = 8           # chunk: windows per document at most
    agg: str = "mean"             # chunk: how a document's window logits combine (mean | max)

    @classmethod
    def from_config(cls, data_cfg: Any) -> "Truncation":
        """From a config's `data` section (DataConfig)."""
        return cls(data_cfg.truncation, data_cfg.head_ratio, data_cfg.stride, data_cfg.max_chunks, data_cfg.chunk_agg)

    @classmethod
    def from_meta(cls, data_meta: dict[str, Any]) -> "Truncation":
        """From a saved run's meta["data"]; runs saved before long-text support read as `head`."""
        t = data_meta.get("truncation")
        if not t:
            return cls()
        known = {k: t[k] for k in ("policy", "head_ratio", "stride", "max_chunks", "agg") if k in t}
        out = cls(**known)
        if out.policy not in POLICIES or out.agg not in AGGREGATIONS:
            raise ConfigError(f"saved model meta: truncation {t!r} is not understood by this tricklab "
                              f"(policies: {', '.join(POLICIES)}; aggregations: {', '.join(AGGREGATIONS)}); "
                              f"fix: upgrade tricklab")
        return out

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prefix, suffix) special-token ids the tokenizer puts around one text: ([CLS], [SEP]) for BERT,
    ([], [<sep>, <cls>]) for XLNet. Found by tokenizing a probe with and without special tokens."""
    for probe in ("a", "text", "的", "1"):
        bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        if not bare:
            continue
        for p in range(len(full) - len(bare) + 1):
            if full[p:p + len(bare)] == bare:
                return list(full[:p]), list(full[p + len(bare):])
    raise TrickLabError(f"{type(tokenizer).__name__}: could not find where this tokenizer puts its special "
                        f"tokens; fix: use --set data.truncation=head")


def cut(ids: list[int], budget: int, policy: str, head_ratio: float) -> list[int]:
    """The text tokens a head/tail/head_tail policy keeps of `ids` (no special tokens), at most `budget`."""
    if len(ids) <= budget:
        return ids
    if policy == "head":
        return ids[:budget]
    if policy == "tail":
        return ids[len(ids) - budget:] if budget else []
    head = math.floor(budget * head_ratio + 0.5)
    tail = budget - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


def window_starts(n: int, budget: int, stride: int, max_chunks: int) -> range:
    """Start offsets of the windows over n text tokens: every (budget - stride) tokens until the text's
    end is covered, at most max_chunks of them; one (possibly empty) window for a short text."""
    step = budget - stride
    count = 1 if n <= budget else 1 + math.ceil((n - budget) / step)
    return range(0, min(count, max_chunks) * step, step)


def resolved_stride(t: Truncation, budget: int) -> int:
    stride = budget // 4 if t.stride is None else t.stride
    if not 0 <= stride < budget:
        raise ConfigError(f"config data.stride={t.stride}: windows hold {budget} text tokens (data.max_length minus "
                          f"the tokenizer's special tokens), so consecutive windows can share 0..{budget - 1}; "
                          f"fix: --set data.stride={budget // 4}")
    return stride


def cut_long(tokenizer: Any, texts: Sequence[str], max_length: int, t: Truncation
             ) -> tuple[list[list[int]], np.ndarray | None]:
    """Tokenize once without truncation, then cut by policy: (input ids per row, doc_index or None).
    For `chunk`, rows are windows and doc_index (N_windows,) names each window's document (non-decreasing)."""
    prefix, suffix = special_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ConfigError(f"config data.max_length={max_length}: leaves no room for text next to the tokenizer's "
                          f"{len(prefix) + len(suffix)} special tokens; fix: raise data.max_length")
    bare = tokenizer(list(texts), add_special_tokens=False, truncation=False, padding=False,
                     return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
    if t.policy != "chunk":
        return [prefix + cut(ids, budget, t.policy, t.head_ratio) + suffix for ids in bare], None
    stride = resolved_stride(t, budget)
    rows: list[list[int]] = []
    counts = np.zeros(len(bare), dtype=np.int64)
    for d, ids in enumerate(bare):
        starts = window_starts(len(ids), budget, stride, t.max_chunks)
        rows.extend(prefix + ids[s:s + budget] + suffix for s in starts)
        counts[d] = len(starts)
    return rows, np.repeat(np.arange(len(bare), dtype=np.int64), counts)


def aggregate(logits: np.ndarray, doc_index: np.ndarray, agg: str) -> np.ndarray:
    """Window logits (N_windows, C) -> document logits (D, C): mean or max over each document's windows.
    doc_index must be non-decreasing with every document present (as cut_long makes it)."""
    if len(doc_index) == 0:
        return logits
    starts = np.flatnonzero(np.r_[True, doc_index[1:] != doc_index[:-1]])   # (D,)
    if agg == "max":
        return np.maximum.reduceat(logits, starts, axis=0)
    sums = np.add.reduceat(logits, starts, axis=0)                              # (D, C)
    sizes = np.diff(np.r_[starts, len(doc_index)])                             # (D,)
    return (sums / sizes[:, None]).astype(logits.dtype)
