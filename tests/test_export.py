"""ONNX export on tiny random BERTs: bundle round trip (fp32 agrees with torch, int8 mostly agrees), graph fusion
(fused op types, agreement with torch, fallback to the unfused graph),
every task, pair models (token_type_ids), predict --bundle through the CLI, actionable errors."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("onnx", reason="ONNX export needs the serve extra: pip install -e '.[serve]'")

from conftest import CLASSES, NOISE, make_text, tiny_cfg, write_thucnews  # noqa: E402
from tricklab.cli import main as cli_main  # noqa: E402
from tricklab.errors import ConfigError  # noqa: E402
from tricklab.inference.export import export_bundle  # noqa: E402
from tricklab.inference import Predictor  # noqa: E402
from tricklab.training import train  # noqa: E402


def mixed_texts(n: int, seed: int = 7) -> list[str]:
    """Class-like texts, mixtures, noise, and a few longer than max_length (truncation)."""
    rng = random.Random(seed)
    names = list(CLASSES)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(make_text(rng, names[i % 3]))
        elif kind == 1:
            out.append(make_text(rng, names[i % 3]) + make_text(rng, names[(i + 1) % 3]))
        elif kind == 2:
            out.append("".join(rng.choice(NOISE) for _ in range(rng.randint(1, 8))))
        else:
            out.append("".join(make_text(rng, names[i % 3]) for _ in range(5)))  # > 24 tokens
    return out


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export")
    thuc = write_thucnews(d / "thuc")
    out = d / "run"
    train(tiny_cfg(tiny_model, "train.epochs=4"), thuc, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    export_bundle(run, out, verify_data=run.parent / "thuc" / "dev.txt", log=None)
    return out


def test_fp32_bundle_agrees_with_torch(run, bundle):
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["task"] == "single_label" and info["labels"] == ["sports", "finance", "game"]
    assert info["max_length"] == 24 and info["pair"] is False and info["quantize"] is None
    assert {"torch", "onnx", "onnxruntime", "transformers"} <= set(info["versions"])
    assert info["verify"]["n"] == 30 and info["verify"]["agreement"] == 1.0 and info["calibration"] is None
    for f in ("model.onnx", "tokenizer.json", "tricklab.json"):
        assert (bundle / f).is_file(), f
    texts = mixed_texts(100)
    ref, onx = Predictor.from_run(run), Predictor.from_bundle(bundle, threads=1)
    assert onx.backend == "onnx" and ref.backend == "torch"
    a, b = ref.predict(texts, top_k=3), onx.predict(texts, top_k=3)
    agree = np.mean([x["label"] == y["label"] for x, y in zip(a, b)])
    assert agree >= 0.995, agree
    diff = max(abs(px - py) for x, y in zip(a, b) for (_, px), (_, py) in zip(x["top_k"], y["top_k"]))
    assert diff < 1e-4, diff


def test_onnx_axes_are_dynamic(bundle):
    import onnx

    m = onnx.load(str(bundle / "model.onnx"))
    for inp in m.graph.input:
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (inp.name, dims)
    # one batch of very different lengths and batch sizes runs through the same graph
    p = Predictor.from_bundle(bundle, batch_size=3)
    assert len(p.predict(mixed_texts(10))) == 10 and len(p.predict(["球"])) == 1


@pytest.fixture(scope="module")
def int8_bundle(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "q"
    export_bundle(run, out, quantize="int8", min_agreement=0.9, log=None)
    return out


def op_types(bundle: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}


FUSED = {"Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"}


@pytest.fixture(scope="module")
def fused_bundle(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fused") / "f"
    export_bundle(run, out, fuse="true", log=None)
    return out


def test_fused_fp32_graph_has_the_fused_ops_and_matches_torch(run, fused_bundle):
    """--fuse true: onnxruntime's BERT fusions replace the attention, residual-LayerNorm and GELU subgraphs
    (2 layers: 2 Attention, 4 SkipLayerNormalization, 2 BiasGelu, 1 EmbedLayerNormalization), and the fused
    graph's logits match torch's within 1e-4, in mixed-length batches and alone."""
    info = json.loads((fused_bundle / "bundle.json").read_text())
    assert info["fusion"] == {"kind": "full", "ops": {"EmbedLayerNormalization": 1, "Attention": 2,
                                                      "SkipLayerNormalization": 4, "BiasGelu": 2}}
    ops = op_types(fused_bundle)
    assert FUSED <= ops and "Softmax" not in ops and "Erf" not in ops, ops
    assert info["verify"]["agreement"] == 1.0
    texts = mixed_texts(60)
    ref, onx = Predictor.from_run(run), Predictor.from_bundle(fused_bundle, threads=1)
    np.testing.assert_allclose(onx.logits(texts), ref.logits(texts), atol=1e-4)
    for t in texts[:12]:
        np.testing.assert_allclose(onx.logits([t]), ref.logits([t]), atol=1e-4)


def test_unfused_export_has_no_fused_ops(run, bundle, tmp_path):
    """fp32 is not fused by default (auto), nor with --fuse false on static int8."""
    assert not FUSED & op_types(bundle) and json.loads((bundle / "bundle.json").read_text())["fusion"] is None
    export_bundle(run, tmp_path / "q", quantize="int8", fuse="false", min_agreement=0.9, log=None)
    assert not FUSED & op_types(tmp_path / "q") and len(quantized_products(tmp_path / "q")) == 16
    # + per layer Q, K, V and the two attention products (the QDQ quantizer ignores MatMulConstBOnly)


def quantized_products(bundle: Path) -> list[str]:
    """MatMul/Gemm nodes both of whose inputs come from DequantizeLinear (QDQ int8)."""
    import onnx

    g = onnx.load(str(bundle / "model.onnx")).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and all(i in dq for i in n.input[:2])]


def test_static_int8_is_fused_by_default(int8_bundle):
    """The default static int8 graph is fused, and every product with a weight is int8 but the FFN output
    projections (2 layers: attention output + FFN input, the pooler and the classifier; the Q/K/V projections
    are inside the fused Attention ops)."""
    info = json.loads((int8_bundle / "bundle.json").read_text())
    ops = op_types(int8_bundle)
    assert info["fusion"]["kind"] == "full" and FUSED <= ops, (info["fusion"], ops)
    q = quantized_products(int8_bundle)
    assert len(q) == 6 and sum("/intermediate/dense/" in n for n in q) == 2, q
    assert not any("/output/dense/" in n and "/attention/" not in n for n in q), q


@pytest.mark.parametrize("how", ["corrupt", "raise"])
def test_fusion_falls_back_to_the_unfused_graph(run, tmp_path, monkeypatch, how):
    """A fused graph that does not reproduce the unfused one (here: one weight changed after fusing), or an
    optimizer that fails, leaves the unfused graph in the bundle, with the reason logged and in bundle.json."""
    import onnx
    from onnx import numpy_helper

    import tricklab.inference.export as ex

    real = ex.fuse_graph

    def broken(src, dest, params, kind="full"):
        if how == "raise":
            raise RuntimeError("no pattern")
        ops = real(src, dest, params, kind)
        m = onnx.load(str(dest))
        w = next(i for i in m.graph.initializer if "qkv_weight" in i.name)
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))
        onnx.save(m, str(dest))
        return ops

    monkeypatch.setattr(ex, "fuse_graph", broken)
    said: list[str] = []
    info = export_bundle(run, tmp_path / "b", quantize="int8", fuse="true", min_agreement=0.9, log=said.append)
    why = "logits differ from the unfused graph's" if how == "corrupt" else "optimizer failed: RuntimeError"
    assert info["fusion"]["kind"] is None and why in info["fusion"]["fallback"], info["fusion"]
    assert any("unfused graph kept" in line and why in line for line in said), said
    assert not FUSED & op_types(tmp_path / "b") and info["verify"]["agreement"] >= 0.9


def test_int8_bundle_is_static_calibrated_on_the_runs_data_and_verified_on_dev_test(run, int8_bundle):
    info = json.loads((int8_bundle / "bundle.json").read_text())
    assert info["quantize"] == "int8" and info["calibration"]["n"] == 150       # train 120 + dev 30
    assert "train.txt" in info["calibration"]["source"] and "dev.txt" in info["calibration"]["source"]
    assert info["verify"]["n"] == 60 and "test.txt" in info["verify"]["source"]  # dev 30 + test 30, real texts
    assert info["verify"]["agreement"] >= 0.9 and info["verify"]["min_agreement"] == 0.9
    texts = mixed_texts(100)
    a = Predictor.from_run(run).predict(texts)
    b = Predictor.from_bundle(int8_bundle).predict(texts)
    agree = np.mean([x["label"] == y["label"] for x, y in zip(a, b)])
    assert agree >= 0.8, agree


@pytest.mark.parametrize("quantize", ["int8", "int8-unfused", "int8-dynamic", "fp32-fused"])
def test_int8_text_scores_the_same_whatever_its_batch_neighbours(run, int8_bundle, fused_bundle, tmp_path, quantize):
    """Served requests are micro-batched across clients: a text's answer must not depend on its neighbours
    (int8: the default static int8, fused; int8-unfused: static int8 with --fuse false)."""
    bundle = {"int8": int8_bundle, "fp32-fused": fused_bundle}.get(quantize, tmp_path / "b")
    if quantize == "int8-unfused":
        export_bundle(run, bundle, quantize="int8", fuse="false", min_agreement=0.0, log=None)
    elif quantize == "int8-dynamic":
        export_bundle(run, bundle, quantize=quantize, min_agreement=0.0, log=None)
    p = Predictor.from_bundle(bundle, threads=1)
    rng = random.Random(5)
    short = ["球", "的了", "银行"] * 5
    long = ["".join(make_text(rng, n) for n in CLASSES for _ in range(3)) for _ in range(12)]
    for text in mixed_texts(8, seed=11):
        alone = p.predict([text], top_k=3)[0]
        for company in ([*short, text, *short], [*long, text, *long], [text, *long, *short]):
            got = p.predict(company, top_k=3)[company.index(text)]
            assert got["label"] == alone["label"]
            for (la, pa), (lb, pb) in zip(alone["top_k"], got["top_k"]):
                assert la == lb and abs(pa - pb) <= 1e-5, (quantize, text, pa, pb)


def test_export_fails_below_min_agreement(run, tmp_path, capsys):
    """A badly calibrated int8 bundle (one calibration text) disagrees with torch on the run's dev/test texts:
    export exits 2 with one line and writes no bundle, unless --min-agreement is lowered."""
    (tmp_path / "one.txt").write_text("的\t0\n", encoding="utf-8")
    args = ["export", "--run", str(run), "--out", str(tmp_path / "bad"), "--quantize", "int8",
            "--calibration-data", str(tmp_path / "one.txt")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "below --min-agreement 0.99" in err and "dev.txt" in err, err
    assert not (tmp_path / "bad").exists()
    assert cli_main(args + ["--min-agreement", "0.3"]) == 0
    info = json.loads((tmp_path / "bad" / "bundle.json").read_text())
    assert 0.3 <= info["verify"]["agreement"] < 0.99 and info["calibration"]["n"] == 1
    assert cli_main(args[:-4] + ["--min-agreement", "1.5"]) == 2 and "[0, 1]" in capsys.readouterr().err


def test_export_and_predict_bundle_via_cli(run, tmp_path, capsys):
    out = tmp_path / "cli_bundle"
    assert cli_main(["export", "--run", str(run), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "agreement" in said and "max prob difference" in said
    inp = tmp_path / "in.txt"
    inp.write_text("球赛冠军队员\n股市银行基金利率\n玩家游戏\n", encoding="utf-8")
    assert cli_main(["predict", "--bundle", str(out), str(inp), "--top-k", "2", "--threads", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    api = Predictor.from_run(run).predict(["球赛冠军队员", "股市银行基金利率", "玩家游戏"], top_k=2)
    assert [x["label"] for x in lines] == [x["label"] for x in api]
    assert all(len(x["top_k"]) == 2 for x in lines)
    assert lines[0]["score"] == pytest.approx(api[0]["score"], abs=1e-5)
    assert cli_main(["export", "--run", str(run), "--out", str(tmp_path / "fused"), "--fuse", "true"]) == 0
    assert "fused (full): 1 EmbedLayerNormalization, 2 Attention, 2 BiasGelu, 4 SkipLayerNormalization" in \
        capsys.readouterr().out


def test_bundle_errors_are_actionable(run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a tricklab bundle.*run folder"):
        Predictor.from_bundle(run)
    assert cli_main(["predict", "--bundle", str(tmp_path / "missing"), "-"]) == 2
    assert "tricklab export" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown"):
        export_bundle(run, tmp_path / "x", quantize="int4", log=None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bundle"):
        export_bundle(run, tmp_path / "busy", log=None)


def _pair_rows(rng: random.Random, n: int, label: str) -> list[str]:
    rows = []
    for _ in range(n):
        a = "".join(rng.choice("球赛队员股市银行") for _ in range(5))
        b = "".join(rng.choice("球赛队员股市银行") for _ in range(5))
        overlap = len(set(a) & set(b))
        rows.append(f"{a}\t{b}\t" + (("same" if overlap >= 3 else "diff") if label == "class" else f"{overlap / 2.5:.2f}"))
    return rows


@pytest.mark.parametrize("task", ["single_label", "regression"])
def test_pair_model_export(tiny_model, tmp_path, task):
    rng = random.Random(3)
    (tmp_path / "pairs.tsv").write_text("\n".join(_pair_rows(rng, 80, "class" if task == "single_label" else "score")))
    sets = ["train.epochs=2"] + (["task=regression"] if task == "regression" else [])
    train(tiny_cfg(tiny_model, *sets), tmp_path / "pairs.tsv", out=tmp_path / "run", progress=False)
    info = export_bundle(tmp_path / "run", tmp_path / "b", verify_data=tmp_path / "pairs.tsv", log=None)
    assert info["pair"] is True and "token_type_ids" in info["inputs"] and info["task"] == task
    assert info["verify"]["n"] == 80 and info["verify"]["agreement"] >= 0.99
    fused = export_bundle(tmp_path / "run", tmp_path / "f", verify_data=tmp_path / "pairs.tsv", fuse="true", log=None)
    assert fused["fusion"]["ops"]["EmbedLayerNormalization"] == 1 and "token_type_ids" in fused["inputs"]
    pairs = [(r.split("\t")[0], r.split("\t")[1]) for r in _pair_rows(random.Random(9), 30, "class")]
    a = Predictor.from_run(tmp_path / "run").predict(pairs, top_k=2)
    for b in (Predictor.from_bundle(tmp_path / d).predict(pairs, top_k=2) for d in ("b", "f")):
        if task == "regression":
            assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-4
        else:
            assert [x["label"] for x in a] == [x["label"] for x in b]
            assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-4
    # tab-joined strings are pairs too, as in `tricklab predict`
    assert Predictor.from_bundle(tmp_path / "b").predict(["球赛\t队员"])[0].keys() == a[0].keys()


def test_multi_label_export(tiny_model, tmp_path):
    rng = random.Random(1)
    lines = []
    for i in range(90):
        labs = [["sports"], ["finance"], ["sports", "game"]][i % 3]
        lines.append("".join(make_text(rng, lab) for lab in labs) + "\t" + "|".join(labs))
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "train.tsv").write_text("\n".join(lines))
    train(tiny_cfg(tiny_model, "train.epochs=3"), tmp_path / "ml", out=tmp_path / "run", progress=False)
    info = export_bundle(tmp_path / "run", tmp_path / "b", log=None)
    assert info["task"] == "multi_label" and info["verify"]["agreement"] >= 0.99
    fused = export_bundle(tmp_path / "run", tmp_path / "f", fuse="true", log=None)
    assert fused["fusion"]["kind"] == "full" and fused["verify"]["agreement"] >= 0.99
    texts = mixed_texts(40)
    a = Predictor.from_run(tmp_path / "run").predict(texts, top_k=2)
    for d in ("b", "f"):
        b = Predictor.from_bundle(tmp_path / d).predict(texts, top_k=2)
        assert [x["labels"] for x in a] == [x["labels"] for x in b]


def test_torch_predictor_threads_option(run):
    import torch

    before = torch.get_num_threads()
    try:
        p = Predictor.from_run(run, threads=1)
        assert torch.get_num_threads() == 1 and len(p.predict(["球赛"])) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("head", ["cnn", "dpcnn"])
def test_sequence_head_bundles_agree_at_every_length(tiny_model, tmp_path, head):
    """The dpcnn block loop is unrolled by the ONNX trace: the bundle must hold enough blocks for the longest
    input (max_length) and still run inputs as short as [CLS] [SEP] alone."""
    from tricklab.model import build_classifier, save_model

    m, tok, _ = build_classifier(str(tiny_model), 3, "mean", head, {}, 0.1)
    meta = {"task": "single_label", "num_labels": 3, "labels": {"task": "single_label", "names": list(CLASSES),
            "from_ids": False}, "model": {"pooling": "mean", "head": head, "head_args": {}, "dropout": 0.1},
            "data": {"max_length": 40, "lowercase": False, "pair": False}, "precision": "fp32"}
    save_model(m.eval(), tok, tmp_path / "run" / "model", meta)
    export_bundle(tmp_path / "run", tmp_path / "b", log=None)
    texts = ["", "球", "球赛", "".join(CLASSES["sports"]) * 5] + mixed_texts(12)    # 2 .. 40 tokens
    torch_p, onnx_p = Predictor.from_run(tmp_path / "run"), Predictor.from_bundle(tmp_path / "b")
    for batch in ([t] for t in texts):                                                   # each alone: T from 2 up
        np.testing.assert_allclose(onnx_p.logits(batch), torch_p.logits(batch), atol=1e-4)
    np.testing.assert_allclose(onnx_p.logits(texts), torch_p.logits(texts), atol=1e-4)
