"""Long texts: head/tail/head_tail truncation and chunk windows aggregated per document, through
encoding, training, evaluation, Predictor, `tricklab evaluate`, serve and the ONNX bundle; XLNet
(no pooler) with mean pooling. Tiny random models; one character is one token in the tiny vocabulary."""
from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CLASSES, NOISE, make_text, tiny_cfg
from tricklab.config import load_config
from tricklab.data.batching import encode
from tricklab.data.truncation import Truncation, aggregate, resolved_stride, window_starts
from tricklab.errors import ConfigError
from tricklab.evaluation.metrics import compute_metrics
from tricklab.inference import Predictor
from tricklab.training import train

NAMES = list(CLASSES)
MAX_LEN = 16      # [CLS] + 14 text tokens + [SEP]
BUDGET = MAX_LEN - 2
STRIDE = 4        # windows start every 10 tokens
MAX_CHUNKS = 4


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def ids_of(tok, s: str) -> list[int]:
    return tok.convert_tokens_to_ids(list(s))


def long_doc(rng: random.Random, label: str) -> str:
    """20..60 characters: several class-like pieces, so most documents need 2..5 windows."""
    out = ""
    while len(out) < rng.randint(20, 60):
        out += make_text(rng, label)
    return out


def write_long(folder: Path, n_train: int = 48, n_dev: int = 24, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = [f"{long_doc(rng, NAMES[i % 3])}\t{i % 3}" for i in range(n)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "class.txt").write_text("\n".join(NAMES), encoding="utf-8")
    return folder


# ---------------------------------------------------------------- encoding

def test_head_tail_head_tail_keep_the_right_tokens(tok):
    text = "球赛队员冠军胜负股市银行利率基金玩家游戏"          # 20 tokens, budget 14
    ids = ids_of(tok, text)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    got = {p: encode(tok, [text, "球赛"], None, MAX_LEN, False, [0, 1], Truncation(p)).input_ids
           for p in ("head", "tail", "head_tail")}
    assert got["head"][0] == [cls] + ids[:14] + [sep]
    assert got["head"][0] == tok(text, truncation=True, max_length=MAX_LEN)["input_ids"]   # today's behaviour
    assert got["tail"][0] == [cls] + ids[-14:] + [sep]
    assert got["head_tail"][0] == [cls] + ids[:4] + ids[-10:] + [sep]    # round(0.25 * 14) = 4 head + 10 tail
    for p in got:                                                         # short texts are untouched
        assert got[p][1] == [cls] + ids_of(tok, "球赛") + [sep]
    ht = lambda r: encode(tok, [text], None, MAX_LEN, False, None, Truncation("head_tail", head_ratio=r)).input_ids[0]
    assert ht(0.0) == got["tail"][0] and ht(1.0) == got["head"][0]
    assert ht(0.5) == [cls] + ids[:7] + ids[-7:] + [sep]
    # the recipe of Sun et al.: 128 head + 382 tail tokens of a 512 window
    e = encode(tok, ["的" * 600], None, 512, False, None, Truncation("head_tail", head_ratio=0.25))
    assert len(e.input_ids[0]) == 512
    low = encode(tok, ["ABC" + text], None, MAX_LEN, True, None, Truncation("tail"))   # lowercase still applies
    assert low.input_ids[0] == [cls] + ids[-14:] + [sep]
    low = encode(tok, [" ".join("ABCDEFGHIJKLMNOPQRST")], None, MAX_LEN, True, None, Truncation("tail"))
    assert low.input_ids[0] == [cls] + ids_of(tok, "ghijklmnopqrst") + [sep]


@pytest.mark.parametrize("n, stride, max_chunks", [(0, 4, 8), (14, 4, 8), (15, 4, 8), (40, 4, 8), (44, 4, 8),
                                                    (100, 4, 3), (40, 0, 8), (40, 13, 8), (25, None, 8)])
def test_chunk_windows_cover_the_document_with_the_stride(tok, n, stride, max_chunks):
    rng = random.Random(n)
    text = "".join(rng.choice(NOISE) for _ in range(n))
    ids = ids_of(tok, text)
    t = Truncation("chunk", stride=stride, max_chunks=max_chunks)
    e = encode(tok, ["球", text, "赛"], None, MAX_LEN, False, [2, 1, 0], t)
    rows = np.flatnonzero(e.doc_index == 1)
    wins = [e.input_ids[i] for i in rows]
    assert all(w[0] == tok.cls_token_id and w[-1] == tok.sep_token_id and len(w) <= MAX_LEN for w in wins)
    body = [w[1:-1] for w in wins]
    s = BUDGET // 4 if stride is None else stride                         # default: a quarter of the window
    step = BUDGET - s
    need = 1 if n <= BUDGET else 1 + math.ceil((n - BUDGET) / step)
    assert len(wins) == min(need, max_chunks)
    for k, b in enumerate(body):
        assert b == ids[k * step: k * step + BUDGET]                        # window k starts at k * step
    for a, b in zip(body, body[1:]):                                        # consecutive windows share `stride`
        assert len(a) == BUDGET and (a[len(a) - s:] == b[:s])
    if need <= max_chunks:                                                  # every token is in some window
        covered = sorted({k * step + j for k, b in enumerate(body) for j in range(len(b))})
        assert covered == list(range(n))
    else:
        assert max(k * step + len(b) for k, b in enumerate(body)) == (max_chunks - 1) * step + BUDGET < n
    # doc_index: non-decreasing, every document present, labels replicated, one window for short texts
    assert list(e.doc_index) == [0] + [1] * len(wins) + [2]
    assert e.labels == [2] + [1] * len(wins) + [0] and e.num_docs == 3
    soft = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert np.array_equal(e.expand(soft), soft[e.doc_index])                # soft labels follow their document


def test_window_starts_and_stride_errors():
    assert list(window_starts(0, 14, 4, 8)) == [0]
    assert list(window_starts(30, 14, 4, 8)) == [0, 10, 20]
    assert list(window_starts(1000, 14, 4, 5)) == [0, 10, 20, 30, 40]
    assert resolved_stride(Truncation("chunk"), 510) == 127
    with pytest.raises(ConfigError, match=r"data.stride=14: windows hold 14 text tokens.*fix: --set data.stride=3"):
        resolved_stride(Truncation("chunk", stride=14), 14)


def test_aggregate_mean_max_by_hand():
    lg = np.array([[1, 5], [3, 1], [0, 0], [2, 2], [4, -1], [-6, 9]], dtype=np.float32)
    doc = np.array([0, 0, 1, 2, 2, 2])
    assert np.allclose(aggregate(lg, doc, "mean"), [[2, 3], [0, 0], [0, 10 / 3]])
    assert np.allclose(aggregate(lg, doc, "max"), [[3, 5], [0, 0], [4, 9]])


@pytest.mark.parametrize("agg", ["mean", "max"])
def test_all_logits_aggregates_chunks_like_a_manual_loop(tiny_model, tok, agg):
    from tricklab.model import build_classifier
    from tricklab.model.runtime import all_logits

    torch.manual_seed(0)
    model, _, _ = build_classifier(str(tiny_model), 3, "mean", "linear", {}, 0.1)
    model.eval()
    rng = random.Random(5)
    docs = [long_doc(rng, NAMES[i % 3]) for i in range(5)] + ["球"]
    e = encode(tok, docs, None, MAX_LEN, False, None, Truncation("chunk", stride=STRIDE, agg=agg))
    assert len(e) > len(docs)
    got = all_logits(model, e, 3, 0, torch.device("cpu"), "fp32")           # windows of one doc span batches
    want = []
    with torch.no_grad():
        for d in range(len(docs)):
            rows = [model(torch.tensor([e.input_ids[i]]), torch.ones(1, len(e.input_ids[i]), dtype=torch.long)).logits[0]
                    for i in np.flatnonzero(e.doc_index == d)]
            st = torch.stack(rows)
            want.append((st.mean(0) if agg == "mean" else st.amax(0)).numpy())
    assert got.shape == (len(docs), 3)
    assert np.allclose(got, np.stack(want), atol=1e-5)


# ---------------------------------------------------------------- end to end

RUNS = {
    "head": ["data.truncation=head"],
    "tail": ["data.truncation=tail"],
    "head_tail": ["data.truncation=head_tail"],
    "chunk": ["data.truncation=chunk", "data.chunk_agg=mean"],
    "chunk_max_headtrain": ["data.truncation=chunk", "data.chunk_agg=max", "data.chunk_train=false"],
}


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    return write_long(tmp_path_factory.mktemp("long") / "data")


@pytest.fixture(scope="module")
def runs(tiny_model, long_dir, tmp_path_factory):
    cache: dict[str, tuple[Path, dict]] = {}

    def get(key: str) -> tuple[Path, dict]:
        if key not in cache:
            out = tmp_path_factory.mktemp("runs") / key
            m = train(tiny_cfg(tiny_model, "train.epochs=1", f"data.max_length={MAX_LEN}", f"data.stride={STRIDE}",
                               f"data.max_chunks={MAX_CHUNKS}", *RUNS[key]), long_dir, out=out, progress=False)
            cache[key] = (out, m)
        return cache[key]

    return get


def read_split(path: Path) -> tuple[list[str], list[int]]:
    rows = [ln.split("\t") for ln in path.read_text(encoding="utf-8").splitlines()]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def with_policy(pred: Predictor, truncation: dict | None) -> Predictor:
    """The same model with another (or, None: no) truncation entry in its meta."""
    meta = copy.deepcopy(pred.meta)
    meta["data"].pop("truncation")
    if truncation is not None:
        meta["data"]["truncation"] = truncation
    return Predictor(pred.model, pred.tokenizer, meta, device="cpu", precision="fp32", batch_size=2)


@pytest.mark.parametrize("key", list(RUNS))
def test_each_policy_trains_and_predicts_like_evaluation(runs, long_dir, tok, key):
    from tricklab.inference.evaluate import evaluate_run

    out, metrics = runs(key)
    policy = RUNS[key][0].split("=")[1]
    meta = json.loads((out / "model" / "tricklab.json").read_text(encoding="utf-8"))
    t = meta["data"]["truncation"]
    assert t["policy"] == policy and t["stride"] == STRIDE and t["max_chunks"] == MAX_CHUNKS
    assert t["agg"] == ("max" if key == "chunk_max_headtrain" else "mean")
    assert t["chunk_train"] == (key != "chunk_max_headtrain")
    # chunk with chunk_train: one training example per window; else one per text (16 per batch, 1 epoch)
    train_texts, _ = read_split(long_dir / "train.txt")
    n_train = len(encode(tok, train_texts, None, MAX_LEN, False, None, Truncation(policy, stride=STRIDE,
                                                                                 max_chunks=MAX_CHUNKS)))
    assert metrics["steps"] == math.ceil((n_train if key == "chunk" else len(train_texts)) / 16)
    if policy == "chunk":
        assert n_train > len(train_texts)
    # Predictor.from_run reproduces the dev evaluation; so does `tricklab evaluate`
    texts, gold = read_split(long_dir / "dev.txt")
    pred = Predictor.from_run(out, batch_size=5)
    lg = pred.logits(texts)
    assert lg.shape == (len(texts), 3)
    m = compute_metrics("single_label", lg, gold, NAMES)
    assert m["accuracy"] == metrics["dev"]["accuracy"]
    assert m["macro_f1"] == pytest.approx(metrics["dev"]["macro_f1"], abs=1e-9)
    ev = evaluate_run(out, long_dir / "dev.txt", batch_size=7, verbose=False)
    assert ev["accuracy"] == metrics["dev"]["accuracy"]
    labels = [p["label"] for p in pred.predict(texts)]
    assert labels == [NAMES[i] for i in lg.argmax(1)]
    # the policy is really applied: the same model on the hand-cut text (which fits) gives the same logits
    doc = max(texts, key=len)
    assert len(doc) > 3 * BUDGET
    head = with_policy(pred, None)                                          # an old run's meta: head
    manual = {"head": [doc[:BUDGET]], "tail": [doc[-BUDGET:]], "head_tail": [doc[:4] + doc[-10:]],
              "chunk": [doc[k * 10: k * 10 + BUDGET] for k in range(MAX_CHUNKS)]}[policy]
    parts = head.logits(manual)                                             # (windows, C)
    want = parts.max(0) if t["agg"] == "max" else parts.mean(0)
    assert np.allclose(pred.logits([doc])[0], want, atol=1e-5)
    assert np.allclose(head.logits([doc]), head.logits([doc[:BUDGET]]), atol=1e-5)


def test_serve_applies_the_run_policy(runs, long_dir):
    pytest.importorskip("fastapi", reason="serving needs the serve extra")
    pytest.importorskip("httpx", reason="the serving tests need httpx")
    from fastapi.testclient import TestClient

    from tricklab.inference.serve import create_app

    out, _ = runs("chunk")
    pred = Predictor.from_run(out)
    texts, _ = read_split(long_dir / "dev.txt")
    with TestClient(create_app(pred, "long", max_chars=500)) as c:
        r = c.post("/predict", json={"texts": texts[:6], "top_k": 3})
    assert r.status_code == 200, r.text
    want = pred.predict(texts[:6], top_k=3)
    for g, w in zip(r.json()["predictions"], want):
        assert g["label"] == w["label"] and g["score"] == pytest.approx(w["score"], abs=1e-5)


def test_onnx_bundle_aggregates_chunks_like_torch(runs, long_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the serve extra")
    pytest.importorskip("onnx", reason="ONNX export needs the serve extra")
    from tricklab.inference.export import export_bundle

    out, _ = runs("chunk_max_headtrain")
    texts, _ = read_split(long_dir / "dev.txt")
    info = export_bundle(out, tmp_path / "b", verify_texts=texts, log=None)
    assert info["truncation"]["policy"] == "chunk" and info["truncation"]["agg"] == "max"
    assert info["verify"]["n"] == len(texts) and info["verify"]["agreement"] == 1.0
    onx, ref = Predictor.from_bundle(tmp_path / "b", threads=1, batch_size=4), Predictor.from_run(out)
    assert onx.backend == "onnx"
    a, b = ref.logits(texts), onx.logits(texts)
    assert a.shape == b.shape == (len(texts), 3)
    assert np.allclose(a, b, atol=1e-4)
    head = with_policy(onx, None)                                           # proves the bundle's policy is used
    assert not np.allclose(head.logits(texts), b, atol=1e-4)


def test_chunk_train_replicates_soft_labels(tiny_model, tmp_path, capsys):
    rng = random.Random(3)
    lines = ["text\tlabel\tsoft"]
    for i in range(24):
        y = i % 3
        soft = [0.1, 0.1, 0.1]
        soft[y] = 0.8
        lines.append(f"{long_doc(rng, NAMES[y])}\t{NAMES[y]}\t{json.dumps(soft)}")
    (tmp_path / "train.tsv").write_text("\n".join(lines), encoding="utf-8")
    m = train(tiny_cfg(tiny_model, "train.max_steps=3", "data.soft_label_column=soft", "loss.name=kd",
                       "loss.soft_labels=probs", "data.truncation=chunk", f"data.max_length={MAX_LEN}"),
              tmp_path / "train.tsv", out=tmp_path / "run", progress=False)
    assert m["steps"] == 3
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("loss/kd", np.nan)) for r in log)
    import re

    found = re.search(r"truncation: chunk: train (\d+) texts -> (\d+) training examples", capsys.readouterr().out)
    assert found and int(found[2]) > int(found[1]) >= 20            # windows, each with its text's soft labels


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("sets, says", [
    (["data.truncation=middle"], r"data.truncation: 'middle' is not valid.*choose from: head, tail, head_tail, chunk"),
    (["data.truncation=headtail"], r"did you mean 'head_tail'"),
    (["data.chunk_agg=sum"], r"data.chunk_agg: 'sum' is not valid.*mean, max"),
    (["data.head_ratio=1.5"], r"data.head_ratio: must be in \[0, 1\]"),
    (["data.max_chunks=0"], r"data.max_chunks: must be at least 1"),
    (["data.stride=-1"], r"data.stride: .* in 0..125"),
    (["data.max_length=24", "data.stride=22"], r"data.stride: .* in 0..21 .* got 22"),
    (["data.chunk_train=maybe"], r"data.chunk_train: expected true or false"),
    (["data.strides=4"], r"did you mean 'data.stride'"),
])
def test_bad_long_text_settings_are_config_errors(sets, says):
    with pytest.raises(ConfigError, match=says):
        load_config(None, sets)


def test_pairs_refuse_policies_other_than_head(tiny_model, tmp_path, tok):
    with pytest.raises(ConfigError, match=r"data.truncation=tail: single texts only.*fix: --set data.truncation=head"):
        encode(tok, ["球赛"], ["股市"], MAX_LEN, False, None, Truncation("tail"))
    rng = random.Random(0)
    lines = [f"{make_text(rng, NAMES[i % 3])}\t{make_text(rng, NAMES[i % 3])}\t{i % 2}" for i in range(20)]
    (tmp_path / "train.txt").write_text("\n".join(lines), encoding="utf-8")
    from tricklab.data import load_data

    with pytest.raises(ConfigError, match="single texts only, and train.txt holds sentence pairs"):
        load_data(tiny_cfg(tiny_model, "data.truncation=head_tail"), tmp_path / "train.txt")  # before any model
    with pytest.raises(ConfigError, match="single texts only"):
        train(tiny_cfg(tiny_model, "data.truncation=chunk"), tmp_path / "train.txt", out=tmp_path / "run",
              progress=False)
    assert not (tmp_path / "run" / "log.jsonl").exists()


# ---------------------------------------------------------------- XLNet: no pooler

@pytest.fixture(scope="module")
def tiny_xlnet(tiny_model, tmp_path_factory) -> Path:
    """A tiny random XLNet with the tiny BERT vocabulary (an XLNet sentencepiece model cannot be made offline)."""
    from transformers import AutoTokenizer, XLNetConfig, XLNetModel

    path = tmp_path_factory.mktemp("xlnet") / "xlnet"
    t = AutoTokenizer.from_pretrained(str(tiny_model))
    torch.manual_seed(0)
    XLNetModel(XLNetConfig(vocab_size=len(t), d_model=32, n_layer=2, n_head=2, d_inner=37)).save_pretrained(path)
    t.save_pretrained(path)
    return path


def test_xlnet_pooler_fails_before_training_and_mean_trains(tiny_xlnet, long_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"model.pooling=pooler: this xlnet encoder has no pooler layer; "
                                          r"fix: --set model.pooling=mean"):
        train(tiny_cfg(tiny_xlnet), long_dir, out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    m = train(tiny_cfg(tiny_xlnet, "model.pooling=mean", "train.max_steps=4", f"data.max_length={MAX_LEN}",
                       "data.truncation=chunk"), long_dir, out=out, progress=False)
    assert m["steps"] == 4
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    texts, gold = read_split(long_dir / "dev.txt")
    pred = Predictor.from_run(out)
    assert type(pred.model.encoder).__name__ == "XLNetModel"
    assert compute_metrics("single_label", pred.logits(texts), gold, NAMES)["accuracy"] == m["dev"]["accuracy"]


def test_xlnet_cls_pooling_reads_the_last_real_token(tiny_xlnet, tiny_model, tok):
    from tricklab.model import build_classifier

    batch = tok(["球赛队员冠军", "股市"], padding=True, return_tensors="pt")    # right-padded
    for path, last in ((tiny_xlnet, True), (tiny_model, False)):
        model, _, _ = build_classifier(str(path), 3, "cls", "linear", {}, 0.1)
        model.eval()
        with torch.no_grad():
            h = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = model.pool(type("O", (), {"last_hidden_state": h})(), batch["attention_mask"])
        pos = batch["attention_mask"].sum(1) - 1 if last else torch.zeros(2, dtype=torch.long)
        assert torch.equal(pooled, h[torch.arange(2), pos])
    # padding does not change an XLNet's mean-pooled logits (right padding, relative attention)
    model, _, _ = build_classifier(str(tiny_xlnet), 3, "mean", "linear", {}, 0.1)
    model.eval()
    with torch.no_grad():
        padded = model(batch["input_ids"], batch["attention_mask"]).logits[1]
        alone = model(batch["input_ids"][1:, :4], batch["attention_mask"][1:, :4]).logits[0]
    assert torch.allclose(padded, alone, atol=1e-5)
