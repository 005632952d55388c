"""Class imbalance: the note before training (counts per class, remedies), classes left at F1 0 after training, and
the balanced sampler (`data.sampler: balanced`): its class frequencies, that it is a pure function of (seed, epoch)
and so replays on --resume, and that it composes with group_by_length."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from scipy.stats import chisquare

from conftest import make_text, tiny_cfg
from tricklab.config import load_config
from tricklab.data.batching import train_batches
from tricklab.errors import ConfigError

SKEW = [0] * 900 + [1] * 90 + [2] * 10


def drawn_classes(labels, epochs, group_by_length, seed=7):
    from tricklab.data.balance import balanced_weights

    labels = np.asarray(labels)
    lengths = np.random.default_rng(0).integers(3, 60, len(labels))
    w = balanced_weights(labels.tolist(), 3)
    out = []
    for e in range(epochs):
        batches = train_batches(lengths, 16, seed, e, group_by_length, weights=w)
        idx = np.concatenate(batches)
        assert len(idx) == len(labels)                          # an epoch keeps its size
        if group_by_length:                                     # still grouped: batches sorted by length within
            assert np.mean([np.all(np.diff(lengths[b]) <= 0) for b in batches]) > 0.9
        out.append(idx)
    return labels, np.concatenate(out)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_balanced_sampler_draws_classes_uniformly(group_by_length):
    labels, idx = drawn_classes(SKEW, 20, group_by_length)     # 20,000 draws
    counts = np.bincount(labels[idx], minlength=3)
    assert chisquare(counts).pvalue > 0.01, counts             # 1/3 each, not 90% / 9% / 1%
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.02)
    rare = np.bincount(idx[labels[idx] == 2], minlength=1000)[900 + 90:]
    assert chisquare(rare).pvalue > 0.01                       # within a class, examples equally likely
    plain = np.concatenate(train_batches(np.ones(1000, int), 16, 7, 0, group_by_length))
    assert sorted(plain.tolist()) == list(range(1000))         # without weights: a permutation, as before


def test_balanced_sampler_is_a_function_of_seed_and_epoch():
    from tricklab.data.balance import balanced_weights

    w = balanced_weights(SKEW, 3)
    lengths = np.arange(1000) % 50
    a = train_batches(lengths, 16, 3, 2, True, weights=w)
    b = train_batches(lengths, 16, 3, 2, True, weights=w)
    c = train_batches(lengths, 16, 3, 3, True, weights=w)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def skewed_folder(tmp_path, n=(60, 12, 3)):
    rng = random.Random(0)
    names = ["sports", "finance", "game"]
    folder = tmp_path / "skew"
    folder.mkdir()
    for split, k in (("train", 1), ("dev", 1)):
        rows = [f"{make_text(rng, names[c])}\t{c}" for c, m in enumerate(n) for _ in range(m * k)]
        rng.shuffle(rows)
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "class.txt").write_text("\n".join(names), encoding="utf-8")
    return folder


def test_imbalance_note_before_training_with_counts_and_remedies(tiny_model, tmp_path, capsys):
    from tricklab.training import train

    train(tiny_cfg(tiny_model, "train.epochs=1"), skewed_folder(tmp_path), out=tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    note = next(ln for ln in out.splitlines() if ln.startswith("note: imbalance"))
    assert out.index(note) < out.index("train 75 | dev 75")                 # before training
    for part in ("sports 60 (80.0%)", "finance 12 (16.0%)", "game 3 (4.0%)", "largest/smallest 20x", "macro-F1",
                 "ce:class_weights=balanced", "focal", "data.sampler=balanced"):
        assert part in note, part


def test_no_note_on_balanced_data(tiny_model, thuc_dir, tmp_path, capsys):
    from tricklab.training import train

    train(tiny_cfg(tiny_model, "train.epochs=1"), thuc_dir, out=tmp_path / "run", progress=False)
    assert "note: imbalance" not in capsys.readouterr().out


def test_classes_with_zero_f1_are_called_out():
    from tricklab.evaluation.reports import zero_f1_note

    m = {"accuracy": 0.95, "macro_f1": 0.4,
         "per_class": {"体育": {"f1": 0.97, "support": 90}, "财经": {"f1": 0.0, "support": 8},
                       "房产": {"f1": 0.0, "support": 2}, "空": {"f1": 0.0, "support": 0}}}
    note = zero_f1_note(m, "test")
    assert note.startswith("warning: 2 classes got F1 0.00 on test: 财经 (8 examples), 房产 (2 examples)")
    assert "accuracy 0.9500 but macro-F1 0.4000" in note and "data.sampler=balanced" in note
    assert zero_f1_note({"per_class": {"a": {"f1": 0.5, "support": 3}}}, "test") == ""


def test_sampler_run_resumes_to_the_same_losses(tiny_model, tmp_path, monkeypatch):
    from test_resume import interrupted_run, losses
    from tricklab.cli import main as cli_main
    from tricklab.training import train

    data = skewed_folder(tmp_path)
    ref = train(tiny_cfg(tiny_model, "train.epochs=3", "train.eval_every=2", "data.sampler=balanced"), data,
                out=tmp_path / "ref", progress=False)
    interrupted_run(tiny_model, data, tmp_path / "run", monkeypatch, 2, "data.sampler=balanced")
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    after = [s for s in a if s > 2]
    assert after and all(b[s] == pytest.approx(a[s], rel=1e-4) for s in after)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == ref["steps"]


def test_sampler_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'balanced'"):
        load_config(None, ["data.sampler=balnced"])
    from tricklab.data.balance import check_sampler

    with pytest.raises(ConfigError, match="single-label"):
        check_sampler("balanced", "multi_label")
    check_sampler("shuffle", "regression")
