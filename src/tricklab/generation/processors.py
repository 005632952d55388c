"""Logits processors: small pure functions `(scores[, ids]) -> new scores`, shape [batch, vocab].

None of them modify their input. Banned tokens get -inf. `ids` is the whole row so far
(prompt, left padding included, plus what was generated), as transformers' processors see it.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

NEG_INF = float("-inf")


def scale_temperature(scores: torch.Tensor, t: float) -> torch.Tensor:
    """Divide by t: t < 1 sharpens the distribution, t > 1 flattens it."""
    if not t > 0:
        raise ConfigError(f"temperature={t}: must be > 0 (use the greedy strategy for t -> 0)")
    return scores if t == 1.0 else scores / t


def filter_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest scores per row (ties with the k-th are kept too); k <= 0 keeps all."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, NEG_INF)


def filter_top_p(scores: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    A token is kept when the tokens ranked above it hold less than p in total.
    """
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"top_p={p}: must be in (0, 1]; 1 turns the filter off")
    if p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
    probs = sorted_scores.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_above >= p
    drop_sorted[..., :min_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, NEG_INF)


def penalize_repetition(scores: torch.Tensor, ids: torch.Tensor, penalty: float,
                        skip: torch.Tensor | None = None) -> torch.Tensor:
    """CTRL penalty on every token already in the row: negative scores * penalty, positive / penalty.

    skip: per row, how many leading positions to ignore (the left padding of the prompt).
    """
    if not penalty > 0:
        raise ConfigError(f"repetition_penalty={penalty}: must be > 0 (1.0 turns it off)")
    if penalty == 1.0:
        return scores
    vocab = scores.shape[-1]
    ids = ids.clamp(max=vocab)  # spare column `vocab` absorbs skipped positions, cut off below
    if skip is not None:
        positions = torch.arange(ids.shape[1], device=ids.device)
        ids = ids.masked_fill(positions[None, :] < skip[:, None], vocab)
    padded = torch.nn.functional.pad(scores, (0, 1))
    seen = torch.gather(padded, 1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return padded.scatter(1, ids, seen)[:, :vocab]


def banned_ngram_mask(ids: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """Bool [batch, vocab]: tokens that would complete an n-gram already present in the row."""
    batch, length = ids.shape
    banned = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=ids.device)
    if n <= 0 or length < n:
        return banned[:, :vocab_size]
    prefix = ids[:, length - n + 1 :]  # the last n-1 tokens
    windows = ids.unfold(1, n, 1)  # [batch, length-n+1, n]
    hits = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)
    # non-matching windows point at the spare column `vocab_size`, which is cut off
    banned.scatter_(1, torch.where(hits, windows[..., -1].clamp(max=vocab_size), vocab_size), True)
    return banned[:, :vocab_size]


def ban_repeated_ngrams(scores: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would repeat an n-gram of the row; n <= 0 turns it off."""
    if n <= 0:
        return scores
    return scores.masked_fill(banned_ngram_mask(ids, n, scores.shape[-1]), NEG_INF)


def process(
    scores: torch.Tensor,
    ids: torch.Tensor,
    *,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the processors in transformers' order: penalty, n-gram ban, then T, top-k, top-p.

    skip: per row, the number of left-padding positions the repetition penalty ignores.
    """
    scores = penalize_repetition(scores, ids, repetition_penalty, skip)
    scores = ban_repeated_ngrams(scores, ids, no_repeat_ngram_size)
    scores = scale_temperature(scores, temperature)
    scores = filter_top_k(scores, top_k)
    return filter_top_p(scores, top_p)
