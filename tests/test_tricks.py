"""Trick checks: R-Drop KL, FGM/PGD restore the embeddings bit for bit, EMA arithmetic, LLRD rates,
freeze; every registered trick trains 3 steps through the hook protocol (parametrized over TRICKS),
all of them together, and end to end through tricklab.training with grad accumulation and resume."""
from __future__ import annotations

import contextlib
import io
import json
import os
from functools import partial

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

import tricklab.losses  # noqa: F401  (registration)
import tricklab.tricks  # noqa: F401
from tricklab.types import TrainContext
from tricklab.errors import ConfigError
from tricklab.losses import DEFAULT_LOSS
from tricklab.model import Classifier
from tricklab.registry import LOSSES, TRICKS
from tricklab.tricks.llrd import encoder_depths
from tricklab.types import Batch

C = 3


def tiny_model(seed: int = 0, dropout: float = 0.1) -> Classifier:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    return Classifier(BertModel(cfg), C, dropout=dropout)


def make_batch(n: int = 8, T: int = 10, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, T, dtype=torch.long)
    mask[: n // 2, T - 3:] = 0
    return Batch(inputs={"input_ids": torch.randint(5, 100, (n, T), generator=g), "attention_mask": mask},
                 labels=torch.arange(n) % C, index=torch.arange(n), extra={"soft_labels": torch.randn(n, C, generator=g)})


def make_ctx() -> TrainContext:
    return TrainContext(task="single_label", num_labels=C, label_names=["a", "b", "c"], class_counts=[4, 2, 2],
                        train_size=8, total_steps=3, data={"feature_dim": 32})


def mini_train(tricks: list, steps: int = 3, accum: int = 1, aux: list | None = None, model: nn.Module | None = None):
    """The hook protocol of tricks/base.py, in the order train.py calls the hooks."""
    model = model or tiny_model()
    ctx = make_ctx()
    losses = {"ce": (1.0, LOSSES.build(DEFAULT_LOSS["single_label"]))} | {n: (w, l) for n, w, l in (aux or [])}
    for _, loss in losses.values():
        loss.setup(ctx)
    for t in tricks:
        t.adapt_model(model, ctx)
    for t in tricks:
        t.setup(model, ctx)
    params = [p for p in model.parameters() if p.requires_grad] + [p for _, l in losses.values() for p in l.parameters()]
    groups = [{"name": "all", "params": params, "lr": 1e-3, "weight_decay": 0.01}]
    for t in tricks:
        groups = t.param_groups(model, groups)
    opt = torch.optim.AdamW(groups)

    def forward_backward(batch: Batch, scale: float) -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch.inputs)
            parts = {n: w * loss(out, batch) for n, (w, loss) in losses.items()}
            for t in tricks:
                parts |= t.extra_losses(model, batch, out)
        (sum(parts.values()) * scale).backward()
        return parts

    logged = []
    model.train()
    for step in range(steps):
        for i in range(accum):
            batch = make_batch(seed=step * accum + i)
            for t in tricks:
                batch = t.transform_batch(batch)
            parts = forward_backward(batch, 1 / accum)
            for t in tricks:
                t.after_backward(model, partial(forward_backward, batch, 1 / accum))
            assert all(torch.isfinite(v) for v in parts.values()), parts
            logged.append({k: float(v.detach()) for k, v in parts.items()})
        opt.step()
        opt.zero_grad(set_to_none=True)
        for t in tricks:
            t.after_step(model, step + 1)
    with contextlib.ExitStack() as stack:
        for t in tricks:
            stack.enter_context(t.eval_weights(model))
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(**make_batch().inputs).logits).all()
    for t in tricks:  # trick state survives the checkpoint format: torch.save + torch.load(weights_only=True)
        buf = io.BytesIO()
        torch.save(t.state_dict(), buf)
        buf.seek(0)
        t.load_state_dict(torch.load(buf, weights_only=True))
    return model, logged


TRICK_PARAMS = {"freeze": {"embeddings": False, "layers": 1}, "pgd": {"steps": 2}}


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_every_registered_trick_trains_alone(name):
    t = TRICKS.build(name, **({"embeddings": True} if name == "freeze" else {}))
    before = tiny_model().state_dict()
    model, logged = mini_train([t])
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "classifier" in k)
    if name == "lora":   # the base stays; the adapters (B starts at 0) moved
        assert all(torch.equal(v, after[k if k in after else k.replace(".weight", ".base_layer.weight")
                                         .replace(".bias", ".base_layer.bias")]) for k, v in before.items()
                   if "classifier" not in k)
        assert any(v.abs().sum() > 0 for k, v in after.items() if "layer.1." in k and "lora_B" in k)
        return
    assert any(not torch.equal(before[k], after[k]) for k in before if "layer.1." in k)


def test_all_tricks_and_losses_together_with_accumulation():
    tricks = [TRICKS.build(n, **TRICK_PARAMS.get(n, {})) for n in sorted(TRICKS)]
    aux = [("supcon", 0.2, LOSSES.build("supcon", projection=8)), ("kd", 0.5, LOSSES.build("kd", soft_labels="logits"))]
    model, logged = mini_train(tricks, steps=3, accum=2, aux=aux)
    assert {"ce", "supcon", "kd", "rdrop_kl"} <= set(logged[0])
    assert all(not p.requires_grad for n, p in model.named_parameters() if "layer.0." in n)


# ---------------------------------------------------------------- R-Drop


def test_rdrop_kl_is_zero_without_dropout():
    ctx = make_ctx()
    model = tiny_model(dropout=0.0)
    for concat in (True, False):
        t = TRICKS.build("rdrop", alpha=4.0, concat=concat)
        t.setup(model, ctx)
        b = t.transform_batch(make_batch())
        assert (b.views, len(b)) == ((2, 16) if concat else (1, 8))
        if concat:
            assert torch.equal(b.labels[:8], b.labels[8:]) and torch.equal(b.inputs["input_ids"][:8], b.inputs["input_ids"][8:])
        out = model(**b.inputs)
        extra = t.extra_losses(model, b, out)
        assert extra["rdrop_kl"].abs().item() < 1e-6
        if not concat:
            ce = LOSSES.build("ce")(out, b)
            torch.testing.assert_close(extra["rdrop_pass2"], ce)
    dropout_model = tiny_model(dropout=0.3).train()                # sanity: with dropout the KL is positive
    t = TRICKS.build("rdrop")
    t.setup(dropout_model, ctx)
    b = t.transform_batch(make_batch())
    assert t.extra_losses(dropout_model, b, dropout_model(**b.inputs))["rdrop_kl"].item() > 1e-4


# ---------------------------------------------------------------- FGM / PGD


@pytest.mark.parametrize("name,params", [("fgm", {"epsilon": 0.5}), ("pgd", {"epsilon": 0.5, "alpha": 0.3, "steps": 3})])
def test_adversarial_restores_embeddings_bit_identical(name, params):
    model = tiny_model().train()
    emb = model.encoder.get_input_embeddings().weight
    b = make_batch()
    ce = LOSSES.build("ce")
    trick = TRICKS.build(name, **params)
    trick.setup(model, make_ctx())
    ce(model(**b.inputs), b).backward()
    clean_grad = {n: p.grad.clone() for n, p in model.named_parameters()}
    e0 = emb.detach().clone()
    seen = []

    def forward_backward():
        seen.append(torch.linalg.vector_norm(emb.detach() - e0).item())
        loss = ce(model(**b.inputs), b)
        loss.backward()
        return {"ce": loss}

    trick.after_backward(model, forward_backward)
    assert torch.equal(emb.detach(), e0)                          # bit-identical after the attack
    assert len(seen) == (1 if name == "fgm" else params["steps"])
    if name == "fgm":
        assert abs(seen[0] - 0.5) < 1e-4                          # one step of exactly epsilon
    else:
        assert all(0 < s <= 0.5 + 1e-4 for s in seen) and seen[-1] > seen[0] - 1e-6
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.grad, clean_grad[n])]
    assert changed                                                # adversarial gradients were added


@pytest.mark.parametrize("name", ["fgm", "pgd"])
def test_adversarial_attacks_frozen_embeddings_without_training_them(name):
    """Frozen word embeddings (freeze, lora) are attacked along their gradient but never updated: they require a
    gradient only during each micro-batch's passes and keep no .grad."""
    model = tiny_model(dropout=0.0)                                # no dropout: only the attack differs
    TRICKS.build("freeze", embeddings=True).setup(model, make_ctx())
    w = model.encoder.get_input_embeddings().weight
    e0 = w.detach().clone()
    clean, _ = mini_train([TRICKS.build("freeze", embeddings=True)], steps=1, model=tiny_model(dropout=0.0))
    attacked, _ = mini_train([TRICKS.build("freeze", embeddings=True), TRICKS.build(name)], steps=1, model=model)
    assert not w.requires_grad and w.grad is None and torch.equal(w.detach(), e0)
    changed = [k for k, v in attacked.state_dict().items() if not torch.equal(v, clean.state_dict()[k])]
    assert changed and all("word_embeddings" not in k for k in changed)   # the attack changed the update


# ---------------------------------------------------------------- EMA


def test_ema_arithmetic_swap_and_state():
    model = tiny_model()
    ema = TRICKS.build("ema", decay=0.9, warmup=False)
    ema.setup(model, make_ctx())
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.after_step(model, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.after_step(model, 2)
    shadow = ema.state_dict()["shadow"]
    for n, p in model.named_parameters():
        s1 = 0.9 * w0[n] + 0.1 * (w0[n] + 1)
        torch.testing.assert_close(shadow[n], 0.9 * s1 + 0.1 * p.detach())
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.eval_weights(model):
        for n, p in model.named_parameters():
            assert torch.equal(p, shadow[n])
    for n, p in model.named_parameters():
        assert torch.equal(p, trained[n])                          # training weights back, bit for bit
    warm = TRICKS.build("ema", decay=0.999)                       # warm-up is the default
    assert warm.current_decay() == pytest.approx(0.1)
    warm.num_updates = 10_000
    assert warm.current_decay() == pytest.approx(0.999)
    other = TRICKS.build("ema", decay=0.9, warmup=False)
    other.setup(tiny_model(seed=3), make_ctx())
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2 and all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow))


# ---------------------------------------------------------------- LLRD / freeze


def test_llrd_geometric_rates():
    from tricklab.config import TrainConfig
    from tricklab.training.optim import param_groups

    model = tiny_model()
    groups = param_groups(model, [], TrainConfig(lr=1e-3, head_lr=1e-2))
    t = TRICKS.build("llrd", decay=0.5)
    t.setup(model, make_ctx())
    out = t.param_groups(model, groups)
    lr_of = {n: g["lr"] for g in out for n in g["param_names"]}
    assert sum(len(g["params"]) for g in out) == sum(len(g["params"]) for g in groups)
    for n, lr in lr_of.items():
        if n.startswith("bert.embeddings."):
            want = 1e-3 * 0.5 ** 2                                 # lowest: lr·decay^L
        elif ".layer.0." in n:
            want = 1e-3 * 0.5
        elif ".layer.1." in n or n.startswith("bert.pooler."):
            want = 1e-3
        else:
            want = 1e-2                                            # head keeps head_lr
        assert lr == pytest.approx(want), n
    assert all(id(p) in {id(q) for q in g["params"]} for g in out for p in g["params"])


@pytest.mark.parametrize("kind", ["distilbert", "gpt2"])
def test_layer_indices_found_for_other_namings(kind):
    from transformers import DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model

    if kind == "distilbert":   # transformer.layer.N.
        enc = DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=3, n_heads=2, hidden_dim=20))
    else:                      # h.N.
        enc = GPT2Model(GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2))
    depth, L = encoder_depths(Classifier(enc, 2, pooling="mean"))
    assert L == 3 and set(depth.values()) <= {0, 1, 2, 3, 4}
    assert {d for n, d in depth.items() if "embed" in n or ".wte." in n or ".wpe." in n} == {0}


def test_freeze_embeddings_and_bottom_layers():
    model = tiny_model()
    TRICKS.build("freeze", embeddings=True, layers=1).setup(model, make_ctx())
    for n, p in model.named_parameters():
        assert p.requires_grad == (not (n.startswith("bert.embeddings.") or ".layer.0." in n)), n
    with pytest.raises(ConfigError, match="layers"):
        TRICKS.build("freeze", layers=5).setup(tiny_model(), make_ctx())


@pytest.mark.parametrize("name,params,match", [
    ("rdrop", {"alpha": -1}, "alpha"), ("fgm", {"epsilon": 0}, "epsilon"), ("pgd", {"steps": 0}, "steps"),
    ("ema", {"decay": 1.5}, "decay"), ("llrd", {"decay": 0}, "decay"), ("freeze", {"layers": -1}, "layers"),
    ("rdrop", {"alpha_": 1}, "alpha_"),
])
def test_bad_params_raise_config_error(name, params, match):
    with pytest.raises(ConfigError, match=match):
        TRICKS.build(name, **params)


# ---------------------------------------------------------------- EMA / LLRD / adversarial: details


class Wrapped(nn.Module):
    """Stands for DDP: the model under .module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model


def test_ema_setup_defaults_decay_schedule_and_wrapped_model():
    model = tiny_model()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)      # frozen: no shadow
    ema = TRICKS.build("ema")
    assert ema.decay == 0.999 and ema.warmup is True and ema.num_updates == 0
    assert ema.state_dict() == {"num_updates": 0, "shadow": {}}
    ema.setup(Wrapped(model.to(torch.bfloat16)), make_ctx())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert ema.names == trainable and "bert.embeddings.word_embeddings.weight" not in ema.names
    assert all(s.dtype == torch.float32 for s in ema.shadow)                   # float32 copies of bf16 weights
    params = dict(model.named_parameters())
    for n, s in zip(ema.names, ema.shadow):
        torch.testing.assert_close(s, params[n].detach().float())
    with torch.no_grad():
        params[ema.names[0]].add_(1.0)                                         # a copy, not a view
    assert not torch.equal(ema.shadow[0], params[ema.names[0]].float())
    assert [id(p) for p in ema._params(Wrapped(model))] == [id(params[n]) for n in ema.names]
    for t, want in ((0, 1 / 10), (5, 6 / 15), (40, 41 / 50)):                  # d_t = min(decay, (1 + t) / (10 + t))
        ema.num_updates = t
        assert ema.current_decay() == pytest.approx(want, rel=1e-12)
    small = TRICKS.build("ema", decay=0.3)
    small.num_updates = 5
    assert small.current_decay() == 0.3
    fixed = TRICKS.build("ema", decay=0.95, warmup=False)
    assert fixed.current_decay() == 0.95 and TRICKS.build("ema", warmup=0).warmup is False


def test_ema_state_checks_and_errors():
    model = tiny_model()
    ema = TRICKS.build("ema", decay=0.9)
    ema.setup(model, make_ctx())
    state = ema.state_dict()
    assert list(state["shadow"]) == ema.names and state["num_updates"] == 0
    fresh = TRICKS.build("ema", decay=0.9)
    fresh.setup(model, make_ctx())
    half = {"num_updates": 3.0, "shadow": {n: s.double() + 1 for n, s in state["shadow"].items()}}
    fresh.load_state_dict(half)
    assert fresh.num_updates == 3 and type(fresh.num_updates) is int
    assert all(s.dtype == torch.float32 and torch.equal(s, state["shadow"][n] + 1)
               for n, s in zip(fresh.names, fresh.shadow))
    del half["shadow"][ema.names[1]]
    with pytest.raises(ConfigError, match=rf"^trick ema: the checkpoint has no EMA shadow for \['{ema.names[1]}'\]; "
                                          r"fix: resume with the same model and tricks as the checkpointed run$"):
        fresh.load_state_dict(half)
    other = tiny_model()
    other.classifier = nn.Linear(32, C)                                        # same names: fine
    ema._params(other)
    del other.classifier
    with pytest.raises(RuntimeError, match=r"^ema: the model lost parameters \['classifier.weight', "
                                           r"'classifier.bias'\] after setup$"):
        ema._params(other)
    for bad in (1.0, 0, -0.5, "0.9"):
        with pytest.raises(ConfigError, match=rf"^trick ema: decay must be in \(0, 1\) \(0.99-0.9999 is usual\), "
                                              rf"got {bad!r}$"):
            TRICKS.build("ema", decay=bad)


def test_llrd_depths_names_and_groups():
    model = tiny_model()
    depth, L = encoder_depths(Wrapped(model))
    assert L == 2
    for n, _ in model.named_parameters():
        if not n.startswith("bert."):
            assert n not in depth, n                                           # head parameters are not listed
        elif n.startswith("bert.embeddings."):
            assert depth[n] == 0, n
        elif n.startswith("bert.encoder.layer."):
            assert depth[n] == int(n.split(".")[3]) + 1, n
        else:
            assert n.startswith("bert.pooler.") and depth[n] == 3, n
    bare = nn.Module()                                                         # no encoder_name: "encoder."
    bare.encoder = nn.ModuleDict({"layer": nn.ModuleList([nn.Linear(2, 2) for _ in range(3)]), "wte": nn.Embedding(4, 2)})
    bare.head = nn.Linear(2, 2)
    depth, L = encoder_depths(bare)
    assert L == 3 and depth == {"encoder.layer.0.weight": 1, "encoder.layer.0.bias": 1, "encoder.layer.1.weight": 2,
                                "encoder.layer.1.bias": 2, "encoder.layer.2.weight": 3, "encoder.layer.2.bias": 3,
                                "encoder.wte.weight": 0}
    t = TRICKS.build("llrd", decay=0.5)
    groups = [{"name": "enc", "params": [p for n, p in model.named_parameters() if n.startswith("bert.")], "lr": 1.0,
               "weight_decay": 0.1},
              {"params": list(model.classifier.parameters()), "lr": 2.0, "weight_decay": 0.0}]   # no names, no name
    out = t.param_groups(Wrapped(model), groups)                               # not set up: sets itself up
    assert t.num_layers == 2
    assert [(g.get("name"), g["lr"], g["weight_decay"], len(g["params"])) for g in out] == [
        ("enc/embeddings", 0.25, 0.1, 5), ("enc/layer1", 0.5, 0.1, 16), ("enc/layer2", 1.0, 0.1, 16),
        ("enc/top", 1.0, 0.1, 2), (None, 2.0, 0.0, 2)]
    assert all("param_names" not in g for g in out)
    assert [t.scale(d) for d in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert TRICKS.build("llrd").decay == 0.9 and TRICKS.build("llrd", decay=1).decay == 1.0
    for bad in (0, 1.5, "0.9"):
        with pytest.raises(ConfigError, match=rf"^trick llrd: decay must be in \(0, 1\] \(0.8-0.95 is usual\), got {bad!r}$"):
            TRICKS.build("llrd", decay=bad)
    flat = nn.Module()
    flat.encoder = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigError, match=r"^trick llrd: found no numbered layers \(.layer.N. / .layers.N. / .h.N.\) "
                                          r"in Sequential; fix: drop llrd for this encoder$"):
        TRICKS.build("llrd").setup(flat, make_ctx())


def test_adversarial_helpers_embeddings_hook_and_unit_step():
    from tricklab.tricks.fgm import EmbeddingGrad, _unit_step, word_embeddings

    model = tiny_model()
    emb = model.encoder.get_input_embeddings().weight
    assert word_embeddings(model) is emb and word_embeddings(Wrapped(model)) is emb
    bare = tiny_model().bert                                   # an encoder without a Classifier around it
    assert word_embeddings(bare) is bare.get_input_embeddings().weight
    holder = nn.Module()                                       # get_input_embeddings on the outer model only
    holder.encoder = nn.Linear(2, 2)
    holder.get_input_embeddings = lambda: model.bert.embeddings.word_embeddings
    assert word_embeddings(holder) is emb
    for broken in (nn.Linear(2, 2), holder.encoder):
        with pytest.raises(ConfigError, match=r"^adversarial training: cannot find the word embeddings of Linear "
                                              r"\(no get_input_embeddings\(\)\); fix: drop the fgm/pgd trick"):
            word_embeddings(broken)
    nothing = nn.Module()
    nothing.get_input_embeddings = lambda: None
    with pytest.raises(ConfigError, match="cannot find the word embeddings of Module"):
        word_embeddings(nothing)
    # the hook: one per weight, moved when the weight changes, each backward's own gradient, taken once
    rec = EmbeddingGrad()
    w = nn.Parameter(torch.randn(4, 3))
    rec.attach(w)
    rec.attach(w)
    (w * 2).sum().backward()
    assert torch.equal(rec.grad, torch.full((4, 3), 2.0)) and not rec.grad.requires_grad
    (w * 3).sum().backward()
    assert torch.equal(rec.take(), torch.full((4, 3), 3.0)) and rec.take() is None and rec.grad is None
    v = nn.Parameter(torch.randn(2))
    rec.attach(v)
    (w * 5).sum().backward()                                   # the old weight's hook is gone
    assert rec.take() is None
    v.sum().backward()
    assert torch.equal(rec.take(), torch.ones(2))
    # the step: size · g / ‖g‖ over the whole matrix; None for a missing, zero or non-finite gradient
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_unit_step(g, 0.7), 0.7 * g / g.pow(2).sum().sqrt())
    assert _unit_step(g.to(torch.bfloat16), 1.0).dtype == torch.bfloat16
    assert _unit_step(None, 1.0) is None and _unit_step(torch.zeros(3, 2), 1.0) is None
    assert _unit_step(torch.tensor([1.0, float("nan")]), 1.0) is None
    assert _unit_step(torch.tensor([1.0, float("inf")]), 1.0) is None
    big = torch.full((2, 2), 3e38)                              # its norm overflows fp32 unless computed with care
    assert _unit_step(big, 1.0) is None or torch.isfinite(_unit_step(big, 1.0)).all()


@pytest.mark.parametrize("name,params,match", [
    ("fgm", {"epsilon": -1}, r"^trick fgm: epsilon must be a positive number \(1.0 is usual\), got -1$"),
    ("fgm", {"epsilon": "1"}, r"^trick fgm: epsilon must be a positive number"),
    ("pgd", {"epsilon": 0}, r"^trick pgd: epsilon must be a positive number, got 0$"),
    ("pgd", {"alpha": -0.3}, r"^trick pgd: alpha must be a positive number, got -0.3$"),
    ("pgd", {"alpha": "x"}, r"^trick pgd: alpha must be a positive number, got 'x'$"),
    ("pgd", {"steps": 2.0}, r"^trick pgd: steps must be an integer >= 1 \(3 is usual\), got 2.0$"),
    ("pgd", {"steps": 0}, r"^trick pgd: steps must be an integer >= 1"),
])
def test_adversarial_bad_params_one_clear_line(name, params, match):
    with pytest.raises(ConfigError, match=match):
        TRICKS.build(name, **params)
    ok = TRICKS.build(name, **{k: v for k, v in {"epsilon": 1e-3, "alpha": 1e-3, "steps": 1}.items()
                               if name == "pgd" or k == "epsilon"})
    assert ok.epsilon == 1e-3
    assert TRICKS.build("fgm").epsilon == 1.0
    pgd = TRICKS.build("pgd")
    assert (pgd.epsilon, pgd.alpha, pgd.steps) == (1.0, 0.3, 3)


def test_adversarial_no_gradient_no_attack():
    model = tiny_model()
    for name in ("fgm", "pgd"):
        t = TRICKS.build(name)
        t.setup(model, make_ctx())
        calls = []
        t.after_backward(model, lambda: calls.append(1))        # no backward reached the embeddings: nothing to do
        assert calls == []
    # frozen word embeddings (freeze, lora) are attacked without being trained: tests/test_lora.py


def test_freeze_defaults_boundaries_wrapped_and_messages():
    model = tiny_model()
    t = TRICKS.build("freeze")                                   # defaults: embeddings only
    t.setup(Wrapped(model), make_ctx())
    emb = [n for n, _ in model.named_parameters() if n.startswith("bert.embeddings.")]
    assert t.frozen == emb and all(p.requires_grad != (n in emb) for n, p in model.named_parameters())
    all_blocks = TRICKS.build("freeze", embeddings=False, layers=2)  # layers == L: every block, fine
    m2 = tiny_model()
    all_blocks.setup(m2, make_ctx())
    assert all_blocks.frozen == [n for n, _ in m2.named_parameters() if n.startswith("bert.encoder.layer.")]
    with pytest.raises(ConfigError, match=r"^trick freeze: layers=3 but the encoder has 2 blocks; fix: layers <= 2$"):
        TRICKS.build("freeze", layers=3).setup(tiny_model(), make_ctx())
    with pytest.raises(ConfigError, match=r"^trick freeze: nothing to freeze; fix: embeddings: true and/or layers: N$"):
        TRICKS.build("freeze", embeddings=False).setup(tiny_model(), make_ctx())
    for bad in (-1, 1.0, True, "1"):
        with pytest.raises(ConfigError, match=rf"^trick freeze: layers must be an integer >= 0 \(bottom blocks to "
                                              rf"freeze\), got {bad!r}$"):
            TRICKS.build("freeze", layers=bad)


def test_ema_load_state_follows_the_shadow_device_and_lists_three_missing():
    model = tiny_model()
    ema = TRICKS.build("ema")
    ema.setup(model, make_ctx())
    state = ema.state_dict()
    on_meta = TRICKS.build("ema")
    on_meta.setup(tiny_model().to("meta"), make_ctx())                 # the model (and shadows) elsewhere
    on_meta.load_state_dict(state)                                   # a checkpoint read on cpu: moved there
    assert all(s.device.type == "meta" for s in on_meta.shadow) and len(on_meta.shadow) == len(state["shadow"])
    frozen = tiny_model().requires_grad_(False)
    empty = TRICKS.build("ema")
    empty.setup(frozen, make_ctx())
    empty.load_state_dict({"num_updates": 4, "shadow": {}})           # nothing trainable: nothing to load
    assert empty.shadow == [] and empty.num_updates == 4
    fresh = TRICKS.build("ema")
    fresh.setup(model, make_ctx())
    with pytest.raises(ConfigError, match=rf"^trick ema: the checkpoint has no EMA shadow for "
                                          rf"\['{ema.names[0]}', '{ema.names[1]}', '{ema.names[2]}'\]; fix"):
        fresh.load_state_dict({"num_updates": 1, "shadow": {}})      # many missing: the first three named


def test_llrd_head_first_and_unnamed_group():
    model = tiny_model()
    t = TRICKS.build("llrd", decay=0.5)
    t.setup(model, make_ctx())
    mixed = [(n, p) for n, p in model.named_parameters()]              # encoder first, head last, one group
    assert mixed[-1][0].startswith("classifier.")
    out = t.param_groups(model, [{"params": [p for _, p in mixed], "param_names": [n for n, _ in mixed], "lr": 1.0}])
    assert [g.get("name") for g in out] == [None, "group/embeddings", "group/layer1", "group/layer2", "group/top"]
    assert out[0]["param_names"] == ["classifier.weight", "classifier.bias"] and out[0]["lr"] == 1.0
    assert [g["lr"] for g in out[1:]] == [0.25, 0.5, 1.0, 1.0]
    assert [n for g in out for n in g["param_names"]] == [n for n, _ in mixed[-2:]] + [n for n, _ in mixed[:-2]]


# ---------------------------------------------------------------- end to end through train()


def write_tiny_run_inputs(root):
    from transformers import BertTokenizerFast

    words = [f"w{i}" for i in range(60)]
    (root / "enc").mkdir()
    (root / "enc" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words    # transformers 5 ignores vocab_file= here
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(str(root / "enc"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=65, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(str(root / "enc"))
    data = root / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 48), ("dev", 12)):
        lines = []
        for i in range(n):
            y = i % 3
            toks = [f"w{y * 20 + int(k)}" for k in torch.randint(0, 20, (6,), generator=g)]
            lines.append(f"{' '.join(toks)}\t{y}")
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (data / "class.txt").write_text("a\nb\nc")
    return root / "enc", data


def test_train_end_to_end_all_tricks_accumulation_resume(tmp_path):
    from tricklab.config import load_config
    from tricklab.training import train

    enc, data = write_tiny_run_inputs(tmp_path)
    tricks = [{"name": n, **TRICK_PARAMS.get(n, {})} for n in sorted(TRICKS)]
    overrides = {"model.name": str(enc), "train.batch_size": 8, "train.grad_accum": 2, "train.max_steps": 4,
                 "train.eval_every": 2, "train.log_every": 1, "train.threads": 2, "train.precision": "bf16",
                 "data.max_length": 16, "loss": {"name": "focal", "gamma": 2.0},
                 "aux_losses": [{"name": "supcon", "weight": 0.2}, {"name": "dice", "weight": 0.1}], "tricks": tricks}
    out = tmp_path / "run"
    cfg = load_config(None, overrides=overrides)
    train(cfg, data / "train.txt", data / "dev.txt", out=out, progress=False)
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    keys = set().union(*[r.keys() for r in recs])
    assert {"loss/focal", "loss/supcon", "loss/dice", "loss/rdrop_kl"} <= keys, keys
    # every trick includes lora: the model folder holds the adapters and the head, not the full weights
    assert max(r["step"] for r in recs) == 4 and (out / "model" / "adapter_model.safetensors").is_file()
    # resume: extend the finished run by two more steps from its last checkpoint (EMA shadows included)
    cfg2 = load_config(out / "config.yaml")
    cfg2.train.max_steps = 6
    cfg2.save(out / "config.yaml")
    train(cfg2, data / "train.txt", data / "dev.txt", out=out, resume=True, progress=False)
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "loss/focal" in r]
    assert steps[-2:] == [5, 6] and all(r["loss"] == r["loss"] for r in recs if "loss" in r)


# ---------------------------------------------------------------- R-Drop: configuration, views, every task


class _NoisyHead(nn.Module):
    """logits = x @ W, then dropout: two passes of the same rows differ. Output as the classifier's."""

    def __init__(self, width: int, p: float = 0.5):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, width))
        self.drop = nn.Dropout(p)

    def forward(self, x, **_):
        from tricklab.types import Output
        z = self.drop(x @ self.w)
        return Output(logits=z, pooled=x)


def _ref_sym_kl(z1: torch.Tensor, z2: torch.Tensor, task: str) -> torch.Tensor:
    """(KL(p1‖p2) + KL(p2‖p1)) / 2 per example (Liang et al. 2021, eq. 2), mean over examples."""
    if task == "regression":
        return ((z1 - z2) ** 2).mean()
    if task == "multi_label":   # a Bernoulli per label, summed over labels
        p, q = torch.sigmoid(z1), torch.sigmoid(z2)
        kl = lambda a, b: a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log()  # noqa: E731
        return (0.5 * (kl(p, q) + kl(q, p))).sum(-1).mean()
    p, q = z1.softmax(-1), z2.softmax(-1)
    return (0.5 * ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1))).mean()


def test_rdrop_defaults_and_alpha_checks():
    t = TRICKS.build("rdrop")
    assert (t.alpha, t.concat, t.task, t.main_loss) == (4.0, True, "single_label", None)
    assert TRICKS.build("rdrop", alpha=0).alpha == 0.0 and isinstance(TRICKS.build("rdrop", alpha=2).alpha, float)
    for bad in (-0.5, "1"):
        with pytest.raises(ConfigError, match=r"^trick rdrop: alpha must be a number >= 0 \(0.3-5 in the paper\), "
                                              rf"got {bad!r}$"):
            TRICKS.build("rdrop", alpha=bad)


def test_stack_views_repeats_every_tensor():
    from tricklab.tricks.rdrop import stack_views

    b = make_batch(n=3)
    s = stack_views(b)
    assert s.views == 2 and len(s) == 6
    for k in b.inputs:
        assert torch.equal(s.inputs[k], torch.cat([b.inputs[k]] * 2))
    assert torch.equal(s.labels, torch.cat([b.labels] * 2)) and torch.equal(s.index, torch.tensor([0, 1, 2] * 2))
    assert torch.equal(s.extra["soft_labels"], torch.cat([b.extra["soft_labels"]] * 2))
    three = stack_views(Batch(inputs=b.inputs, labels=None, index=b.index, views=2), 3)
    assert three.labels is None and three.views == 6 and len(three) == 9


@pytest.mark.parametrize("task,width", [("single_label", 3), ("multi_label", 3), ("regression", 1)])
@pytest.mark.parametrize("concat", [True, False])
def test_rdrop_losses_per_task_against_the_formula(task, width, concat):
    from tricklab.losses import DEFAULT_LOSS as DL

    ctx = TrainContext(task=task, num_labels=width, label_names=[str(i) for i in range(width)],
                       class_counts=[], train_size=6, total_steps=1)
    torch.manual_seed(0)
    model = _NoisyHead(width).train()
    x = torch.randn(6, 4)
    labels = {"single_label": torch.tensor([0, 1, 2, 0, 1, 2]), "regression": torch.randn(6),
              "multi_label": (torch.rand(6, width) < 0.5).float()}[task]
    t = TRICKS.build("rdrop", alpha=1.5, concat=concat)
    t.setup(model, ctx)
    assert t.task == task
    b = t.transform_batch(Batch(inputs={"x": x}, labels=labels, index=torch.arange(6)))
    torch.manual_seed(1)
    out = model(**b.inputs)
    extra = t.extra_losses(model, b, out)
    if concat:
        z1, z2 = out.logits[:6], out.logits[6:]
        assert set(extra) == {"rdrop_kl"}
    else:
        torch.manual_seed(1)
        z1 = model(x).logits
        z2 = model(x).logits                       # the trick's second pass draws the next dropout mask
        loss = LOSSES.build(DL[task])
        loss.setup(ctx)
        torch.testing.assert_close(extra["rdrop_pass2"], loss(type(out)(logits=z2, pooled=x), b))
    assert not torch.allclose(z1, z2)
    torch.testing.assert_close(extra["rdrop_kl"], 1.5 * _ref_sym_kl(z1, z2, task), rtol=1e-5, atol=1e-6)


def test_rdrop_second_pass_uses_the_runs_main_loss():
    ctx = make_ctx()
    focal = LOSSES.build("focal", gamma=2.0)
    focal.setup(ctx)
    ctx.data["main_loss"] = focal
    model = tiny_model(dropout=0.0)
    t = TRICKS.build("rdrop", concat=False)
    t.setup(model, ctx)
    assert t.main_loss is focal
    b = make_batch()
    out = model(**b.inputs)
    torch.testing.assert_close(t.extra_losses(model, b, out)["rdrop_pass2"], focal(out, b))
    assert not torch.allclose(focal(out, b), LOSSES.build("ce")(out, b))
    assert t.state_dict() == {}
