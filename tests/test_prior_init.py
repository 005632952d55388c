"""model.prior_bias_init: the output biases start at the train label log-odds (multi-label) or log-priors
(single-label), for every head; the untrained model's loss is then the entropy of the label priors."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from conftest import make_text, tiny_cfg
from tricklab.config import load_config
from tricklab.data import load_data
from tricklab.errors import ConfigError
from tricklab.model import build_classifier, load_model, prior_bias
from tricklab.registry import HEADS
from tricklab.training import train

FREQ = {"a": 0.9, "b": 0.5, "c": 0.15, "d": 0.05, "e": 0.0}  # e: in class.txt, never in train


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
    rng = random.Random(3)
    folder = tmp_path_factory.mktemp("ml")
    for split, n in (("train", 80), ("dev", 20)):
        lines = []
        for _ in range(n):
            labs = [lab for lab, f in FREQ.items() if rng.random() < f] or ["b"]
            lines.append(f"{make_text(rng, rng.choice(['sports', 'finance', 'game']))}\t{'|'.join(labs)}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "class.txt").write_text("\n".join(FREQ), encoding="utf-8")
    return folder


def expected_log_odds(bundle) -> torch.Tensor:
    n, names = len(bundle.train), bundle.label_map.names
    p = [sum(i in y for y in bundle.train.labels) / n for i in range(len(names))]
    return torch.tensor([math.log(q / (1 - q)) for q in (min(max(q, 1e-4), 1 - 1e-4) for q in p)])


def built(model_path, ml_dir, head="linear", pooling="pooler"):
    bundle = load_data(tiny_cfg(model_path), ml_dir)
    m, tok, _ = build_classifier(str(model_path), bundle.label_map.num_labels, pooling, head, {}, 0.1)
    return bundle, m, tok


def test_prior_bias_values():
    torch.testing.assert_close(prior_bias("multi_label", [1, 0, 4], 4),
                               torch.tensor([math.log(1 / 3), math.log(1e-4 / (1 - 1e-4)), math.log((1 - 1e-4) / 1e-4)]))
    torch.testing.assert_close(prior_bias("single_label", [1, 3], 4), torch.tensor([math.log(0.25), math.log(0.75)]))
    with pytest.raises(ConfigError, match="classification tasks only"):
        prior_bias("regression", [], 4)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_gets_the_log_odds(tiny_model, ml_dir, head):
    bundle, m, _ = built(tiny_model, ml_dir, head, "mean")
    assert bundle.task == "multi_label" and bundle.label_map.names == list(FREQ)
    m.init_output_bias(prior_bias(bundle.task, bundle.class_counts(), len(bundle.train)))
    bias = m.classifier.output_layer.bias.detach()
    torch.testing.assert_close(bias, expected_log_odds(bundle))
    assert bias[-1].item() == pytest.approx(math.log(1e-4 / (1 - 1e-4)))  # label absent from train
    with pytest.raises(ValueError, match="expected \\(5,\\) values"):
        m.init_output_bias(torch.zeros(3))


def test_initial_loss_is_the_prior_entropy(tiny_model, ml_dir):
    bundle, m, tok = built(tiny_model, ml_dir)
    y = torch.zeros(len(bundle.train), 5)
    for i, labs in enumerate(bundle.train.labels):
        y[i, labs] = 1
    p = y.mean(0).clamp(1e-4, 1 - 1e-4)
    entropy = float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())  # mean over labels, as BCE averages
    m.eval()
    enc = tok([r.text for r in bundle.train.rows], padding=True, return_tensors="pt", return_token_type_ids=False)

    def loss() -> float:
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(m(**enc).logits, y))

    before = loss()
    m.init_output_bias(prior_bias(bundle.task, bundle.class_counts(), len(bundle.train)))
    after = loss()
    assert after == pytest.approx(entropy, abs=0.02) and before > entropy + 0.2


@pytest.mark.parametrize("setting", ["auto", "false"])
def test_train_applies_it_unless_false(tiny_model, ml_dir, tmp_path, setting):
    # one step at a negligible rate: the saved model's bias is (nearly) the initial one
    cfg = tiny_cfg(tiny_model, f"model.prior_bias_init={setting}", "train.max_steps=1", "train.lr=1e-12",
                   "train.checkpoint=false")
    train(cfg, ml_dir, out=tmp_path / "run", progress=False)
    bias = load_model(tmp_path / "run" / "model")[0].classifier.output_layer.bias.detach()
    target = expected_log_odds(load_data(cfg, ml_dir))
    if setting == "auto":
        torch.testing.assert_close(bias, target, atol=1e-5, rtol=0)
    else:  # the head's own initialisation: small uniform values (|b| <= 1/sqrt(in_dim))
        assert bias.abs().max() <= 1 / math.sqrt(32) + 1e-6


def test_config_choices():
    assert load_config(None, []).model.prior_bias_init == "auto"
    assert load_config(None, ["model.prior_bias_init=true"]).model.prior_bias_init == "true"  # YAML bool -> "true"
    with pytest.raises(ConfigError, match="did you mean 'auto'"):
        load_config(None, ["model.prior_bias_init=aut"])
    with pytest.raises(ConfigError, match="not regression"):
        load_config(None, ["task=regression", "model.prior_bias_init=true"])


def test_single_label_true_sets_log_priors(tiny_model, thuc_dir, tmp_path):
    cfg = tiny_cfg(tiny_model, "model.prior_bias_init=true", "train.max_steps=1", "train.lr=1e-12",
                   "train.checkpoint=false")
    train(cfg, thuc_dir, out=tmp_path / "run", progress=False)
    bias = load_model(tmp_path / "run" / "model")[0].classifier.output_layer.bias.detach()
    counts = load_data(cfg, thuc_dir).class_counts()
    torch.testing.assert_close(bias, torch.tensor(counts, dtype=torch.float).div(sum(counts)).log(), atol=1e-5, rtol=0)
