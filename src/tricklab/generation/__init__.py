"""Our own decoding loops (greedy, beam search, sampling) over transformers causal LMs."""
from __future__ import annotations

from .decoding import Candidate, Step, beam_search, greedy, sample, sequence_logprob
from .processors import (
    ban_repeated_ngrams,
    banned_ngram_mask,
    filter_top_k,
    filter_top_p,
    penalize_repetition,
    process,
    scale_temperature,
)

__all__ = [
    "Candidate", "Step", "greedy", "sample", "beam_search", "sequence_logprob",
    "scale_temperature", "filter_top_k", "filter_top_p", "penalize_repetition",
    "ban_repeated_ngrams", "banned_ngram_mask", "process",
]
