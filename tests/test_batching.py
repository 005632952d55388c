"""data/batching.py against references written here: the epoch's batches (reproducible per (seed, epoch),
length-grouped in pools of 64 batches, or drawn with replacement by weight), eval batches longest first,
collate's padding, masks, segment ids and per-task label tensors, encode's lower-casing and pair
handling, and the lower-case detection on a tokenizer that knows only some letters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from tricklab.data.batching import Encoded, collate, encode, eval_batches, needs_lowercase, train_batches
from tricklab.data.truncation import Truncation
from tricklab.errors import ConfigError


def ref_train_batches(lengths, batch_size, seed, epoch, group, weights=None):
    """The docstring's recipe: a permutation (or weighted draws with replacement) from default_rng([seed, epoch]);
    grouping sorts pools of 64·batch_size rows (consecutive in that order) longest first, then the batch order
    is shuffled with the same generator."""
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    perm = rng.permutation(n) if weights is None else rng.choice(n, size=n, replace=True, p=weights)
    if group:
        pool = 64 * batch_size
        k = max(1, int(np.ceil(n / pool)))
        perm = np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in np.array_split(perm, k)])
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(len(batches)) if group else range(len(batches))
    return [batches[i] for i in order]


@pytest.mark.parametrize("n,bs,group", [(10, 3, False), (10, 3, True), (300, 2, True), (129, 2, True), (7, 8, True),
                                        (1, 4, False)])
def test_train_batches_match_reference(n, bs, group):
    lengths = np.random.default_rng(n).integers(1, 50, size=n)
    got = train_batches(lengths, bs, seed=3, epoch=2, group_by_length=group)
    want = ref_train_batches(lengths, bs, 3, 2, group)
    assert len(got) == len(want) == -(-n // bs)
    for g, w in zip(got, want):
        assert g.tolist() == w.tolist()
    assert sorted(np.concatenate(got).tolist()) == list(range(n))          # every row once per epoch
    again = train_batches(lengths, bs, seed=3, epoch=2, group_by_length=group)
    assert all(np.array_equal(a, b) for a, b in zip(got, again))             # resume: the same epoch again
    if n >= 10:
        other_epoch = train_batches(lengths, bs, seed=3, epoch=3, group_by_length=group)
        other_seed = train_batches(lengths, bs, seed=4, epoch=2, group_by_length=group)
        flat = np.concatenate(got)
        assert not np.array_equal(flat, np.concatenate(other_epoch))
        assert not np.array_equal(flat, np.concatenate(other_seed))


def test_train_batches_group_sorts_within_pools_and_shuffles_batches():
    lengths = np.arange(1024) % 97 + 1
    got = train_batches(lengths, 4, seed=0, epoch=0, group_by_length=True)   # 4 pools of 256 rows (64 batches)
    for b in got:
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
    spans = [lengths[b].max() - lengths[b].min() for b in got]
    assert np.mean(spans) < 5                                                 # neighbours in length
    firsts = [lengths[b[0]] for b in got]
    assert firsts != sorted(firsts, reverse=True)                            # batch order shuffled
    plain = train_batches(lengths, 4, seed=0, epoch=0, group_by_length=False)
    assert np.mean([lengths[b].max() - lengths[b].min() for b in plain]) > 20


def test_train_batches_weighted_draws():
    lengths = np.full(50, 5)
    w = np.zeros(50)
    w[[3, 7, 11]] = [0.5, 0.25, 0.25]
    for group in (False, True):
        got = train_batches(lengths, 8, seed=1, epoch=4, group_by_length=group, weights=w)
        want = ref_train_batches(lengths, 8, 1, 4, group, weights=w)
        assert [g.tolist() for g in got] == [x.tolist() for x in want]
        flat = np.concatenate(got)
        assert len(flat) == 50 and set(flat.tolist()) <= {3, 7, 11} and (flat == 3).sum() > 15


def test_eval_batches_longest_first_stable():
    lengths = np.array([3, 9, 3, 1, 9, 5, 3])
    got = eval_batches(lengths, 3)
    assert [b.tolist() for b in got] == [[1, 4, 5], [0, 2, 6], [3]]
    assert [b.tolist() for b in eval_batches(lengths, 10)] == [[1, 4, 5, 0, 2, 6, 3]]
    many = np.random.default_rng(0).integers(1, 6, size=200)                 # many ties: a stable sort is needed
    want = sorted(range(200), key=lambda i: -many[i])                         # Python's sort is stable
    got = eval_batches(many, 16)
    assert np.concatenate(got).tolist() == want and [len(b) for b in got] == [16] * 12 + [8]


def enc_of(ids, tt=None, labels=None, extra=None):
    return Encoded(ids, tt, labels, extra=extra or {})


def test_collate_pads_masks_and_segments():
    ids = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    tt = [[0, 0, 1], [0], [0, 0, 1, 1], [0, 1]]
    soft = np.arange(8, dtype=np.float32).reshape(4, 2)
    b = collate(enc_of(ids, tt, extra={"soft_labels": soft}), np.array([2, 1, 3]), pad_id=99, task=None)
    assert b.inputs["input_ids"].tolist() == [[9, 10, 11, 12], [8, 99, 99, 99], [13, 14, 99, 99]]
    assert b.inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert b.inputs["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert all(t.dtype == torch.long for t in b.inputs.values())
    assert b.labels is None and b.index.tolist() == [2, 1, 3] and b.index.dtype == torch.long
    assert torch.equal(b.extra["soft_labels"], torch.tensor([[4.0, 5.0], [2.0, 3.0], [6.0, 7.0]]))
    single = collate(enc_of(ids[:2]), [1, 0], pad_id=0, task=None)           # a list of indices works too
    assert set(single.inputs) == {"input_ids", "attention_mask"} and single.inputs["input_ids"].tolist() == [[8, 0, 0], [5, 6, 7]]


def test_collate_labels_per_task():
    ids = [[1], [2], [3]]
    b = collate(enc_of(ids, labels=[2, 0, 1]), np.array([2, 0]), 0, "single_label")
    assert b.labels.tolist() == [1, 2] and b.labels.dtype == torch.long
    b = collate(enc_of(ids, labels=[[0, 3], [], [1]]), np.array([0, 1, 2]), 0, "multi_label", num_labels=4)
    assert b.labels.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]] and b.labels.dtype == torch.float32
    b = collate(enc_of(ids, labels=[0.5, -1.25, 3.0]), np.array([1, 2]), 0, "regression")
    assert b.labels.tolist() == [-1.25, 3.0] and b.labels.dtype == torch.float32
    assert collate(enc_of(ids, labels=[0, 1, 2]), np.array([0]), 0, None).labels is None   # predicting: no labels
    assert collate(enc_of(ids), np.array([0]), 0, "single_label").labels is None           # unlabelled rows
    b = collate(enc_of(ids, labels=[1, 5, 3]), np.array([1, 2]), 0, "regression")          # integer scores
    assert b.labels.tolist() == [5.0, 3.0] and b.labels.dtype == torch.float32


def test_encoded_expand_and_aggregate():
    rows = Encoded([[1], [2], [3]], None, None)
    per_doc = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert rows.expand(per_doc) is per_doc and rows.aggregate(per_doc) is per_doc
    chunks = Encoded([[1], [2], [3]], None, None, doc_index=np.array([0, 0, 1]), agg="max")
    assert chunks.expand(per_doc[:2]).tolist() == [[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]
    assert chunks.aggregate(np.array([[1.0, 5.0], [2.0, 0.0], [7.0, 7.0]])).tolist() == [[2.0, 5.0], [7.0, 7.0]]
    chunks.agg = "mean"
    assert chunks.aggregate(np.array([[1.0, 5.0], [2.0, 0.0], [7.0, 7.0]])).tolist() == [[1.5, 2.5], [7.0, 7.0]]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + ["球", "赛"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)


def test_encode_lowercases_pairs_and_segments(tok):
    e = encode(tok, ["A B c", "球"], ["D", "e f"], max_length=16, lowercase=True, labels=[1, 0])
    cls, sep = tok.cls_token_id, tok.sep_token_id
    a, b, c, d, e_, f = (tok.convert_tokens_to_ids(x) for x in "abcdef")
    assert e.input_ids == [[cls, a, b, c, sep, d, sep], [cls, tok.convert_tokens_to_ids("球"), sep, e_, f, sep]]
    assert e.token_type_ids == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]] and e.labels == [1, 0]
    assert e.doc_index is None and len(e) == 2 and e.lengths.tolist() == [7, 6]
    kept = encode(tok, ["A"], ["C"], max_length=16, lowercase=False)       # no lower-casing: capitals are unknown
    assert kept.input_ids == [[cls, tok.unk_token_id, sep, tok.unk_token_id, sep]] and kept.labels is None
    single = encode(tok, ["A b"], None, max_length=16, lowercase=True)
    assert single.input_ids == [[cls, a, b, sep]] and single.token_type_ids is None
    short = encode(tok, ["a b c d e f"], ["a b c"], max_length=6, lowercase=False)
    assert len(short.input_ids[0]) == 6                                       # truncated to max_length
    with pytest.raises(ConfigError, match=r"^config data.truncation=tail: single texts only; sentence pairs are cut "
                                          r"from the end of the longer text; fix: --set data.truncation=head$"):
        encode(tok, ["a"], ["b"], 16, False, None, Truncation("tail"))
    chunked = encode(tok, ["a b c d e f g h i j", "a"], None, 6, True, ["x", "y"], Truncation("chunk", stride=2))
    assert chunked.labels == ["x"] * (len(chunked) - 1) + ["y"] and chunked.doc_index.tolist()[-1] == 1
    assert chunked.agg == "mean" and chunked.token_type_ids is None
    assert encode(tok, ["a b c d e f g h"], None, 6, False, None, Truncation("chunk", stride=2)).labels is None


class LetterTokenizer:
    """Knows the letters in `known` (one id each); anything else is unk (id 1); unk_token_id may be None."""

    def __init__(self, known: str, unk: int | None = 1):
        self.known, self.unk_token_id = known, unk

    def __call__(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        return {"input_ids": [10 + ord(c) if c in self.known else 1 for c in text.split()]}


def test_needs_lowercase_counts_unknown_letters():
    lower, upper = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert needs_lowercase(LetterTokenizer(lower))                             # capitals all unknown
    assert not needs_lowercase(LetterTokenizer(lower + upper))                 # knows both cases
    assert not needs_lowercase(LetterTokenizer(lower, unk=None))               # no unk token: nothing to detect
    assert not needs_lowercase(LetterTokenizer(""))                            # knows neither case: same ids
    assert needs_lowercase(LetterTokenizer(lower + upper[:12]))                # 14 capitals unknown (> 13)
    assert not needs_lowercase(LetterTokenizer(lower + upper[:13]))            # 13 unknown: not more than half
    assert needs_lowercase(LetterTokenizer(lower[:14]))                        # 12 small letters unknown (< 13)
    assert not needs_lowercase(LetterTokenizer(lower[:13]))                    # 13 unknown: not fewer than 13
