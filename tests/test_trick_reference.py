"""The gradient the optimizer sees, against hand-written reference steps.

Each test runs the training loop's own gradient code (train.accumulate_gradients: micro-batches, the tricks'
hooks, the 1/grad_accum scaling) on a tiny random BERT, and compares every parameter's .grad with a reference
computed here from the papers' formulas with plain autograd:

- accumulation: one batch of 16 gives the same gradient as 2 x 8 with grad_accum 2, for every trick whose
  gradient does not depend on how the batch is split (all but FGM/PGD);
- FGM (Miyato et al. 2017, arXiv:1605.07725): per micro-batch, clean gradient + the gradient at E + eps·g/‖g‖,
  g = that micro-batch's own embedding gradient (not the accumulated one);
- PGD (Madry et al. 2018, arXiv:1706.06083, in the K-step form common for text: r += alpha·g/‖g‖, projected onto
  ‖r‖ ≤ eps; the last step's gradient is added to the clean one);
- R-Drop (Liang et al. 2021, arXiv:2106.14448): CE on both dropout passes + alpha·(KL(p1‖p2) + KL(p2‖p1))/2,
  with the dropout masks reproduced by seeding;
- EMA: the weights evaluated, saved (and so exported) are the shadows; the resume checkpoint holds the raw ones;
- fp16 skipped steps: no step, schedule or EMA update is counted.
"""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

import tricklab.losses  # noqa: F401  (registration)
import tricklab.tricks  # noqa: F401
from tricklab.types import TrainContext
from tricklab.model import Classifier
from tricklab.registry import LOSSES, TRICKS
from tricklab.training import accumulate_gradients
from tricklab.types import Batch

C = 3


def tiny_model(dropout: float = 0.0, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=32, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    return Classifier(BertModel(cfg), C, pooling="mean", dropout=dropout).train()


def make_batch(n: int, seed: int, T: int = 7) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, T, dtype=torch.long)
    for i in range(n):
        mask[i, int(torch.randint(2, T + 1, (1,), generator=g)):] = 0
    return Batch(inputs={"input_ids": torch.randint(5, 60, (n, T), generator=g), "attention_mask": mask},
                 labels=torch.randint(0, C, (n,), generator=g), index=torch.arange(n))


def split(b: Batch, k: int) -> list[Batch]:
    n = len(b) // k
    return [Batch(inputs={key: v[i * n:(i + 1) * n] for key, v in b.inputs.items()}, labels=b.labels[i * n:(i + 1) * n],
                  index=b.index[i * n:(i + 1) * n]) for i in range(k)]


def ctx() -> TrainContext:
    return TrainContext(task="single_label", num_labels=C, label_names=["a", "b", "c"], class_counts=[6, 5, 5],
                        train_size=16, total_steps=1)


def loop_grads(model: Classifier, micro: list[Batch], tricks: list, losses: dict | None = None) -> dict[str, torch.Tensor]:
    """The loop's gradient for one optimizer step (train.accumulate_gradients), as {name: .grad}."""
    losses = losses or {"ce": (1.0, LOSSES.build("ce"))}
    for t in tricks:
        t.setup(model, ctx())
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, micro, losses, tricks, lambda loss: loss.backward())
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=atol, rtol=1e-4, msg=lambda m: f"{n}: {m}")


def ce_of(model: Classifier, b: Batch) -> torch.Tensor:
    return F.cross_entropy(model(**b.inputs).logits, b.labels)


def grads(model: Classifier, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g) for n, p, g in zip(names, params, gs)}


def add(a: dict, b: dict, scale: float = 1.0) -> dict:
    return {n: a.get(n, 0) + scale * b[n] for n in b}


def perturbed(model: Classifier, r: torch.Tensor):
    """Context: the word embeddings shifted by r (V, H), restored after."""
    w = model.encoder.get_input_embeddings().weight

    class _Ctx:
        def __enter__(self):
            self.saved = w.data.clone()
            w.data.add_(r)

        def __exit__(self, *exc):
            w.data.copy_(self.saved)

    return _Ctx()


EMB = "bert.embeddings.word_embeddings.weight"


# ---------------------------------------------------------------- accumulation


@pytest.mark.parametrize("trick", [None, "rdrop", "ema", "llrd", "freeze"])
def test_batch_16_equals_2x8_with_accumulation(trick):
    """Mean CE over 16 examples == the mean of two 8-example micro-batches: the loop must scale each backward by
    1/grad_accum. Dropout is off, so R-Drop's two passes agree and its KL term is exactly 0."""
    params = {"freeze": {"layers": 1}}.get(trick, {})
    b = make_batch(16, seed=1)
    one = loop_grads(tiny_model(), [b], [TRICKS.build(trick, **params)] if trick else [])
    two = loop_grads(tiny_model(), split(b, 2), [TRICKS.build(trick, **params)] if trick else [])
    ref_model = tiny_model()
    if trick == "freeze":
        TRICKS.build("freeze", **params).setup(ref_model, ctx())
    want = grads(ref_model, ce_of(ref_model, b))
    want = {n: g for n, g in want.items() if n in one}       # parameters the loss reaches (not the pooler)
    assert_grads_equal(one, want)
    assert_grads_equal(two, want)
    if trick == "freeze":
        assert not any(".layer.0." in n or "embeddings" in n for n in one)


# ---------------------------------------------------------------- FGM / PGD


def fgm_reference(model: Classifier, micro: list[Batch], eps: float) -> dict[str, torch.Tensor]:
    """sum over micro-batches i of (1/k)·[∇L_i(E) + ∇L_i(E + eps·g_i/‖g_i‖)], g_i = ∂L_i/∂E of micro-batch i."""
    k, total = len(micro), {}
    for b in micro:
        clean = grads(model, ce_of(model, b) / k)
        g = clean[EMB]
        with perturbed(model, eps * g / g.norm()):
            adv = grads(model, ce_of(model, b) / k)
        total = add(add(total, clean), adv)
    return total


def pgd_reference(model: Classifier, micro: list[Batch], eps: float, alpha: float, steps: int) -> dict:
    """Per micro-batch: clean gradient + the gradient at the last of K steps r <- proj_eps(r + alpha·g/‖g‖), each
    g the embedding gradient at the previous point (the clean one first)."""
    k, total = len(micro), {}
    for b in micro:
        clean = grads(model, ce_of(model, b) / k)
        g, r = clean[EMB], torch.zeros_like(clean[EMB])
        for _ in range(steps):
            r = r + alpha * g / g.norm()
            if r.norm() > eps:
                r = eps * r / r.norm()
            with perturbed(model, r):
                adv = grads(model, ce_of(model, b) / k)
            g = adv[EMB]
        total = add(add(total, clean), adv)
    return total


@pytest.mark.parametrize("accum", [1, 2, 3])
def test_fgm_gradient_matches_reference(accum):
    b = make_batch(12, seed=2)
    ref = fgm_reference(tiny_model(), split(b, accum), eps=0.7)
    got = loop_grads(tiny_model(), split(b, accum), [TRICKS.build("fgm", epsilon=0.7)])
    want = {n: g for n, g in ref.items() if n in got}
    assert_grads_equal(got, want, atol=1e-5)
    clean = loop_grads(tiny_model(), split(b, accum), [])
    assert any(not torch.allclose(got[n], clean[n], atol=1e-5) for n in clean)   # the attack added something


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize("eps,alpha,steps", [(0.5, 0.3, 3), (10.0, 0.3, 2), (0.2, 0.3, 1)])
def test_pgd_gradient_matches_reference(accum, eps, alpha, steps):
    """eps 0.5 / alpha 0.3: the projection binds from step 2; eps 10: it never does; steps 1 with eps < alpha:
    one projected step."""
    b = make_batch(12, seed=3)
    ref = pgd_reference(tiny_model(), split(b, accum), eps, alpha, steps)
    got = loop_grads(tiny_model(), split(b, accum), [TRICKS.build("pgd", epsilon=eps, alpha=alpha, steps=steps)])
    want = {n: g for n, g in ref.items() if n in got}
    assert_grads_equal(got, want, atol=1e-5)


def test_fgm_direction_is_the_current_micro_batch_gradient():
    """With accumulation the attack on micro-batch 2 follows micro-batch 2's gradient: the adversarial pass raises
    that micro-batch's loss (by about eps·‖g‖ to first order)."""
    model = tiny_model()
    micro = split(make_batch(12, seed=4), 2)
    t = TRICKS.build("fgm", epsilon=0.05)
    t.setup(model, ctx())
    seen = []

    def fb_for(b):
        def fb():
            loss = ce_of(model, b) / 2
            loss.backward()
            seen.append(loss.item())
            return {"ce": loss}
        return fb

    for b in micro:
        fb = fb_for(b)
        fb()
        t.after_backward(model, fb)
    clean1, adv1, clean2, adv2 = seen
    assert adv1 > clean1 and adv2 > clean2


# ---------------------------------------------------------------- R-Drop


def rdrop_reference(model: Classifier, b: Batch, alpha: float, concat: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    if concat:   # one pass over the batch stacked with itself: rows [0:n] pass 1, [n:2n] pass 2
        z = model(**{k: torch.cat([v, v]) for k, v in b.inputs.items()}).logits
        z1, z2 = z[: len(b)], z[len(b):]
        task = 0.5 * (F.cross_entropy(z1, b.labels) + F.cross_entropy(z2, b.labels))   # mean over the 2n rows
    else:        # two passes; the paper's eq. 3: L1 + L2 + alpha·KL
        z1 = model(**b.inputs).logits
        z2 = model(**b.inputs).logits
        task = F.cross_entropy(z1, b.labels) + F.cross_entropy(z2, b.labels)
    p1, p2 = z1.softmax(-1), z2.softmax(-1)
    kl = 0.5 * ((p1 * (p1.log() - p2.log())).sum(-1) + (p2 * (p2.log() - p1.log())).sum(-1)).mean()
    return grads(model, task + alpha * kl)


@pytest.mark.parametrize("concat", [True, False])
def test_rdrop_gradient_matches_reference(concat):
    b = make_batch(8, seed=5)
    ref = rdrop_reference(tiny_model(dropout=0.2), b, alpha=2.5, concat=concat, seed=11)
    model = tiny_model(dropout=0.2)
    t = TRICKS.build("rdrop", alpha=2.5, concat=concat)
    t.setup(model, ctx())
    torch.manual_seed(11)
    got = loop_grads(model, [b], [t])
    assert_grads_equal(got, {n: g for n, g in ref.items() if n in got}, atol=1e-5)
    # the KL term matters: without it (alpha 0) the gradient differs
    ref0 = rdrop_reference(tiny_model(dropout=0.2), b, alpha=0.0, concat=concat, seed=11)
    assert any(not torch.allclose(ref0[n], got[n], atol=1e-4) for n in got)


# ---------------------------------------------------------------- EMA through train()


def _train_tiny(tmp_path, tricks, extra=None):
    from conftest import tiny_cfg, write_thucnews, make_tiny_model
    from tricklab.training import train

    model = make_tiny_model(tmp_path / "enc")
    data = write_thucnews(tmp_path / "thuc", n_train=64, n_dev=24)
    sets = ["train.batch_size=8", "train.max_steps=4", "train.eval_every=4", "train.log_every=1",
            "model.pooling=mean", "model.dropout=0.0"] + (extra or [])
    cfg = tiny_cfg(model, *sets)
    cfg.tricks = tricks
    out = tmp_path / "run"
    return train(cfg, data, out=out, progress=False), out


def test_ema_weights_are_evaluated_saved_and_raw_weights_checkpointed(tmp_path):
    from safetensors.torch import load_file

    from tricklab.training.checkpoint import latest_checkpoint, load_checkpoint

    metrics, out = _train_tiny(tmp_path, [{"name": "ema", "decay": 0.5, "warmup": False}])
    raw, blobs, state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    shadow = blobs["tricks"][0]["shadow"]
    assert state["step"] == 4 and blobs["tricks"][0]["num_updates"] == 4
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert shadow and all(n in saved for n in shadow)
    for n, s in shadow.items():
        torch.testing.assert_close(saved[n], s.to(saved[n].dtype), atol=0, rtol=0)      # saved = the shadow
    assert any(not torch.equal(raw[n], shadow[n]) for n in shadow)                       # checkpoint = raw weights
    # the dev evaluation that chose this checkpoint ran on the shadow weights: finish() re-evaluates the saved
    # (shadow) model on dev and gets the same loss the loop logged
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    dev = [r for r in log if "dev/loss" in r]
    assert dev and dev[-1]["dev/loss"] == pytest.approx(metrics["dev"]["loss"], abs=1e-6)


# ---------------------------------------------------------------- fp16 skipped steps


def test_skipped_optimizer_steps_do_not_count(tmp_path, monkeypatch):
    """When the fp16 gradient scaler skips an update (accelerator.optimizer_step_was_skipped), the step counter,
    the LR schedule and the EMA do not advance (as in the transformers Trainer). The scaler exists on GPUs
    only, so the flag is driven here: the 1st and 3rd updates are reported as skipped."""
    from accelerate import Accelerator

    flags = iter([True, False, True] + [False] * 100)
    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(lambda self: next(flags)))
    metrics, out = _train_tiny(tmp_path, [{"name": "ema", "decay": 0.9}],
                               ["train.warmup_ratio=0.5", "train.lr=1e-3", "train.checkpoint=true"])
    from tricklab.training.checkpoint import latest_checkpoint, load_checkpoint

    _, blobs, state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert state["step"] == 4 and metrics["steps"] == 4
    assert blobs["tricks"][0]["num_updates"] == 4                     # one EMA update per real step
    assert state["batch"] == 6                                        # 6 batches consumed for 4 steps
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    lrs = [(r["step"], r["lr"]) for r in log if "lr" in r]
    # warm-up 2 of 4 steps (transformers' linear schedule: factor s / 2), then linear decay: the schedule sees 4
    # steps, whatever was skipped
    assert lrs == [(1, pytest.approx(5e-4)), (2, pytest.approx(1e-3)), (3, pytest.approx(5e-4)), (4, pytest.approx(0.0))]
    assert blobs["scheduler"]["last_epoch"] == 4
