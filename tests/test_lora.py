"""LoRA (and DoRA, LoHa, LoKr) through peft: only the adapters and the head train; the base weights stay
bit-identical with every other trick on (FGM, PGD, R-Drop, EMA, SupCon); the run folder holds the adapters alone;
loading merges them so that the loaded model is a plain encoder + head giving the adapted model's logits; FGM on
frozen embeddings follows its reference gradient."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

pytest.importorskip("peft")

import tricklab.tricks  # noqa: F401,E402  (registration)
from tricklab.errors import ConfigError  # noqa: E402
from tricklab.model import build_classifier, load_model, save_model  # noqa: E402
from tricklab.model.adapters import linear_leaf_names  # noqa: E402
from tricklab.registry import LOSSES, TRICKS  # noqa: E402
from tricklab.training import accumulate_gradients, train  # noqa: E402
from tricklab.types import Batch, TrainContext  # noqa: E402

from conftest import tiny_cfg, write_thucnews  # noqa: E402

C = 3


def ctx() -> TrainContext:
    return TrainContext(task="single_label", num_labels=C, label_names=["a", "b", "c"], class_counts=[4, 4, 4],
                        train_size=12, total_steps=3, data={"feature_dim": 32})


def meta_for(backbone: str, pooling: str = "mean") -> dict:
    return {"task": "single_label", "num_labels": C, "labels": {"names": ["a", "b", "c"]}, "plugins": [],
            "model": {"pooling": pooling, "head": "linear", "head_args": {}, "dropout": 0.1, "backbone": backbone},
            "data": {"max_length": 24, "lowercase": False}}


def batch(tok_len: int, n: int = 6, T: int = 9, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, T, dtype=torch.long)
    for i in range(n):
        mask[i, int(torch.randint(2, T + 1, (1,), generator=g)):] = 0
    return Batch(inputs={"input_ids": torch.randint(5, tok_len, (n, T), generator=g), "attention_mask": mask},
                 labels=torch.arange(n) % C, index=torch.arange(n))


def adapted(tiny_model, method: str = "lora", pooling: str = "mean", **kw):
    model, tok, path = build_classifier(str(tiny_model), C, pooling, "linear", {}, 0.1)
    t = TRICKS.build("lora", method=method, **kw)
    t.adapt_model(model, ctx())
    return model, tok, path, t


def test_targets_auto_and_only_adapters_and_head_train(tiny_model):
    model, _, _, t = adapted(tiny_model)
    assert t.adapted == ["query", "key", "value", "dense"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("classifier.") for n in trainable)
    assert any(n.startswith("classifier.") for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 2 * (3 + 3)   # 2 layers x (q, k, v, attn-out, ffn-in, ffn-out)


def test_unknown_target_and_bad_parameters_are_config_errors(tiny_model):
    model, _, _ = build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)
    with pytest.raises(ConfigError, match=r"targets \['q_proj'\].*query, key, value, dense"):
        TRICKS.build("lora", targets=["q_proj"]).adapt_model(model, ctx())
    for bad, match in (({"r": 0}, "r must be"), ({"method": "prefix"}, "method 'prefix'"),
                       ({"dropout": 1.5}, "dropout"), ({"targets": []}, "targets must be")):
        with pytest.raises(ConfigError, match=match):
            TRICKS.build("lora", **bad)


@pytest.mark.parametrize("method", ["lora", "dora", "loha", "lokr"])
def test_saved_adapters_load_merged_with_the_same_logits(tiny_model, tmp_path, method):
    """model/ holds the adapters and the head only; load_model merges them (no peft layer left) and gives the
    adapted model's logits."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model, tok, path, _ = adapted(tiny_model, method=method, r=4, alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():                    # adapters away from their (often identity) init, head random
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    model.eval()
    save_model(model, tok, tmp_path / "m", meta_for(path))
    files = sorted(os.listdir(tmp_path / "m"))
    assert "model.safetensors" not in files and {"adapter_model.safetensors", "adapter_config.json",
                                                 "head.safetensors"} <= set(files)
    saved = load_file(str(tmp_path / "m" / "adapter_model.safetensors"))
    assert saved and all(("lora_" in k) or ("hada_" in k) or ("lokr_" in k) or "magnitude" in k for k in saved)
    assert json.loads((tmp_path / "m" / "tricklab.json").read_text())["adapter"]["base"] == path
    loaded, _, _ = load_model(tmp_path / "m")
    assert not any(isinstance(m, BaseTunerLayer) for m in loaded.modules())
    assert not any("lora" in k or "base_layer" in k for k in loaded.state_dict())
    b = batch(len(tok))
    with torch.no_grad():
        want = model(**b.inputs).logits
        got = loaded(**b.inputs).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    base, _, _ = build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(loaded.state_dict()[w], base.state_dict()[w])     # merged, not the bare base
    if method == "lora":                     # the merge itself: W0 + (alpha / r) B A, from the saved factors
        key = w.removeprefix("bert.").removesuffix(".weight")
        A = next(v for k, v in saved.items() if k.endswith(f"{key}.lora_A.weight"))
        B = next(v for k, v in saved.items() if k.endswith(f"{key}.lora_B.weight"))
        assert A.shape == (4, base.state_dict()[w].shape[1])
        torch.testing.assert_close(loaded.state_dict()[w], base.state_dict()[w] + (8 / 4) * B @ A, atol=1e-6, rtol=1e-5)


def test_missing_base_model_is_one_clear_error(tiny_model, tmp_path):
    model, tok, path, _ = adapted(tiny_model)
    save_model(model, tok, tmp_path / "m", meta_for(str(tmp_path / "gone")))
    with pytest.raises(ConfigError, match="base model .*gone.*edit adapter.base"):
        load_model(tmp_path / "m")


def fgm_reference(model, b: Batch, eps: float) -> dict[str, torch.Tensor]:
    """Clean gradient + the gradient at E + eps·g/‖g‖ of the trainable parameters, g = ∂L/∂E computed with the
    (frozen) embedding matrix E switched to requires_grad for the reference only."""
    w = model.encoder.get_input_embeddings().weight
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    w.requires_grad_(True)
    loss = F.cross_entropy(model(**b.inputs).logits, b.labels)
    *clean, g = torch.autograd.grad(loss, list(params) + [w], allow_unused=True)
    saved = w.data.clone()
    w.data.add_(eps * g / g.norm())
    adv = torch.autograd.grad(F.cross_entropy(model(**b.inputs).logits, b.labels), params, allow_unused=True)
    w.data.copy_(saved)
    w.requires_grad_(False)
    return {n: (0 if c is None else c) + (0 if a is None else a) for n, c, a in zip(names, clean, adv)}


def test_fgm_on_frozen_embeddings_matches_reference(tiny_model):
    """Under LoRA the word embeddings are frozen: FGM still attacks along their gradient (reference) and leaves
    them frozen, without a .grad and bit-identical."""
    model, tok, _, _ = adapted(tiny_model, dropout=0.0)
    model.eval()                               # no dropout anywhere: the reference passes see the same network
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    w = model.encoder.get_input_embeddings().weight
    e0 = w.detach().clone()
    b = batch(len(tok), seed=3)
    fgm = TRICKS.build("fgm", epsilon=0.7)
    fgm.setup(model, ctx())
    assert not w.requires_grad
    accumulate_gradients(model, [b], {"ce": (1.0, LOSSES.build("ce"))}, [fgm], lambda loss: loss.backward())
    got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    want = fgm_reference(model, b, 0.7)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")
    assert not w.requires_grad and w.grad is None and torch.equal(w.detach(), e0)


def base_weights(tiny_model: Path) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_model / "model.safetensors"))


COMBOS = {"lora": ([], []), "lora+fgm": ([{"name": "fgm", "epsilon": 1.0}], []),
          "lora+pgd": ([{"name": "pgd", "steps": 2}], []), "lora+rdrop": ([{"name": "rdrop", "alpha": 1.0}], []),
          "lora+ema": ([{"name": "ema", "decay": 0.9}], []),
          "lora+supcon": ([], [{"name": "supcon", "weight": 0.2, "projection": 8}]),
          "lora+llrd": ([{"name": "llrd", "decay": 0.8}], []), "lora+focal": ([], [])}
MAIN_LOSS = {"lora+focal": {"name": "focal", "gamma": 2.0}}     # a main loss other than cross-entropy


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_every_trick_composes_base_weights_bit_identical(tiny_model, thuc_dir, tmp_path, combo, monkeypatch):
    """A short run per combination: the training weights at the last checkpoint keep every base weight of the
    pretrained encoder bit for bit (adapters and head moved), and the checkpoint holds the trainable weights only;
    the run's model/ folder is the adapters + head; predict loads it."""
    from tricklab.training import loop

    tricks, aux = COMBOS[combo]
    lora = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "targets": "auto"}
    cfg = tiny_cfg(tiny_model, "train.epochs=1", "train.max_steps=3", "model.pooling=mean")
    cfg.tricks = tricks + [lora]             # lora last: the adapt_model hook still runs it first
    cfg.aux_losses = aux
    if combo in MAIN_LOSS:
        cfg.loss = MAIN_LOSS[combo]
    seen: dict[str, torch.Tensor] = {}
    real = loop.save_resume_checkpoint

    def save_and_keep(run):                  # the whole training state dict, as the checkpoint is written
        seen.update({k: v.detach().clone() for k, v in run.raw_model.state_dict().items()})
        real(run)

    monkeypatch.setattr(loop, "save_resume_checkpoint", save_and_keep)
    metrics = train(cfg, thuc_dir, out=tmp_path / "run", progress=False)
    saved = load_file(str(next((tmp_path / "run" / "checkpoints").glob("step-*")) / "model.safetensors"))
    assert saved and all("lora_" in k or not k.startswith("bert.") for k in saved), sorted(saved)[:5]
    assert all(torch.equal(v, seen[k]) for k, v in saved.items())
    state = seen
    base = base_weights(tiny_model)
    checked = 0
    for k, v in base.items():
        if "pooler" in k or "position_ids" in k:
            continue
        name = "bert." + k
        key = name if name in state else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state[key], v), f"{combo}: base weight {k} changed"
        checked += 1
    assert checked == len([k for k in base if "pooler" not in k and "position_ids" not in k])
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)          # adapters moved (init 0)
    n_lora = sum(v.numel() for k, v in state.items() if "lora_" in k)
    n_model = n_lora + sum(v.numel() for k, v in state.items() if k.startswith("classifier."))
    if aux:                                  # + the SupCon projection head, which trains too
        assert metrics["trainable_parameters"] > n_model
    else:
        assert metrics["trainable_parameters"] == n_model
    files = os.listdir(tmp_path / "run" / "model")
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    from tricklab.inference.predictor import Predictor

    assert Predictor.from_run(tmp_path / "run").predict(["球赛队员冠军"])[0]["label"] in {"sports", "finance", "game"}


def test_lora_from_the_command_line(tiny_model, thuc_dir, tmp_path, monkeypatch):
    from tricklab.cli import main

    out = tmp_path / "run"
    monkeypatch.chdir(tiny_model.parent)          # --model as a relative path: the run records it absolute
    rc = main(["train", "--data", str(thuc_dir), "--model", tiny_model.name, "--out", str(out),
               "--trick", "lora:r=4,alpha=8,dropout=0.1,targets=[query,value]", "--set", "train.max_steps=2",
               "--set", "model.pooling=mean", "--set", "train.precision=fp32", "--set", "data.max_length=24"])
    assert rc in (0, None)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")     # ... so the run loads from any working directory
    cfg = json.loads((out / "model" / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["query", "value"] and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert linear_leaf_names(load_model(out / "model")[0].encoder) == ["query", "key", "value", "dense"]
    card = (out / "model" / "README.md").read_text(encoding="utf-8")      # the card says how such a folder loads
    assert "lora adapters" in card and "merges the adapters" in card and 'pipeline("text-classification"' not in card
    # the ONNX bundle carries the merged weights (export verifies it against torch); it needs no peft to run
    pytest.importorskip("onnxruntime")
    from tricklab.inference.export import export_bundle
    from tricklab.inference.predictor import Predictor

    export_bundle(out, tmp_path / "bundle", log=None)
    texts = ["球赛队员冠军", "股市银行", "玩家游戏版本"]
    torch_p = [r["label"] for r in Predictor.from_run(out).predict(texts)]
    onnx_p = [r["label"] for r in Predictor.from_bundle(tmp_path / "bundle").predict(texts)]
    assert torch_p == onnx_p
    assert not list((tmp_path / "bundle").rglob("adapter_*"))


def test_push_refuses_an_adapter_folder(tiny_model, tmp_path):
    from tricklab.errors import TrickLabError
    from tricklab.inference.hub import model_folder

    model, tok, path, _ = adapted(tiny_model)
    save_model(model, tok, tmp_path / "m", meta_for(path))
    with pytest.raises(TrickLabError, match="holds adapters.*tricklab export"):
        model_folder(tmp_path / "m", log=None)


LORA_SETS = ("tricks=[{name: lora, r: 4, alpha: 8, dropout: 0.1}, {name: ema, decay: 0.9}]", "model.pooling=mean")


def test_lora_resume_checkpoint_holds_trainable_state_only_and_resumes_exactly(tiny_model, tmp_path, monkeypatch):
    """With adapters a resume checkpoint holds the adapters and the head (no frozen base weight) with the
    optimizer, schedule, EMA and RNG states; --resume loads it onto the base weights and continues exactly: the
    same losses and the same final weights as the run that was never interrupted."""
    from test_resume import interrupted_run, losses

    from tricklab.cli import main as cli_main

    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    ref = train(tiny_cfg(tiny_model, "train.epochs=3", "train.eval_every=2", *LORA_SETS), data, out=tmp_path / "ref",
                progress=False)
    interrupted_run(tiny_model, data, tmp_path / "run", monkeypatch, 4, *LORA_SETS)
    ck = tmp_path / "run" / "checkpoints" / "step-00000004" / "model.safetensors"
    saved = load_file(str(ck))
    base = base_weights(tiny_model)
    assert saved and not any(k.startswith("bert.") and "lora_" not in k for k in saved), sorted(saved)[:5]
    assert any(k.startswith("classifier.") for k in saved) and any("lora_A" in k for k in saved)
    trainable_bytes = sum(v.numel() * v.element_size() for v in saved.values())
    base_bytes = sum(v.numel() * v.element_size() for v in base.values())
    assert ck.stat().st_size < trainable_bytes + 150 * len(saved) + 1024      # tensors + safetensors header
    assert ck.stat().st_size < base_bytes / 3
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    after = [s for s in a if s > 4]
    assert after and all(b[s] == pytest.approx(a[s], rel=1e-5) for s in after)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == ref["steps"] == 9 and m["accuracy"] == pytest.approx(ref["accuracy"])
    last = [sorted((tmp_path / r / "checkpoints").glob("step-*"))[-1] for r in ("ref", "run")]
    assert last[0].name == last[1].name == "step-00000009"
    want, got = (load_file(str(p / "model.safetensors")) for p in last)
    assert set(want) == set(got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)
    for name in ("adapter_model.safetensors", "head.safetensors"):   # the best model (EMA weights) too
        w, g = (load_file(str(tmp_path / r / "model" / name)) for r in ("ref", "run"))
        assert set(w) == set(g) and all(torch.allclose(g[k], w[k], rtol=1e-5, atol=1e-7) for k in w)


def test_lora_resume_refuses_a_changed_base_model(tiny_model, tmp_path, monkeypatch, capsys):
    """The checkpoint leaves the base weights out: resuming on a base model whose weights changed since is one
    error naming the checkpoint and the fix, not a silently different model."""
    import shutil

    from test_resume import interrupted_run

    from tricklab.cli import main as cli_main

    model = tmp_path / "base"
    shutil.copytree(tiny_model, model)
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    interrupted_run(model, data, tmp_path / "run", monkeypatch, 2, *LORA_SETS)
    from safetensors.torch import save_file

    w = load_file(str(model / "model.safetensors"))
    k = next(k for k in w if k.endswith("query.weight"))
    w[k] = w[k] + 1e-3
    save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "step-00000002: the checkpoint holds the adapters and head only" in err
    assert "base model's weights differ" in err and "fix: put back the base model" in err and "Traceback" not in err


def test_lora_defaults_and_messages_whole():
    t = TRICKS.build("lora")
    assert (t.r, t.alpha, t.dropout, t.targets, t.method, t.adapted) == (8, 16, 0.1, "auto", "lora", [])
    assert TRICKS.build("lora", targets=" query + value +").targets == ["query", "value"]
    assert TRICKS.build("lora", targets=["dense"], dropout=0).dropout == 0.0
    bad = [({"r": 0}, r"r must be an integer >= 1 \(the adapter rank; 8 is usual\), got 0"),
           ({"r": True}, r"r must be an integer >= 1 \(the adapter rank; 8 is usual\), got True"),
           ({"r": 2.0}, r"r must be an integer >= 1 \(the adapter rank; 8 is usual\), got 2.0"),
           ({"alpha": 0}, r"alpha must be a positive number \(2r is usual\), got 0"),
           ({"alpha": True}, r"alpha must be a positive number \(2r is usual\), got True"),
           ({"alpha": "16"}, r"alpha must be a positive number \(2r is usual\), got '16'"),
           ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
           ({"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0.1"),
           ({"dropout": "0.1"}, r"dropout must be in \[0, 1\), got '0.1'"),
           ({"method": "prefix"}, r"method 'prefix' is not one of lora, dora, loha, lokr"),
           ({"targets": "+"}, r"targets must be auto or a list of module names \(e.g. \[query, value\] or "
                              r"query\+value\), got \[\]"),
           ({"targets": ["query", ""]}, r"targets must be auto or a list of module names \(e.g. \[query, value\] or "
                                        r"query\+value\), got \['query', ''\]"),
           ({"targets": 3}, r"targets must be auto or a list of module names \(e.g. \[query, value\] or "
                            r"query\+value\), got 3")]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=f"^trick lora: {message}$"):
            TRICKS.build("lora", **kwargs)


def test_unknown_target_message_whole(tiny_model):
    model, _, _ = build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)
    with pytest.raises(ConfigError, match=r"^trick lora: targets \['q_proj'\] are not linear layers of this bert "
                                          r"encoder; its linear layers are: query, key, value, dense; fix: "
                                          r"targets=auto or a list of those$"):
        TRICKS.build("lora", targets="query+q_proj").adapt_model(model, ctx())


def test_lora_layer_is_w_plus_scaled_low_rank_product(tiny_model):
    """Hu et al. 2021, eq. 3: h = W0 x + (alpha / r) B A x, only on the named targets; B starts at zero."""
    model, _, _, t = adapted(tiny_model, r=2, alpha=6, dropout=0.0, targets="query+value")
    assert t.adapted == ["query", "value"]
    layer = model.encoder.encoder.layer[0].attention.self
    x = torch.randn(5, layer.query.base_layer.in_features)
    for name in ("query", "value"):
        mod = getattr(layer, name)
        A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight      # (r, in), (out, r)
        assert A.shape[0] == 2 and B.shape[1] == 2 and torch.all(B == 0)
        torch.testing.assert_close(mod(x), mod.base_layer(x))                  # zero B: the base layer
        with torch.no_grad():
            B.copy_(torch.randn(B.shape))
        want = F.linear(x, mod.base_layer.weight, mod.base_layer.bias) + (6 / 2) * (x @ A.T @ B.T)
        torch.testing.assert_close(mod(x), want)
    assert not hasattr(layer.key, "lora_A")                                    # not a target: untouched


def test_lora_smallest_settings_and_wrapped_or_bare_models(tiny_model):
    """r = 1 and alpha below 1 are valid; adapt_model finds the encoder inside a DDP-style wrapper (.module) and
    adapts a bare encoder passed directly."""
    from types import SimpleNamespace

    t = TRICKS.build("lora", r=1, alpha=0.5, targets="query")
    assert (t.r, t.alpha) == (1, 0.5)
    model, _, _ = build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)
    t.adapt_model(SimpleNamespace(module=model), ctx())
    q = model.encoder.encoder.layer[0].attention.self.query
    assert q.lora_A["default"].weight.shape[0] == 1 and q.scaling["default"] == 0.5
    bare, _, _ = build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)
    TRICKS.build("lora", targets="value").adapt_model(bare.encoder, ctx())
    assert hasattr(bare.encoder.encoder.layer[1].attention.self.value, "lora_A")


@pytest.mark.parametrize("setting, strategy, lr, head_lr, lora, bertadam", [
    ("auto", "finetune", 1e-4, 0.0, False, True), ("auto", "finetune", 2e-5, 1e-4, False, True),
    ("auto", "finetune", 1.01e-4, 0.0, False, False), ("auto", "finetune", 3e-5, 1e-3, False, False),
    ("auto", "finetune", 2e-4, 5e-5, False, False),
    ("auto", "finetune", 5e-5, 0.0, True, False), ("auto", "setfit", 5e-5, 0.0, False, False),
    ("true", "finetune", 5e-5, 0.0, False, False), ("false", "finetune", 1e-3, 0.0, True, True)])
def test_adam_bias_correction_auto_resolves_by_what_trains(tiny_model, setting, strategy, lr, head_lr, lora, bertadam):
    """auto: BertAdam's uncorrected steps when the whole encoder fine-tunes at lr and head_lr <= 1e-4; AdamW's
    above, with adapters or SetFit; true / false win. Seen in the optimizer's lr at the first step: the group's
    lr x (1-b1)/sqrt(1-b2) under BertAdam."""
    from tricklab.config import load_config
    from tricklab.training.setup import build_optimizer

    cfg = load_config(None, [f"train.adam_bias_correction={setting}", f"train.strategy={strategy}", f"train.lr={lr}",
                             f"train.head_lr={head_lr}", "train.scheduler=constant"])
    model = adapted(tiny_model)[0] if lora else build_classifier(str(tiny_model), C, "mean", "linear", {}, 0.1)[0]
    opt, _ = build_optimizer(cfg, model, {}, [], torch.device("cpu"), 10)
    c = 0.1 / 0.001 ** 0.5 if bertadam else 1.0
    got, want = sorted({g["lr"] for g in opt.param_groups}), sorted({lr * c, (head_lr or lr) * c})
    assert got == pytest.approx(want, rel=1e-9)
