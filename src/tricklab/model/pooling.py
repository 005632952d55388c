"""Poolings: encoder output + attention mask -> one vector per example, (B, T, H) -> (B, P)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import POOLINGS


class Pooling:
    needs_all_layers = False
    needs_pooler = False
    summary_last = False   # the summary token ([CLS]) is the last real token, not the first (XLNet: ... <sep> <cls>)

    def out_dim(self, hidden: int, n_layers: int) -> int:
        return hidden

    def __call__(self, enc_out, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)                       # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)          # (B, H)


def masked_max(h: Tensor, mask: Tensor) -> Tensor:
    return h.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(h.dtype).min).amax(1)  # (B, H)


def summary_token(h: Tensor, mask: Tensor, last: bool) -> Tensor:
    """(B, T, H) -> (B, H): the first token, or the last real one (batches are padded on the right)."""
    if not last:
        return h[:, 0]
    pos = (mask.sum(1) - 1).clamp(min=0)                     # (B,)
    return h[torch.arange(h.shape[0], device=h.device), pos]


def last_real_token(h: Tensor, mask: Tensor) -> Tensor:
    """(B, T, H) -> (B, H): the state at each row's last real (mask = 1) position, whichever side the padding is
    on: index = max over t of t·mask[t] (a row without real tokens reads position 0)."""
    pos = (mask.bool() * torch.arange(mask.shape[1], device=mask.device)).argmax(1)   # (B,)
    return h[torch.arange(h.shape[0], device=h.device), pos]


@POOLINGS.register("last")
class LastPooling(Pooling):
    """The last real token's last-layer state, for decoder LMs (causal attention: only the last token has read
    the whole text). Left or right padding alike."""

    def __call__(self, enc_out, mask):
        return last_real_token(enc_out.last_hidden_state, mask)


@POOLINGS.register("pooler")
class PoolerPooling(Pooling):
    """The encoder's own pooler (BERT: tanh(W·h_CLS)), as in the original BERT classifier."""
    needs_pooler = True

    def __call__(self, enc_out, mask):
        return enc_out.pooler_output


@POOLINGS.register("cls")
class ClsPooling(Pooling):
    """The summary token's last hidden state: the first token ([CLS]), or for XLNet the last real one (<cls>)."""

    def __call__(self, enc_out, mask):
        return summary_token(enc_out.last_hidden_state, mask, self.summary_last)


@POOLINGS.register("mean")
class MeanPooling(Pooling):
    """Mean of the last layer over real (unpadded) tokens."""

    def __call__(self, enc_out, mask):
        return masked_mean(enc_out.last_hidden_state, mask)


@POOLINGS.register("max")
class MaxPooling(Pooling):
    """Per-dimension max of the last layer over real tokens."""

    def __call__(self, enc_out, mask):
        return masked_max(enc_out.last_hidden_state, mask)


@POOLINGS.register("last4_concat")
class Last4Concat(Pooling):
    """[CLS] of the last four layers concatenated: (B, 4H) (fewer in encoders with fewer layers)."""
    needs_all_layers = True

    def out_dim(self, hidden, n_layers):
        return min(4, n_layers + 1) * hidden  # hidden_states = embeddings + one per layer

    def __call__(self, enc_out, mask):
        return torch.cat([summary_token(h, mask, self.summary_last) for h in enc_out.hidden_states[-4:]], dim=-1)


@POOLINGS.register("last4_mean")
class Last4Mean(Pooling):
    """Masked token mean of the average of the last four layers."""
    needs_all_layers = True

    def __call__(self, enc_out, mask):
        return masked_mean(torch.stack(enc_out.hidden_states[-4:]).mean(0), mask)
