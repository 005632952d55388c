"""Padding must not change predictions: every pooling and head gives a text the same logits and
features alone as padded in a batch beside longer texts, and at any evaluation batch size.

Pad positions are filled with random token ids / large random states (not just [PAD] / zeros), so
a head that reads them at all shows it. Reference checks (value and gradient, float64):
- poolings: mean / max / cls (first token, or XLNet's summary-last <cls>) / last4_* against explicit
  per-example slices of the real tokens;
- cnn (TextCNN, Kim 2014, arXiv:1408.5882): an explicit loop over the windows that lie inside each text's
  real tokens; a text shorter than a filter is zero-extended to that filter's width (one window);
- dpcnn (Johnson & Zhang 2017, ACL, "Deep Pyramid CNNs for Text Categorization"): each text alone through
  the unmasked algorithm (region conv, two convs, then (pool 3/2, two convs, residual) until one
  position is left), written here, equals its row of the masked batched head.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.data.batching import Encoded
from tricklab.model import build_classifier
from tricklab.registry import HEADS, POOLINGS
from tricklab.model.runtime import all_logits

SEQ_HEADS = sorted(h for h in HEADS if HEADS[h].sequence)
# sequence heads read the token states and ignore the pooling; a pooled head gets every pooling
COMBOS = [(h, p) for h in sorted(HEADS) for p in (["mean"] if HEADS[h].sequence else sorted(POOLINGS))]
# 1 token; shorter than the widest CNN filter (4); odd and even (DPCNN downsampling); long
LENGTHS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 23)


def ragged(lengths, gen: torch.Generator, low: int = 5, high: int = 40) -> list[list[int]]:
    return [torch.randint(low, high, (n,), generator=gen).tolist() for n in lengths]


def pad_garbage(texts: list[list[int]], gen: torch.Generator, high: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and mask; pad positions hold random real token ids, not [PAD]."""
    T = max(len(t) for t in texts)
    ids = torch.randint(5, high, (len(texts), T), generator=gen)
    mask = torch.zeros((len(texts), T), dtype=torch.long)
    for r, t in enumerate(texts):
        ids[r, : len(t)] = torch.tensor(t)
        mask[r, : len(t)] = 1
    return ids, mask


# ---------------------------------------------------------------- whole model (tiny random BERT)

@pytest.mark.parametrize("head,pooling", COMBOS)
def test_text_alone_equals_text_padded_in_batch(tiny_model, head, pooling):
    m, tok, _ = build_classifier(str(tiny_model), 3, pooling, head, {}, 0.1)
    m.eval()                                                        # dropout off
    gen = torch.Generator().manual_seed(1)
    texts = ragged(LENGTHS, gen, high=len(tok))
    ids, mask = pad_garbage(texts, gen, high=len(tok))
    with torch.no_grad():
        out = m(input_ids=ids, attention_mask=mask)
        for i, t in enumerate(texts):
            alone = m(input_ids=torch.tensor([t]), attention_mask=torch.ones((1, len(t)), dtype=torch.long))
            torch.testing.assert_close(out.logits[i], alone.logits[0], atol=1e-5, rtol=1e-4,
                                       msg=lambda s: f"length {len(t)}: {s}")
            torch.testing.assert_close(out.pooled[i], alone.pooled[0], atol=1e-5, rtol=1e-4,
                                       msg=lambda s: f"length {len(t)} features: {s}")


@pytest.mark.parametrize("head", sorted(HEADS))
def test_eval_batch_size_does_not_matter(tiny_model, head):
    m, tok, _ = build_classifier(str(tiny_model), 3, "mean", head, {}, 0.1)
    enc = Encoded(ragged((2, 3, 5, 8, 13, 21), torch.Generator().manual_seed(2), high=len(tok)), None, None)
    one = all_logits(m, enc, 6, tok.pad_token_id, torch.device("cpu"), "fp32")   # one batch of 6
    for bs in (2, 1):                                               # pairs of similar length; each text alone
        np.testing.assert_allclose(all_logits(m, enc, bs, tok.pad_token_id, torch.device("cpu"), "fp32"), one,
                                   atol=1e-5, rtol=1e-4, err_msg=f"batch size {bs}")


# ---------------------------------------------------------------- poolings: reference values and gradients

POOL_REFS = {  # (hidden_states list of (B, T, H), pooler_output (B, H), lengths, summary_last) -> (B, P)
    "pooler": lambda hs, po, lengths, last: po,
    "cls": lambda hs, po, lengths, last: torch.stack([hs[-1][b, L - 1 if last else 0] for b, L in enumerate(lengths)]),
    "mean": lambda hs, po, lengths, last: torch.stack([hs[-1][b, :L].mean(0) for b, L in enumerate(lengths)]),
    "max": lambda hs, po, lengths, last: torch.stack([hs[-1][b, :L].amax(0) for b, L in enumerate(lengths)]),
    "last4_concat": lambda hs, po, lengths, last: torch.stack([
        torch.cat([h[b, L - 1 if last else 0] for h in hs[-4:]]) for b, L in enumerate(lengths)]),
    "last": lambda hs, po, lengths, last: torch.stack([hs[-1][b, L - 1] for b, L in enumerate(lengths)]),
    "last4_mean": lambda hs, po, lengths, last: torch.stack([
        sum(h[b, :L] for h in hs[-4:]).div(len(hs[-4:])).mean(0) for b, L in enumerate(lengths)]),
}


@pytest.mark.parametrize("summary_last", [False, True], ids=["first", "summary_last"])
@pytest.mark.parametrize("n_states", [5, 3])                        # 4 layers + embeddings; 2 layers + embeddings
@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_pooling_matches_reference(name, n_states, summary_last):
    if name not in POOL_REFS:
        pytest.fail(f"pooling {name!r} has no reference in tests/test_padding.py POOL_REFS; add one")
    gen = torch.Generator().manual_seed(3)
    B, T, H = 6, 9, 5
    lengths = [1, 2, 9, 4, 7, 3]
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()         # (B, T), right-padded
    hs = [torch.randn(B, T, H, generator=gen, dtype=torch.float64) for _ in range(n_states)]
    for h in hs:
        h.masked_fill_(~mask.bool()[..., None], 0.0)
        h.add_(100.0 * (1 - mask)[..., None])                        # large values at pad positions
        h.requires_grad_(True)
    po = torch.randn(B, H, generator=gen, dtype=torch.float64, requires_grad=True)
    pool = POOLINGS.build(name)
    pool.summary_last = summary_last
    got = pool(SimpleNamespace(last_hidden_state=hs[-1], hidden_states=tuple(hs), pooler_output=po), mask)
    want = POOL_REFS[name](hs, po, lengths, summary_last)
    assert got.shape == (B, pool.out_dim(H, n_states - 1))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    w = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    g_got = torch.autograd.grad((got * w).sum(), hs + [po], allow_unused=True, materialize_grads=True)
    g_want = torch.autograd.grad((want * w).sum(), hs + [po], allow_unused=True, materialize_grads=True)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------- sequence heads on random token states

def make_head(name: str, H: int = 8, C: int = 3):
    torch.manual_seed(0)
    return HEADS[name](H, C, 0.1).double().eval()


def random_states(lengths, H: int = 8, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H) float64 states with large random values at pad positions, and the (B, T) mask."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    h = torch.randn(len(lengths), T, H, generator=gen, dtype=torch.float64)
    h = h + 10.0 * torch.randn(h.shape, generator=gen, dtype=torch.float64) * (1 - mask)[..., None]
    return h, mask


BATCHES = [(1, 2, 3), LENGTHS, (23, 2, 1, 17, 3)]                    # (1, 2, 3): batch shorter than the widest filter


@pytest.mark.parametrize("lengths", BATCHES, ids=["short", "all", "unsorted"])
@pytest.mark.parametrize("name", SEQ_HEADS)
def test_sequence_head_alone_equals_batched(name, lengths):
    """Value and gradient: pad positions get zero gradient, real ones the gradient of the text alone."""
    head = make_head(name)
    h, mask = random_states(lengths)
    h.requires_grad_(True)
    logits, feats = head(h, mask)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (g,) = torch.autograd.grad((logits * w).sum(), h)
    for b, L in enumerate(lengths):
        x = h[b:b + 1, :L].detach().requires_grad_(True)
        la, fa = head(x, mask[b:b + 1, :L])
        (ga,) = torch.autograd.grad((la * w[b:b + 1]).sum(), x)
        torch.testing.assert_close(logits[b], la[0], atol=1e-10, rtol=1e-10, msg=lambda s: f"length {L}: {s}")
        torch.testing.assert_close(feats[b], fa[0], atol=1e-10, rtol=1e-10, msg=lambda s: f"length {L}: {s}")
        torch.testing.assert_close(g[b, :L], ga[0], atol=1e-10, rtol=1e-10, msg=lambda s: f"length {L}: {s}")
        assert torch.all(g[b, L:] == 0), f"length {L}: padding gets a gradient"


def cnn_reference(head, h: torch.Tensor, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    """TextCNN per text, explicit loop: for width k, windows t = 0..L-k of the real tokens (one window,
    zero-extended to k, when L < k); ReLU; max over windows; concat over widths; fc."""
    feats = []
    for b, L in enumerate(lengths):
        x = h[b, :L]                                                 # (L, H) real tokens only
        per_width = []
        for conv in head.convs:
            W, bias = conv.weight, conv.bias                         # (F, H, k), (F,)
            k = W.shape[-1]
            if L < k:
                x_k = torch.cat([x, x.new_zeros(k - L, x.shape[1])])
            else:
                x_k = x
            windows = [F.relu(torch.einsum("fhj,jh->f", W, x_k[t:t + k]) + bias) for t in range(len(x_k) - k + 1)]
            per_width.append(torch.stack(windows).amax(0))          # (F,)
        feats.append(torch.cat(per_width))
    feats = torch.stack(feats)                                       # (B, F*widths)
    return head.fc(feats), feats


@pytest.mark.parametrize("lengths", BATCHES, ids=["short", "all", "unsorted"])
def test_cnn_head_matches_reference(lengths):
    head = make_head("cnn")
    h, mask = random_states(lengths)
    h.requires_grad_(True)
    logits, feats = head(h, mask)
    ref_logits, ref_feats = cnn_reference(head, h, lengths)
    torch.testing.assert_close(feats, ref_feats, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(logits, ref_logits, atol=1e-10, rtol=1e-10)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (g,) = torch.autograd.grad((logits * w).sum(), h)
    (g_ref,) = torch.autograd.grad((ref_logits * w).sum(), h)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


def dpcnn_alone(head, x: torch.Tensor) -> torch.Tensor:
    """Johnson & Zhang 2017 on one text's real tokens (1, L, H), no mask: features (1, F). This is the
    head's algorithm before padding was handled (same-padded convs, pool 3 stride 2 after a zero pad)."""
    x = head.region(x.transpose(1, 2))                               # (1, F, L)
    x = head.conv(F.relu(x))
    x = head.conv(F.relu(x))
    while x.shape[-1] > 1:
        px = F.max_pool1d(F.pad(x, (0, 1)), 3, stride=2)             # (1, F, L // 2)
        x = head.conv(F.relu(px))
        x = head.conv(F.relu(x)) + px
    return x.squeeze(-1)


@pytest.mark.parametrize("lengths", BATCHES, ids=["short", "all", "unsorted"])
def test_dpcnn_head_matches_each_text_alone(lengths):
    head = make_head("dpcnn")
    h, mask = random_states(lengths)
    logits, feats = head(h, mask)
    for b, L in enumerate(lengths):
        want = dpcnn_alone(head, h[b:b + 1, :L])
        torch.testing.assert_close(feats[b], want[0], atol=1e-10, rtol=1e-10, msg=lambda s: f"length {L}: {s}")
        torch.testing.assert_close(logits[b], head.fc(want)[0], atol=1e-10, rtol=1e-10)
        # a text alone (mask all ones) gives the unmasked algorithm's result (float64: to rounding; the head pads
        # two zeros before each pooling, one more than the plain algorithm, so that no stage is ever empty)
        torch.testing.assert_close(head(h[b:b + 1, :L], mask[b:b + 1, :L])[1], want, atol=1e-12, rtol=0)


def lstm_by_hand(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """A bidirectional multi-layer LSTM over one text's real tokens (L, H), written from the LSTM equations
    (Hochreiter & Schmidhuber 1997; gates i, f, g, o in PyTorch's weight layout): (L, 2*hidden) outputs of the
    last layer, forward states then backward states."""
    def run(inp: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        W, U = getattr(lstm, f"weight_ih_l{layer}{suffix}"), getattr(lstm, f"weight_hh_l{layer}{suffix}")
        b = getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}")
        hs, h, c = [], inp.new_zeros(lstm.hidden_size), inp.new_zeros(lstm.hidden_size)
        for x_t in inp:
            i, f, g, o = (W @ x_t + U @ h + b).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        return torch.stack(hs)
    for layer in range(lstm.num_layers):
        x = torch.cat([run(x, layer, ""), run(x.flip(0), layer, "_reverse").flip(0)], -1)
    return x


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("name", ["rnn", "rcnn"])
def test_lstm_heads_match_the_equations(name, layers):
    """rnn: final forward state (after the last token) and final backward state (after the first) of the last
    layer -> fc; rcnn: ReLU([token state; BiLSTM output]) max over the real tokens -> fc. The batch is padded
    two positions beyond its longest text, so no row fills the batch length."""
    torch.manual_seed(0)
    head = HEADS[name](8, 3, 0.1, hidden=5, layers=layers).double().eval()
    lengths = (4, 1, 6, 3)
    h, mask = random_states(lengths)
    h = torch.cat([h, 7.0 * torch.randn(len(lengths), 2, 8, dtype=torch.float64)], 1)
    mask = torch.cat([mask, torch.zeros(len(lengths), 2, dtype=torch.long)], 1)
    logits, feats = head(h, mask)
    for b, L in enumerate(lengths):
        out = lstm_by_hand(head.lstm, h[b, :L])                      # (L, 2*hidden)
        if name == "rnn":
            want = torch.cat([out[L - 1, :5], out[0, 5:]])
        else:
            want = F.relu(torch.cat([h[b, :L], out], -1)).amax(0)
        torch.testing.assert_close(feats[b], want, atol=1e-10, rtol=1e-10, msg=lambda s: f"length {L}: {s}")
        torch.testing.assert_close(logits[b], head.fc(want), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["rnn", "rcnn"])
def test_lstm_heads_configuration(name):
    default = HEADS[name](8, 3)
    assert (default.lstm.hidden_size, default.lstm.num_layers, default.lstm.dropout) == (256, 2, 0.1)
    assert default.lstm.bidirectional and default.lstm.batch_first and default.dropout.p == 0.1
    assert HEADS[name](8, 3, 0.3, layers=1).lstm.dropout == 0.0           # no layer to drop out between
    assert HEADS[name](8, 3, 0.3, layers=3).lstm.dropout == 0.3
    # states of another dtype (a bf16 encoder) run in the LSTM's float32
    head = HEADS[name](8, 3, 0.0, hidden=4).eval()
    h = torch.randn(2, 5, 8).bfloat16()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits, _ = head(h, mask)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head(h.float(), mask)[0])


def test_cnn_and_dpcnn_defaults():
    cnn = HEADS["cnn"](8, 3)
    assert [c.kernel_size[0] for c in cnn.convs] == [2, 3, 4] and cnn.convs[0].out_channels == 256
    assert cnn.feature_dim == 768 and cnn.dropout.p == 0.1
    dp = HEADS["dpcnn"](8, 3)
    assert dp.feature_dim == 250 and dp.region.out_channels == 250 and dp.dropout.p == 0.1
