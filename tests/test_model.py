"""Every registered pooling and head, every task; save/load round trip; transformers compatibility."""
from __future__ import annotations

import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.model import build_classifier, load_model, save_model
from tricklab.registry import HEADS, POOLINGS


def batch(tok, texts=("球赛冠军", "股市利率基金银行")):
    return tok(list(texts), padding=True, return_tensors="pt", return_token_type_ids=False)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_every_pooling(tiny_model, pooling):
    m, tok, _ = build_classifier(str(tiny_model), 3, pooling, "linear", {}, 0.1)
    out = m(**batch(tok))
    assert out.logits.shape == (2, 3) and out.pooled.shape[0] == 2
    out.logits.sum().backward()
    assert m.encoder.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head(tiny_model, head):
    m, tok, _ = build_classifier(str(tiny_model), 4, "mean", head, {}, 0.1)
    for texts in (("球",), ("球赛冠军", "股市利率基金银行玩家游戏")):  # 1-token and padded batches
        out = m(**batch(tok, texts))
        assert out.logits.shape == (len(texts), 4) and torch.isfinite(out.logits).all()
        assert out.pooled.shape == (len(texts), m.classifier.feature_dim)


def test_padding_does_not_change_predictions(tiny_model):
    m, tok, _ = build_classifier(str(tiny_model), 3, "mean", "linear", {}, 0.1)
    m.eval()
    alone = m(**batch(tok, ("球赛",))).logits
    padded = m(**batch(tok, ("球赛", "股市利率基金银行玩家"))).logits[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_pooler_required(tiny_model):
    from transformers import AutoModel

    from tricklab.model.classifier import Classifier

    enc = AutoModel.from_pretrained(str(tiny_model), add_pooling_layer=False)
    with pytest.raises(ConfigError, match="no pooler layer; fix: --set model.pooling=mean"):
        Classifier(enc, 3, "pooler", "linear")


def test_unknown_names_suggest(tiny_model):
    with pytest.raises(ConfigError, match=r"unknown pooling 'maen'; did you mean 'mean'\?"):
        build_classifier(str(tiny_model), 3, "maen", "linear", {}, 0.1)
    with pytest.raises(ConfigError, match=r"unknown head 'rcn'"):
        build_classifier(str(tiny_model), 3, "mean", "rcn", {}, 0.1)
    with pytest.raises(ConfigError, match="model folder .* not found"):
        build_classifier("./no/such/folder", 3, "mean", "linear", {}, 0.1)


def meta(task, names, pooling="pooler", head="linear"):
    return {"task": task, "num_labels": 1 if task == "regression" else len(names),
            "labels": {"task": task, "names": names, "from_ids": False},
            "model": {"pooling": pooling, "head": head, "head_args": {}, "dropout": 0.1, "backbone": "tiny"},
            "data": {"max_length": 16, "lowercase": False, "pair": False}}


@pytest.mark.parametrize("pooling,head", [("pooler", "linear"), ("mean", "linear"), ("cls", "cnn"), ("mean", "dpcnn")])
def test_save_load_round_trip(tiny_model, tmp_path, pooling, head):
    m, tok, _ = build_classifier(str(tiny_model), 3, pooling, head, {}, 0.1)
    m.eval()
    save_model(m, tok, tmp_path / "model", meta("single_label", ["a", "b", "c"], pooling, head))
    assert (tmp_path / "model" / "model.safetensors").is_file()
    m2, tok2, _ = load_model(tmp_path / "model")
    b = batch(tok)
    torch.testing.assert_close(m(**b).logits, m2(**b).logits)


def test_pooler_linear_is_a_transformers_checkpoint(tiny_model, tmp_path):
    from transformers import pipeline

    m, tok, _ = build_classifier(str(tiny_model), 3, "pooler", "linear", {}, 0.1)
    m.eval()
    save_model(m, tok, tmp_path / "model", meta("single_label", ["sports", "finance", "game"]))
    clf = pipeline("text-classification", model=str(tmp_path / "model"), device="cpu")
    texts = ["球赛冠军", "股市利率基金银行", "玩家游戏"]
    ours = m(**batch(tok, texts)).logits.detach().softmax(-1)
    for t, row, p in zip(texts, ours, clf(texts, top_k=None)):
        best = max(p, key=lambda d: d["score"])
        assert best["label"] == ["sports", "finance", "game"][int(row.argmax())]
        assert best["score"] == pytest.approx(float(row.max()), abs=1e-5)
