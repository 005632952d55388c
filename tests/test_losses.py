"""Loss checks: value AND gradient of every loss (functional forms and registered modules built from
config params) against float64 references written here from the papers' formulas, on random inputs of
several shapes; SupCon also vs Khosla et al.'s code, Dice vs Li et al.'s code; focal and self-adjusting
Dice stay finite when p rounds to 1; every registered loss trains a tiny model for 3 steps."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

import tricklab.losses  # noqa: F401  (registration)
from tricklab.types import TrainContext
from tricklab.errors import ConfigError
from tricklab.losses import DEFAULT_LOSS, dice_loss, focal_loss, mse_corr_loss, rdrop_kl, supcon_loss
from tricklab.model import Classifier
from tricklab.registry import LOSSES
from tricklab.types import Batch, Output

C = 3


def tiny_model(num_labels: int = C, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    return Classifier(BertModel(cfg), num_labels)


def make_batch(task: str, n: int = 8, T: int = 10, num_labels: int = C, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, T), generator=g)
    mask = torch.ones(n, T, dtype=torch.long)
    mask[: n // 2, T - 3:] = 0
    if task == "single_label":
        labels = torch.arange(n) % num_labels
    elif task == "multi_label":
        labels = (torch.rand(n, num_labels, generator=g) > 0.5).float()
    else:
        labels = torch.randn(n, generator=g)
    extra = {"soft_labels": torch.randn(n, num_labels, generator=g)}
    return Batch(inputs={"input_ids": ids, "attention_mask": mask}, labels=labels, index=torch.arange(n), extra=extra)


def make_ctx(task: str, num_labels: int = C) -> TrainContext:
    n = 1 if task == "regression" else num_labels
    return TrainContext(task=task, num_labels=n, label_names=[f"c{i}" for i in range(n)],
                        class_counts=[] if task == "regression" else [5, 3, 2][:n], train_size=10, total_steps=3,
                        data={"feature_dim": 32})


# ---------------------------------------------------------------- SupCon


class KhoslaSupConLoss(nn.Module):
    """Oracle: SupConLoss from github.com/HobbitLong/SupContrast (losses.py), re-typed."""

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07):
        super().__init__()
        self.temperature, self.contrast_mode, self.base_temperature = temperature, contrast_mode, base_temperature

    def forward(self, features, labels=None, mask=None):
        device = features.device
        batch_size = features.shape[0]
        if labels is None and mask is None:
            mask = torch.eye(batch_size, dtype=torch.float32).to(device)
        elif labels is not None:
            labels = labels.contiguous().view(-1, 1)
            mask = torch.eq(labels, labels.T).float().to(device)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        if self.contrast_mode == "one":
            anchor_feature, anchor_count = features[:, 0], 1
        else:
            anchor_feature, anchor_count = contrast_feature, contrast_count
        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1,
                                    torch.arange(batch_size * anchor_count).view(-1, 1).to(device), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mask_pos_pairs = mask.sum(1)
        mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()


def supcon_loop(feats, labels, temperature, base_temperature, mode):
    """Straightforward per-anchor loop of eq. 2 of Khosla et al.; anchors without positives skipped.
    float64 torch scalars, so it is differentiable: the reference for SupCon's gradient too."""
    B, V, _ = feats.shape
    z = F.normalize(feats.double(), dim=-1)
    items = [(i, v) for v in range(V) for i in range(B)]
    anchors = [(i, v) for (i, v) in items if mode == "all" or v == 0]
    losses = []
    for a in anchors:
        others = [k for k in items if k != a]
        pos = [k for k in others if labels[k[0]] == labels[a[0]]]
        if not pos:
            continue
        denom = sum(torch.exp(z[a] @ z[k] / temperature) for k in others)
        terms = [torch.log(torch.exp(z[a] @ z[p] / temperature) / denom) for p in pos]
        losses.append(-(temperature / base_temperature) * sum(terms) / len(pos))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_matches_loop_and_khosla(views, mode):
    torch.manual_seed(views)
    B, H = 12, 16
    feats = torch.randn(B, views, H)
    labels = torch.arange(B) % 4                         # every label twice or more: every anchor has a positive
    got = supcon_loss(feats if views > 1 else feats[:, 0], labels, 0.1, 0.07, mode)
    oracle = KhoslaSupConLoss(0.1, mode, 0.07)(F.normalize(feats, dim=-1), labels)
    loop = supcon_loop(feats, labels, 0.1, 0.07, mode)
    torch.testing.assert_close(got, oracle, rtol=1e-5, atol=1e-5)
    assert abs(got.item() - float(loop)) < 1e-4


def test_supcon_excludes_anchors_without_positives():
    torch.manual_seed(0)
    feats = torch.randn(6, 1, 8)
    labels = torch.tensor([0, 0, 1, 2, 3, 3])             # anchors 2 and 3 have no positive
    got = supcon_loss(feats, labels)
    assert abs(got.item() - float(supcon_loop(feats, labels, 0.07, 0.07, "all"))) < 1e-4
    khosla_zero_counted = KhoslaSupConLoss()(F.normalize(feats, dim=-1), labels)   # counts them as 0
    torch.testing.assert_close(khosla_zero_counted, got * 4 / 6, rtol=1e-5, atol=1e-6)
    none = supcon_loss(torch.randn(4, 8, requires_grad=True), torch.arange(4))
    assert none.item() == 0.0 and none.requires_grad


def test_supcon_module_uses_rdrop_views():
    torch.manual_seed(0)
    N = 6
    pooled = torch.randn(2 * N, 16)
    labels = (torch.arange(N) % 3).repeat(2)
    b = Batch(inputs={}, labels=labels, index=torch.arange(2 * N), views=2)
    loss = LOSSES.build("supcon", temperature=0.1)(Output(torch.zeros(2 * N, C), pooled), b)
    want = supcon_loss(torch.stack([pooled[:N], pooled[N:]], 1), labels[:N], 0.1)
    torch.testing.assert_close(loss, want)


# ---------------------------------------------------------------- focal, dice, mse_corr, rdrop_kl


def test_focal_gamma0_is_ce_and_bce():
    torch.manual_seed(0)
    logits, y = torch.randn(10, 4), torch.randint(0, 4, (10,))
    torch.testing.assert_close(focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y))
    t = (torch.rand(10, 4) > 0.5).float()
    torch.testing.assert_close(focal_loss(logits, t, gamma=0.0), F.binary_cross_entropy_with_logits(logits, t))
    # per-class alpha and gamma 2 against the formula
    a = torch.tensor([0.1, 0.2, 0.3, 0.4])
    p_t = logits.softmax(-1)[torch.arange(10), y]
    want = (-a[y] * (1 - p_t) ** 2 * p_t.log()).mean()
    torch.testing.assert_close(focal_loss(logits, y, gamma=2.0, alpha=a), want)
    # sigmoid variant with alpha 0.25 (RetinaNet)
    p = logits.sigmoid()
    pt = torch.where(t == 1, p, 1 - p)
    at = torch.where(t == 1, 0.25, 0.75)
    torch.testing.assert_close(focal_loss(logits, t, 2.0, 0.25), (-at * (1 - pt) ** 2 * pt.log()).mean())


def test_focal_module_balanced_alpha_and_bf16():
    loss = LOSSES.build("focal", gamma=0, alpha="balanced")
    loss.setup(make_ctx("single_label"))
    logits, y = torch.randn(8, C).bfloat16(), torch.arange(8) % C
    got = loss(Output(logits, logits), Batch({}, y, torch.arange(8)))
    assert got.dtype == torch.float32
    w = torch.tensor([5.0, 3, 2]).sum() / (C * torch.tensor([5.0, 3, 2]))
    want = (w[y] * F.cross_entropy(logits.float(), y, reduction="none")).mean()
    torch.testing.assert_close(got, want)


def test_dice_perfect_prediction_is_zero():
    y = torch.tensor([0, 1, 2, 1])
    assert dice_loss(F.one_hot(y, 3).float() * 100, y).item() < 1e-6
    t = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    assert dice_loss((t * 2 - 1) * 100, t).item() < 1e-6
    assert dice_loss(-F.one_hot(y, 3).float() * 100, y, smooth=1e-6).item() > 0.99      # all wrong


def test_mse_corr_formula():
    x, y = torch.tensor([1.0, 2.0, 4.0, 3.0]), torch.tensor([1.5, 2.0, 3.0, 5.0])
    r = torch.corrcoef(torch.stack([x, y]))[0, 1]
    torch.testing.assert_close(mse_corr_loss(x[:, None], y, 0.5), F.mse_loss(x, y) + 0.5 * (1 - r))
    torch.testing.assert_close(mse_corr_loss(x, torch.ones(4)), F.mse_loss(x, torch.ones(4)))   # undefined corr


def test_rdrop_kl_symmetric_and_zero_on_equal():
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    pa, pb = a.softmax(-1), b.softmax(-1)
    want = 0.5 * (F.kl_div(pb.log(), pa, reduction="batchmean") + F.kl_div(pa.log(), pb, reduction="batchmean"))
    torch.testing.assert_close(rdrop_kl(a, b), want)
    assert rdrop_kl(a, a).abs().item() < 1e-7
    assert rdrop_kl(a, a, "multi_label").abs().item() < 1e-7 and rdrop_kl(a, b, "multi_label").item() > 0


# ---------------------------------------------------------------- KD


def kl_teacher_student(teacher_logits, student_logits):
    pt = teacher_logits.softmax(-1)
    return (pt * (pt.log() - student_logits.log_softmax(-1))).sum(-1).mean()


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_kd_alpha1_T1_is_kl_to_teacher(kind):
    b = make_batch("single_label")
    teacher = b.extra["soft_labels"]
    if kind == "probs":
        b.extra["soft_labels"] = teacher.softmax(-1)
    student = torch.randn(len(b), C)
    loss = LOSSES.build("kd", alpha=1.0, temperature=1.0, soft_labels=kind)
    loss.setup(make_ctx("single_label"))
    torch.testing.assert_close(loss(Output(student, student), b), kl_teacher_student(teacher, student))
    # alpha 0.5, T 2: half T²·KL at T plus half CE
    loss = LOSSES.build("kd", alpha=0.5, temperature=2.0, soft_labels=kind)
    want = 0.5 * 4 * kl_teacher_student(teacher / 2, student / 2) + 0.5 * F.cross_entropy(student, b.labels)
    torch.testing.assert_close(loss(Output(student, student), b), want, rtol=1e-4, atol=1e-5)


def test_kd_from_teacher_run_folder_and_scl_recipe(tmp_path):
    from transformers import BertTokenizerFast

    from tricklab.model import save_model

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})    # transformers 5 ignores vocab_file= here
    teacher = tiny_model(seed=1).eval()
    meta = {"task": "single_label", "num_labels": C, "labels": {"names": ["c0", "c1", "c2"]},
            "model": {"pooling": "pooler", "head": "linear", "head_args": {}, "dropout": 0.1}}
    save_model(teacher, tok, tmp_path / "run" / "model", meta)
    b = make_batch("single_label")
    student = torch.randn(len(b), C)
    loss = LOSSES.build("kd", alpha=1.0, temperature=1.0, teacher=str(tmp_path / "run"))
    loss.setup(make_ctx("single_label"))
    with torch.no_grad():
        t_logits = teacher(**b.inputs).logits
    torch.testing.assert_close(loss(Output(student, student), b), kl_teacher_student(t_logits, student),
                               rtol=1e-4, atol=1e-5)
    assert not any(True for _ in loss.parameters())                      # the teacher is not trained
    scl = LOSSES.build("kd", alpha=0.7, temperature=2.0, teacher=str(tmp_path / "run"),
                       hard={"name": "supcon", "temperature": 0.1})
    scl.setup(make_ctx("single_label"))
    pooled = torch.randn(len(b), 32)
    want = 0.7 * 4 * kl_teacher_student(t_logits / 2, student / 2) + 0.3 * supcon_loss(pooled, b.labels, 0.1)
    torch.testing.assert_close(scl(Output(student, pooled), b), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="labels"):
        LOSSES.build("kd", teacher=str(tmp_path / "run")).setup(make_ctx("single_label", num_labels=2))


@pytest.mark.parametrize("name,params,match", [
    ("focal", {"gamma": -1}, "gamma"), ("dice", {"smooth": -1}, "smooth"), ("dice", {"alpha": -0.5}, "alpha"),
    ("supcon", {"contrast_mode": "both"}, "contrast_mode"), ("supcon", {"temperature": 0}, "temperature"),
    ("kd", {}, "exactly one"), ("kd", {"soft_labels": "probabilities"}, "soft_labels"),
    ("kd", {"soft_labels": "probs", "alpha": 2}, "alpha"), ("mse_corr", {"corr_weight": "x"}, "corr_weight"),
])
def test_bad_params_raise_config_error(name, params, match):
    with pytest.raises(ConfigError, match=match):
        LOSSES.build(name, **params)


# ---------------------------------------------------------------- every registered loss trains

LOSS_PARAMS = {"kd": {"soft_labels": "logits"}, "supcon": {"projection": 16}}


def train_steps(task: str, main: nn.Module, aux: list[tuple[float, nn.Module]] = (), steps: int = 3,
                head_trains: bool = True) -> list[float]:
    model = tiny_model(1 if task == "regression" else C)
    ctx = make_ctx(task)
    for m in [main] + [m for _, m in aux]:
        m.setup(ctx)
    params = list(model.parameters()) + [p for m in [main] + [m for _, m in aux] for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    before = model.classifier.weight.detach().clone()
    enc_before = model.encoder.encoder.layer[0].output.dense.weight.detach().clone()
    totals = []
    for s in range(steps):
        b = make_batch(task, seed=s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**b.inputs)
            total = main(out, b) + sum(w * m(out, b) for w, m in aux)
        assert torch.isfinite(total) and total.dtype == torch.float32
        total.backward()
        opt.step()
        opt.zero_grad()
        totals.append(total.item())
    assert not torch.equal(enc_before, model.encoder.encoder.layer[0].output.dense.weight)
    assert torch.equal(before, model.classifier.weight) != head_trains     # SupCon alone leaves the head alone
    return totals


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_trains_alone(name):
    for task in LOSSES[name].tasks:  # every task the loss supports
        loss = LOSSES.build(name, **LOSS_PARAMS.get(name, {}))
        assert len(train_steps(task, loss, head_trains=name != "supcon")) == 3


def test_compatible_losses_together():
    task = "single_label"
    compatible = [n for n in sorted(LOSSES) if task in LOSSES[n].tasks and n != DEFAULT_LOSS[task]]
    aux = [(0.2, LOSSES.build(n, **LOSS_PARAMS.get(n, {}))) for n in compatible]
    totals = train_steps(task, LOSSES.build("ce", label_smoothing=0.1, class_weights="balanced"), aux)
    assert len(totals) == 3 and {"supcon", "kd", "focal", "dice"} <= set(compatible)


# ---------------------------------------------------------------- focal: finite for every gamma >= 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_focal_finite_when_p_t_rounds_to_one(sigmoid, dtype):
    """0 < gamma < 1: d/du u^gamma is infinite at u = 1 - p_t = 0, which fp32 reaches at a logit
    margin of ~17; the loss must stay finite (value and gradient) at any margin."""
    y = torch.tensor([0, 1, 2, 0])
    onehot = F.one_hot(y, 3).float()
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0])[:, None]              # last row: confidently wrong
    for gamma in (0.1, 0.25, 0.5, 0.9, 1.0, 2.0):
        for margin in (20.0, 50.0, 200.0):
            x = ((2 * onehot - 1) * margin * sign if sigmoid else onehot * margin * sign).to(dtype)
            x.requires_grad_()
            loss = focal_loss(x, onehot if sigmoid else y, gamma=gamma, alpha=0.25 if sigmoid else None,
                              sigmoid=sigmoid)
            (g,) = torch.autograd.grad(loss, x)
            assert torch.isfinite(loss), (gamma, margin, loss)
            assert torch.isfinite(g).all(), (gamma, margin, g)
            assert g.abs().max() <= 1.0, (gamma, margin, g)   # |d focal/dx| <= |d CE/dx| scale



def test_dice_alpha_finite_when_p_rounds_to_one():
    """(1 - p)^alpha with alpha < 1 has the same infinite slope at p = 1 as focal's factor."""
    y = torch.tensor([0, 1, 2, 0])
    onehot = F.one_hot(y, 3).float()
    for alpha in (0.01, 0.5, 1.0):
        for margin in (20.0, 200.0):
            for x, t in ((onehot * margin, y), ((2 * onehot - 1) * margin, onehot)):   # softmax, sigmoid
                x = x.clone().requires_grad_()
                loss = dice_loss(x, t, alpha=alpha)
                (g,) = torch.autograd.grad(loss, x)
                assert torch.isfinite(loss) and torch.isfinite(g).all(), (alpha, margin, g)


# ---------------------------------------------------------------- reference checks: value AND gradient
# Every reference below is written from the paper's formula in float64 (plain tensor ops or loops),
# never by calling the code under test; the code runs in float32 and must match value and gradient
# (torch.autograd.grad w.r.t. the logits / features) on random inputs of several shapes.

SHAPES = [(1, 2), (6, 3), (16, 5)]            # (B, C)


def value_and_grad(fn, *inputs):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    assert out.requires_grad, "the loss is detached from the graph"
    return out, torch.autograd.grad(out, leaves, allow_unused=True, materialize_grads=True)  # unused: zeros


def assert_matches(fn, ref, *inputs, rtol=1e-4, atol=1e-6):
    """fn on float32 copies of inputs vs ref on float64 copies: value and gradient w.r.t. every input."""
    got, g = value_and_grad(fn, *[x.float() for x in inputs])
    want, gw = value_and_grad(ref, *[x.double() for x in inputs])
    assert got.dim() == 0 and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=lambda m: f"value: {m}")
    for a, b in zip(g, gw):
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol, msg=lambda m: f"gradient: {m}")


def rand_case(B, C, seed, multi=False):
    """logits (B, C) with a spread of confidences; labels (B,) long or (B, C) {0, 1}; class counts."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, generator=g) * 2
    y = (torch.rand(B, C, generator=g) > 0.5).float() if multi else torch.randint(0, C, (B,), generator=g)
    counts = torch.randint(1, 30, (C,), generator=g).tolist()
    return x, y, counts


def ctx_for(task, counts):
    """train_size: sum of counts (single-label), or more than any label's count (multi-label)."""
    C = len(counts)
    n = sum(counts) if task == "single_label" else max(counts) + 7
    return TrainContext(task=task, num_labels=C, label_names=[f"c{i}" for i in range(C)], class_counts=counts,
                        train_size=n, total_steps=1)


def module_fn(name, params, task, labels, counts, extra=None, views=1):
    """The registered loss built from config params (setup with a context), as a function of logits."""
    loss = LOSSES.build(name, **params)
    loss.setup(ctx_for(task, counts) if counts else make_ctx(task))
    b = Batch({}, labels, torch.arange(labels.shape[0]), extra=extra or {}, views=views)
    return lambda z: loss(Output(z, z), b)


def ref_ce(x, y, w=None, eps=0.0):
    """Cross-entropy vs the smoothed target (1 - eps)·onehot + eps/C (Szegedy et al. 2016,
    arXiv:1512.00567). Class weights have no paper; we follow PyTorch's F.cross_entropy convention:
    example i weighs its true-class term by w_{y_i} and its uniform term by w_c, and the sum is
    divided by sum_i w_{y_i}."""
    B, C = x.shape
    w = torch.ones(C, dtype=x.dtype) if w is None else torch.as_tensor(w, dtype=x.dtype)
    logp = x - torch.log(torch.exp(x).sum(1, keepdim=True))                      # (B, C)
    rows = torch.arange(B)
    num = ((1 - eps) * w[y] * -logp[rows, y]).sum() + eps / C * (w * -logp).sum()
    return num / w[y].sum()


def balanced_weights(counts):
    """n / (C·count_c), King & Zeng's / sklearn's "balanced"."""
    n, C = sum(counts), len(counts)
    return [n / (C * k) for k in counts]


@pytest.mark.parametrize("B,C", SHAPES)
def test_ce_module_matches_reference(B, C):
    x, y, counts = rand_case(B, C, seed=B * C)
    wlist = torch.rand(C, generator=torch.Generator().manual_seed(C)).add(0.2).tolist()
    for eps in (0.0, 0.1, 0.3):
        for spec, w in ((None, None), (wlist, wlist), ("balanced", balanced_weights(counts))):
            fn = module_fn("ce", {"label_smoothing": eps, "class_weights": spec}, "single_label", y, counts)
            assert_matches(fn, lambda z: ref_ce(z, y, w, eps), x)


def ref_bce(x, t, pw=None):
    """-[pw_c·t·log σ(x) + (1 - t)·log(1 - σ(x))], mean over the B·C entries."""
    pw = torch.ones(x.shape[1], dtype=x.dtype) if pw is None else torch.as_tensor(pw, dtype=x.dtype)
    p = 1 / (1 + torch.exp(-x))
    return -(pw * t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


@pytest.mark.parametrize("B,C", SHAPES)
def test_bce_module_matches_reference(B, C):
    x, t, counts = rand_case(B, C, seed=B + C, multi=True)
    n = max(counts) + 7                                                   # ctx_for's train_size
    plist = torch.rand(C, generator=torch.Generator().manual_seed(C)).mul(5).add(0.1).tolist()
    for spec, pw in ((None, None), (2.5, [2.5] * C), (plist, plist), ("balanced", [(n - k) / k for k in counts])):
        fn = module_fn("bce", {"pos_weight": spec}, "multi_label", t, counts)
        assert_matches(fn, lambda z: ref_bce(z, t, pw), x)


def ref_focal_softmax(x, y, gamma, alpha=None):
    """Lin et al. 2017 (arXiv:1708.02002) eq. 5 on softmax: -alpha_y (1 - p_y)^gamma log p_y, mean over B."""
    B, C = x.shape
    p_y = (torch.exp(x) / torch.exp(x).sum(1, keepdim=True))[torch.arange(B), y]   # (B,)
    a = 1.0 if alpha is None else (torch.tensor(alpha, dtype=x.dtype)[y] if isinstance(alpha, list) else alpha)
    return (-a * (1 - p_y) ** gamma * torch.log(p_y)).mean()


def ref_focal_sigmoid(x, t, gamma, alpha=None):
    """Eq. 5 per binary entry: p_t = p if t = 1 else 1 - p; alpha_t = alpha_c if t = 1 else 1 - alpha_c
    (alpha weighs the positives, RetinaNet); mean over the B·C entries."""
    p = 1 / (1 + torch.exp(-x))
    pt = torch.where(t == 1, p, 1 - p)
    a = torch.ones_like(x) if alpha is None else torch.as_tensor(alpha, dtype=x.dtype).expand_as(x)
    at = torch.where(t == 1, a, 1 - a) if alpha is not None else a
    return (-at * (1 - pt) ** gamma * torch.log(pt)).mean()


@pytest.mark.parametrize("B,C", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_matches_reference(B, C, gamma):
    x, y, counts = rand_case(B, C, seed=7 * B + C)
    _, t, _ = rand_case(B, C, seed=B, multi=True)
    alist = torch.rand(C, generator=torch.Generator().manual_seed(C)).add(0.05).clamp(max=0.95).tolist()
    for alpha in (None, 0.25, alist):                                     # functional form
        a = torch.tensor(alpha) if isinstance(alpha, list) else alpha
        assert_matches(lambda z: focal_loss(z, y, gamma, a), lambda z: ref_focal_softmax(z, y, gamma, alpha), x)
        assert_matches(lambda z: focal_loss(z, t, gamma, a, sigmoid=True),
                       lambda z: ref_focal_sigmoid(z, t, gamma, alpha), x)
    # modules: config params -> functional form, "balanced" from the run's counts
    n_pos = max(counts) + 7                                               # ctx_for's multi-label train_size
    for spec, a_soft, a_sig in ((None, None, None), (0.25, 0.25, 0.25), (alist, alist, alist),
                                ("balanced", balanced_weights(counts), [1 - k / n_pos for k in counts])):
        fn = module_fn("focal", {"gamma": gamma, "alpha": spec}, "single_label", y, counts)
        assert_matches(fn, lambda z: ref_focal_softmax(z, y, gamma, a_soft), x)
        fn = module_fn("focal", {"gamma": gamma, "alpha": spec}, "multi_label", t, counts)
        assert_matches(fn, lambda z: ref_focal_sigmoid(z, t, gamma, a_sig), x)
    onehot = F.one_hot(y, C).double()                                     # single-label, sigmoid: true
    fn = module_fn("focal", {"gamma": gamma, "alpha": 0.25, "sigmoid": True}, "single_label", y, counts)
    assert_matches(fn, lambda z: ref_focal_sigmoid(z, onehot, gamma, 0.25), x)


def ref_dice(x, y, sigmoid, smooth, square, alpha):
    """Soft Dice per class over the batch (Milletari et al. 2016, arXiv:1606.04797), probabilities
    replaced by (1 - p)^alpha·p (Li et al. 2020, arXiv:1911.02855); 1 - mean over classes.
    y: (B, C) one-hot or multi-hot."""
    C = x.shape[1]
    p = 1 / (1 + torch.exp(-x)) if sigmoid else torch.exp(x) / torch.exp(x).sum(1, keepdim=True)
    q = (1 - p) ** alpha * p
    scores = []
    for c in range(C):                                    # one score per class, sums over the batch
        inter = (q[:, c] * y[:, c]).sum()
        den = (q[:, c] ** 2 + y[:, c] ** 2).sum() if square else (q[:, c] + y[:, c]).sum()
        scores.append((2 * inter + smooth) / (den + smooth))
    return 1 - sum(scores) / C


@pytest.mark.parametrize("B,C", SHAPES)
def test_dice_matches_reference(B, C):
    x, y, counts = rand_case(B, C, seed=3 * B + C)
    _, t, _ = rand_case(B, C, seed=B + 1, multi=True)
    onehot = F.one_hot(y, C).double()
    for smooth in (0.0, 1.0):
        for square in (False, True):
            for alpha in (0.0, 0.3, 1.5):
                if smooth == 0 and B == 1:
                    continue   # a class absent from a 1-example batch: 0/0 is legitimately unstable
                assert_matches(lambda z: dice_loss(z, y, smooth, square=square, alpha=alpha),
                               lambda z: ref_dice(z, onehot, False, smooth, square, alpha), x)
                assert_matches(lambda z: dice_loss(z, t, smooth, sigmoid=True, square=square, alpha=alpha),
                               lambda z: ref_dice(z, t, True, smooth, square, alpha), x)
    params = {"smooth": 0.5, "square": True, "alpha": 0.7}                 # module wiring
    assert_matches(module_fn("dice", params, "single_label", y, counts),
                   lambda z: ref_dice(z, onehot, False, 0.5, True, 0.7), x)
    assert_matches(module_fn("dice", params, "multi_label", t, counts),
                   lambda z: ref_dice(z, t, True, 0.5, True, 0.7), x)


def test_dice_alpha0_is_todays_soft_dice_exactly():
    x, y, _ = rand_case(9, 4, seed=1)
    p, oh = x.softmax(-1), F.one_hot(y, 4).float()
    for square in (False, True):
        den = (p * p).sum(0) + (oh * oh).sum(0) if square else p.sum(0) + oh.sum(0)
        assert torch.equal(dice_loss(x, y, 1.0, square=square, alpha=0.0),
                           1 - ((2 * (p * oh).sum(0) + 1.0) / (den + 1.0)).mean())


def shannon_dice_oracle(logits, target, smooth, square, alpha):
    """Li et al.'s reference code re-typed (github.com/ShannonAI/dice_loss_for_NLP, loss/dice_loss.py,
    DiceLoss._multiple_class + _compute_dice_loss, no OHEM, no mask, reduction mean)."""
    flat_input = logits.softmax(1)
    flat_target = F.one_hot(target, logits.shape[-1]).float()
    loss = None
    for c in range(logits.shape[-1]):
        fi, ft = flat_input[:, c].view(-1, 1), flat_target[:, c].view(-1, 1)
        fi = ((1 - fi) ** alpha) * fi
        inter = torch.sum(fi * ft, -1)                                         # per example
        if not square:
            l_c = 1 - ((2 * inter + smooth) / (fi.sum() + ft.sum() + smooth))   # batch-wide denominator
        else:
            l_c = 1 - ((2 * inter + smooth) / (torch.sum(fi ** 2, -1) + torch.sum(ft ** 2, -1) + smooth))
        loss = l_c if loss is None else loss + l_c                            # classes summed
    return loss.mean()


def test_dice_vs_authors_code():
    """Where we follow Li et al.'s code: with one example (their per-example numerator and our batch
    sums coincide) ours is theirs / C (they sum the class losses, we average). Where we differ: with
    B > 1 they pair a per-example numerator with a batch-wide (or, squared, per-example) denominator;
    we keep one set-level Dice per class over the batch (the F1 the paper motivates)."""
    for alpha in (0.0, 0.5, 1.0):
        for square in (False, True):
            x, y, _ = rand_case(1, 4, seed=int(alpha * 10) + square)
            want = shannon_dice_oracle(x, y, 1e-4, square, alpha) / 4
            torch.testing.assert_close(dice_loss(x, y, 1e-4, square=square, alpha=alpha), want)
    x, y, _ = rand_case(8, 4, seed=0)
    assert abs(dice_loss(x, y, 1.0, alpha=0.5) - shannon_dice_oracle(x, y, 1.0, False, 0.5) / 4) > 1e-3


def ref_mse_corr(x, y, w):
    """MSE + w·(1 - Pearson r), r = sum (x - x̄)(y - ȳ) / sqrt(sum (x - x̄)² · sum (y - ȳ)²)."""
    xc, yc = x - x.mean(), y - y.mean()
    r = (xc * yc).sum() / torch.sqrt((xc ** 2).sum() * (yc ** 2).sum())
    return ((x - y) ** 2).mean() + w * (1 - r)


@pytest.mark.parametrize("B", [2, 5, 16])
def test_mse_and_mse_corr_match_reference(B):
    g = torch.Generator().manual_seed(B)
    x, y = torch.randn(B, 1, generator=g), torch.randn(B, generator=g)
    y64 = y.double()
    assert_matches(module_fn("mse", {}, "regression", y, None), lambda z: ((z[:, 0] - y64) ** 2).mean(), x)
    for w in (0.0, 0.5, 2.0):
        assert_matches(module_fn("mse_corr", {"corr_weight": w}, "regression", y, None),
                       lambda z: ref_mse_corr(z[:, 0], y64, w), x)
        assert_matches(lambda z: mse_corr_loss(z, y, w), lambda z: ref_mse_corr(z[:, 0], y64, w), x)
    # fallbacks: constant targets (correlation undefined) and B < 2 -> the MSE alone
    for const in (0.1, 0.3, 2.9):                 # y - mean(y) of these is not exactly 0 in float32
        yc = torch.full((B,), const)
        assert_matches(lambda z: mse_corr_loss(z, yc, 1.0), lambda z: ((z[:, 0] - const) ** 2).mean(), x)
    assert_matches(lambda z: mse_corr_loss(z, y[:1], 1.0), lambda z: ((z[0, 0] - y64[0]) ** 2), x[:1])


def ref_kd(s, teacher, kind, T, alpha, labels):
    """Hinton et al. 2015 (arXiv:1503.02531): alpha·T²·KL(q ‖ softmax(s/T)) + (1 - alpha)·CE, mean over B;
    q = softmax(z/T) for teacher logits z, and q ∝ p^(1/T) for teacher probabilities p (z = log p)."""
    q = teacher ** (1 / T) if kind == "probs" else torch.exp(teacher / T)
    q = q / q.sum(-1, keepdim=True)
    log_s = s / T - torch.log(torch.exp(s / T).sum(-1, keepdim=True))
    kl = (q * (torch.log(q) - log_s)).sum(-1).mean()
    return alpha * T ** 2 * kl + (1 - alpha) * ref_ce(s, labels)


@pytest.mark.parametrize("B,C", SHAPES)
@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_kd_module_matches_reference(B, C, kind):
    x, y, counts = rand_case(B, C, seed=B * 11 + C)
    z_t = torch.randn(B, C, generator=torch.Generator().manual_seed(B)) * 2
    soft = z_t.softmax(-1) if kind == "probs" else z_t
    for views in (1, 2):                          # views 2: the batch R-Drop stacked, one teacher row per example
        xs, ys, ss = (x, y, soft) if views == 1 else (torch.cat([x, -x]), y.repeat(2), soft.repeat(2, 1))
        for alpha in (1.0, 0.3):
            for T in (1.0, 2.5):
                fn = module_fn("kd", {"soft_labels": kind, "alpha": alpha, "temperature": T}, "single_label",
                               ys, counts, extra={"soft_labels": ss}, views=views)
                assert_matches(fn, lambda z: ref_kd(z, ss.double(), kind, T, alpha, ys), xs)


def ref_rdrop(a, b, task):
    """R-Drop (Liang et al. 2021, arXiv:2106.14448) eq. 2: (KL(P1‖P2) + KL(P2‖P1)) / 2, summed over the
    distribution, mean over B. multi_label: one Bernoulli per label, the KLs summed over labels;
    regression: mean squared difference."""
    if task == "regression":
        return ((a - b) ** 2).mean()
    if task == "multi_label":
        p, q = 1 / (1 + torch.exp(-a)), 1 / (1 + torch.exp(-b))
        kl_pq = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
        kl_qp = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
        return 0.5 * (kl_pq + kl_qp).sum(-1).mean()
    p = torch.exp(a) / torch.exp(a).sum(-1, keepdim=True)
    q = torch.exp(b) / torch.exp(b).sum(-1, keepdim=True)
    return 0.5 * ((p * torch.log(p / q)).sum(-1) + (q * torch.log(q / p)).sum(-1)).mean()


@pytest.mark.parametrize("B,C", SHAPES)
@pytest.mark.parametrize("task", ["single_label", "multi_label", "regression"])
def test_rdrop_kl_matches_reference(B, C, task):
    g = torch.Generator().manual_seed(B * C)
    C = 1 if task == "regression" else C
    a = torch.randn(B, C, generator=g) * 2
    b = a + torch.randn(B, C, generator=g)                         # two passes that disagree somewhat
    assert_matches(lambda u, v: rdrop_kl(u, v, task), lambda u, v: ref_rdrop(u, v, task), a, b)


@pytest.mark.parametrize("views,mode,labelled", [(1, "all", True), (2, "all", True), (2, "one", True),
                                                 (2, "all", False)])
def test_supcon_gradient_matches_loop(views, mode, labelled):
    g = torch.Generator().manual_seed(views)
    feats = torch.randn(8, views, 6, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 0, 2])               # label 3 alone: an anchor without positives
    lab = labels if labelled else None
    assert_matches(lambda f: supcon_loss(f, lab, 0.1, 0.07, mode),
                   lambda f: supcon_loop(f, labels if labelled else torch.arange(8), 0.1, 0.07, mode), feats)


REFERENCE_TESTED = {"ce", "bce", "focal", "dice", "mse", "mse_corr", "kd",
                    "supcon"}   # supcon: the functional form above; the module in test_supcon_module_uses_rdrop_views


def test_every_registered_loss_has_a_reference_test():
    assert set(LOSSES) <= REFERENCE_TESTED, f"write a value+gradient reference test for {set(LOSSES) - REFERENCE_TESTED}"


# ---------------------------------------------------------------- KD and SupCon: configuration and wiring


def test_kd_defaults_alpha0_and_pure_distillation_without_labels():
    """Defaults alpha 0.5, T 2 (the docstring's); alpha 0 is the hard loss alone; alpha 1 needs no gold labels."""
    x, y, _ = rand_case(6, C, seed=3)
    z_t = torch.randn(6, C, generator=torch.Generator().manual_seed(4))
    fn = module_fn("kd", {"soft_labels": "logits"}, "single_label", y, None, extra={"soft_labels": z_t})
    assert_matches(fn, lambda z: ref_kd(z, z_t.double(), "logits", 2.0, 0.5, y), x)
    fn = module_fn("kd", {"soft_labels": "logits", "alpha": 0}, "single_label", y, None, extra={"soft_labels": z_t})
    assert_matches(fn, lambda z: ref_ce(z, y), x)
    loss = LOSSES.build("kd", soft_labels="logits", alpha=1, temperature=1.5)
    unlabelled = Batch({}, None, torch.arange(6), extra={"soft_labels": z_t})
    got = loss(Output(x, x), unlabelled)
    torch.testing.assert_close(got.double(), ref_kd(x.double(), z_t.double(), "logits", 1.5, 1.0, y), rtol=1e-5, atol=1e-6)


def test_kd_hard_loss_is_set_up_and_configurable(tmp_path):
    loss = LOSSES.build("kd", soft_labels="probs", hard={"name": "supcon", "projection": 4})
    assert loss.hard.head is None
    loss.setup(make_ctx("single_label"))                       # the hard loss gets the context: feature_dim 32
    assert isinstance(loss.hard.head, nn.Sequential) and loss.hard.head[0].in_features == 32
    with pytest.raises(ConfigError, match=r"^loss kd: hard must name another loss \(ce, supcon, focal, ...\), got"):
        LOSSES.build("kd", soft_labels="probs", hard="kd")
    with pytest.raises(ConfigError, match=r"^loss kd: hard must name another loss.*got \{'temperature': 0.1\}"):
        LOSSES.build("kd", soft_labels="probs", hard={"temperature": 0.1})


@pytest.mark.parametrize("params,match", [
    ({"soft_labels": "probs", "temperature": 0}, r"^loss kd: temperature must be > 0 \(1-4 is usual\), got 0$"),
    ({"soft_labels": "probs", "temperature": "2"}, r"^loss kd: temperature must be > 0 .*got '2'$"),
    ({"soft_labels": "probs", "alpha": -0.1}, r"^loss kd: alpha must be in \[0, 1\] .*got -0.1$"),
    ({"soft_labels": "probs", "alpha": "1"}, r"^loss kd: alpha must be in \[0, 1\]"),
    ({"soft_labels": "probs", "teacher": "x"},
     r"^loss kd: give exactly one of teacher: <run folder> or soft_labels: probs\|logits "
     r"\(got teacher='x', soft_labels='probs'\)$"),
    ({"soft_labels": "p"}, r"^loss kd: soft_labels must be 'probs' or 'logits' \(what the column holds\), got 'p'$"),
    ({"temperature": -1}, r"^loss supcon: temperature must be a positive number \(0.07 is usual\), got -1$"),
    ({"base_temperature": 0}, r"^loss supcon: base_temperature must be a positive number .*got 0$"),
    ({"base_temperature": "x"}, r"^loss supcon: base_temperature must be"),
    ({"contrast_mode": "One"}, r"^loss supcon: contrast_mode must be 'all' or 'one', got 'One'$"),
    ({"projection": 0}, r"^loss supcon: projection must be an output size \(e.g. 128\) or null, got 0$"),
    ({"projection": "8"}, r"^loss supcon: projection must be an output size"),
    ({"projection": 2.0}, r"^loss supcon: projection must be an output size"),
])
def test_kd_supcon_bad_params_one_clear_line(params, match):
    name = "kd" if match.startswith("^loss kd") else "supcon"
    with pytest.raises(ConfigError, match=match):
        LOSSES.build(name, **params)


def test_kd_errors_name_the_mismatch():
    loss = LOSSES.build("kd", soft_labels="logits")
    b = Batch({}, torch.zeros(5, dtype=torch.long), torch.arange(5))
    with pytest.raises(ConfigError, match=r"^loss kd: soft_labels is set but the batch has no soft labels; fix: give "
                                          r"the data a soft-label column \(one probability or logit per class\), "
                                          r"or use teacher: <run>$"):
        loss(Output(torch.zeros(5, C), None), b)
    b.extra["soft_labels"] = torch.zeros(5, C + 1)
    with pytest.raises(ConfigError, match=rf"^loss kd: teacher gives {C + 1} classes but the model {C}$"):
        loss(Output(torch.zeros(5, C), None), b)


class FakeTeacher(nn.Module):
    """A teacher whose parameters sit on `device`; records where it is moved; logits = 2·one-hot(first id mod C)."""

    def __init__(self, device: str):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, device=device))
        self.moves: list = []

    def to(self, device):  # noqa: D401
        self.moves.append(device)
        return self

    def forward(self, input_ids, attention_mask):
        return Output(2.0 * F.one_hot(input_ids[:, 0] % C, C).float(), None)


def test_kd_teacher_follows_the_batch_device():
    loss = LOSSES.build("kd", teacher="unused", alpha=1.0, temperature=2.0)
    b = make_batch("single_label", n=4)
    loss._teacher = [FakeTeacher("meta")]                  # elsewhere than the batch (cpu): moved to it
    student = torch.randn(4, C)
    got = loss(Output(student, None), b)
    assert loss._teacher[0].moves == [torch.device("cpu")]
    t_logits = 2.0 * F.one_hot(b.inputs["input_ids"][:, 0] % C, C).double()
    torch.testing.assert_close(got.double(), ref_kd(student.double(), t_logits, "logits", 2.0, 1.0, b.labels),
                               rtol=1e-5, atol=1e-6)
    loss._teacher = [FakeTeacher("cpu")]                   # already there: not moved
    loss(Output(student, None), b)
    assert loss._teacher[0].moves == []


def save_teacher(path, names=("c0", "c1", "c2"), num_labels=C):
    from transformers import BertTokenizerFast

    from tricklab.model import save_model

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab))
    meta = {"task": "single_label", "num_labels": num_labels, "labels": {"names": list(names)},
            "model": {"pooling": "pooler", "head": "linear", "head_args": {}, "dropout": 0.1}}
    save_model(tiny_model(num_labels, seed=1).eval(), BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}),
               path / "model", meta)
    return path / "model"


def test_kd_teacher_setup_model_folder_device_and_label_checks(tmp_path):
    model_dir = save_teacher(tmp_path / "run")
    loss = LOSSES.build("kd", teacher=str(model_dir))       # the model folder itself, not the run folder
    ctx = make_ctx("single_label")
    loss.setup(ctx)
    (teacher,) = loss._teacher
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    loss = LOSSES.build("kd", teacher=str(tmp_path / "run"))
    ctx.device = torch.device("meta")                        # the run's device: the teacher is moved there
    loss.setup(ctx)
    assert next(loss._teacher[0].parameters()).device.type == "meta"
    with pytest.raises(ConfigError, match=r"^loss kd: teacher \S+ has 3 labels but this run has 2; fix: distil"):
        LOSSES.build("kd", teacher=str(tmp_path / "run")).setup(make_ctx("single_label", num_labels=2))
    other = make_ctx("single_label")
    other.label_names = ["c0", "c2", "c1"]
    with pytest.raises(ConfigError, match=r"^loss kd: teacher \S+ labels \['c0', 'c1', 'c2'\] differ from this run's "
                                          r"\['c0', 'c2', 'c1'\]; fix: use the same class list$"):
        LOSSES.build("kd", teacher=str(tmp_path / "run")).setup(other)


def test_supcon_defaults_projection_head_and_setup():
    g = torch.Generator().manual_seed(5)
    pooled, labels = torch.randn(8, 6, generator=g), torch.tensor([0, 1, 0, 2, 1, 2, 0, 1])
    b = Batch({}, labels, torch.arange(8))
    torch.testing.assert_close(LOSSES.build("supcon")(Output(None, pooled), b),
                               supcon_loss(pooled[:, None], labels, 0.07, 0.07, "all"))
    one = LOSSES.build("supcon", contrast_mode="one", temperature=0.2)
    b2 = Batch({}, labels.repeat(2), torch.arange(16), views=2)
    two = torch.cat([pooled, pooled.flip(0)])
    torch.testing.assert_close(one(Output(None, two), b2),
                               supcon_loss(torch.stack([pooled, pooled.flip(0)], 1), labels, 0.2, 0.07, "one"))
    assert LOSSES.build("supcon", in_dim=6).head is None      # no projection asked: none built
    loss = LOSSES.build("supcon", projection=1, in_dim=6)       # Linear(6, 6) - ReLU - Linear(6, 1), as in the paper
    lin1, relu, lin2 = loss.head
    assert (lin1.in_features, lin1.out_features, lin2.in_features, lin2.out_features) == (6, 6, 6, 1)
    assert isinstance(relu, nn.ReLU)
    z = lin2(torch.relu(lin1(pooled)))
    torch.testing.assert_close(loss(Output(None, pooled), b), supcon_loss(z[:, None], labels, 0.07, 0.07, "all"))
    late = LOSSES.build("supcon", projection=3)                 # no in_dim: built at setup from feature_dim
    late.setup(make_ctx("single_label"))
    head = late.head
    assert head[0].in_features == 32 and head[2].out_features == 3
    late.setup(make_ctx("single_label"))
    assert late.head is head                                     # set up twice (resume): the trained head is kept
    ctx = make_ctx("single_label")
    ctx.data = {}
    with pytest.raises(ConfigError, match=r"^loss supcon: projection needs the feature size; fix: add in_dim: <size "
                                          r"of out.pooled> \(the encoder's hidden size for pooler/cls/mean pooling\)$"):
        LOSSES.build("supcon", projection=3).setup(ctx)


# ---------------------------------------------------------------- Dice, MSE-corr, BCE: defaults and edge cases


def test_dice_defaults_and_sigmoid_with_class_indices():
    from tricklab.losses.functional import dice_loss as dice_fn

    x, y, _ = rand_case(6, 4, seed=21)                           # B = 6 != C = 4
    onehot = F.one_hot(y, 4).double()
    # defaults: smooth 1, no square, alpha 0, softmax for class indices (function and registered module)
    assert_matches(lambda z: dice_fn(z, y), lambda z: ref_dice(z, onehot, False, 1.0, False, 0.0), x)
    assert_matches(module_fn("dice", {}, "single_label", y, None), lambda z: ref_dice(z, onehot, False, 1.0, False, 0.0), x)
    # sigmoid=True with class indices: one sigmoid per class against the one-hot targets
    assert_matches(lambda z: dice_fn(z, y, sigmoid=True), lambda z: ref_dice(z, onehot, True, 1.0, False, 0.0), x)
    assert_matches(lambda z: dice_fn(z, y, 0.5, True, False, 0.3), lambda z: ref_dice(z, onehot, True, 0.5, False, 0.3), x)
    d = LOSSES.build("dice")
    assert (d.smooth, d.square, d.alpha) == (1.0, False, 0.0)
    assert_matches(module_fn("dice", {"smooth": 0}, "single_label", y, None),        # smooth 0 is allowed
                   lambda z: ref_dice(z, onehot, False, 0.0, False, 0.0), x)
    for bad in (True, "0.5", -1):
        with pytest.raises(ConfigError, match="alpha"):
            LOSSES.build("dice", alpha=bad)


def test_mse_corr_defaults_two_examples_and_constant_predictions():
    from tricklab.losses.functional import pearson

    x, y = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])       # two examples: r = -1, defined
    assert mse_corr_loss(x, y).item() == pytest.approx(1.0 + 1.0 * 2.0)   # default weight 1
    loss = LOSSES.build("mse_corr")
    assert loss(Output(x[:, None], None), Batch({}, y, torch.arange(2))).item() == pytest.approx(3.0)
    assert mse_corr_loss(x[:1], y[:1]).item() == pytest.approx(1.0)    # one example: no correlation term
    const = torch.full((5,), 0.3)                                     # e.g. a fresh head: finite, r taken as 0
    t = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert pearson(const, t).item() == 0.0 and pearson(t, const).item() == 0.0
    assert mse_corr_loss(const, t).item() == pytest.approx(((const - t) ** 2).mean().item() + 1.0)


def test_bce_pos_weight_not_saved_and_bad_spec():
    ctx = ctx_for("multi_label", [3, 5, 2])
    loss = LOSSES.build("bce", pos_weight=2.0)
    loss.setup(ctx)
    assert "pos_weight" not in loss.state_dict() and torch.equal(loss.pos_weight, torch.full((3,), 2.0))
    for bad in ("abc", (1.0, 2.0, 3.0), [1.0, 2.0]):
        with pytest.raises(ConfigError, match=r"^loss bce: pos_weight must be a number, 'balanced' or 3 numbers, got"):
            LOSSES.build("bce", pos_weight=bad).setup(ctx)


# ---------------------------------------------------------------- configuration messages and bounds, whole

def _ctx3(task: str = "single_label", counts=(6, 3, 1), train_size: int = 10) -> TrainContext:
    return TrainContext(task=task, num_labels=3, label_names=["a", "b", "c"], class_counts=list(counts),
                        train_size=train_size, total_steps=1)


@pytest.mark.parametrize("name,kwargs,message", [
    ("ce", {"label_smoothing": 1.0}, r"loss ce: label_smoothing must be in \[0, 1\), got 1.0"),
    ("ce", {"label_smoothing": -0.1}, r"loss ce: label_smoothing must be in \[0, 1\), got -0.1"),
    ("focal", {"gamma": -1}, r"loss focal: gamma must be a number >= 0 \(2 in the paper\), got -1"),
    ("focal", {"gamma": "2"}, r"loss focal: gamma must be a number >= 0 \(2 in the paper\), got '2'"),
    ("dice", {"smooth": -1.0}, r"loss dice: smooth must be a number >= 0 \(1.0 is usual\), got -1.0"),
    ("dice", {"smooth": "1"}, r"loss dice: smooth must be a number >= 0 \(1.0 is usual\), got '1'"),
    ("dice", {"alpha": -0.5}, r"loss dice: alpha must be a number >= 0 \(0: plain soft Dice; > 0, e.g. 0.01: "
                              r"Li et al.'s self-adjusting Dice\), got -0.5"),
    ("dice", {"alpha": True}, r"loss dice: alpha must be a number >= 0 \(0: plain soft Dice; > 0, e.g. 0.01: "
                              r"Li et al.'s self-adjusting Dice\), got True"),
])
def test_loss_argument_messages_whole(name, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        LOSSES.build(name, **kwargs)


@pytest.mark.parametrize("name,kwargs,task,message", [
    ("ce", {"class_weights": "even"}, "single_label",
     r"loss ce: class_weights must be 'balanced' or a list of 3 numbers, got 'even'"),
    ("ce", {"class_weights": [1, 2]}, "single_label",
     r"loss ce: class_weights has 2 numbers but there are 3 classes \(a, b, c\)"),
    ("focal", {"alpha": [1, 2]}, "single_label",
     r"loss focal: class_weights has 2 numbers but there are 3 classes \(a, b, c\)"),
    ("focal", {"alpha": 1.5}, "multi_label",
     r"loss focal: alpha for sigmoid focal must be in \[0, 1\] \(e.g. 0.25\), got 1.5"),
    ("focal", {"alpha": -0.1, "sigmoid": True}, "single_label",
     r"loss focal: alpha for sigmoid focal must be in \[0, 1\] \(e.g. 0.25\), got -0.1"),
    ("bce", {"pos_weight": "x"}, "multi_label",
     r"loss bce: pos_weight must be a number, 'balanced' or 3 numbers, got 'x'"),
    ("bce", {"pos_weight": [1.0]}, "multi_label",
     r"loss bce: pos_weight must be a number, 'balanced' or 3 numbers, got \[1.0\]"),
])
def test_loss_setup_messages_whole(name, kwargs, task, message):
    loss = LOSSES.build(name, **kwargs)
    with pytest.raises(ConfigError, match=f"^{message}$"):
        loss.setup(_ctx3(task))


def test_loss_bounds_that_are_allowed():
    assert LOSSES.build("ce", label_smoothing=0.99).label_smoothing == 0.99
    for a in (0, 1, 0.0, 1.0):                  # sigmoid focal: alpha in [0, 1], both ends included
        f = LOSSES.build("focal", alpha=a)
        f.setup(_ctx3("multi_label"))
        assert f.alpha.tolist() == [float(a)] * 3
    f = LOSSES.build("focal", alpha=2.0)         # softmax focal: a class weight, no upper bound
    f.setup(_ctx3())
    assert f.alpha.tolist() == [2.0] * 3


def test_focal_balanced_sigmoid_alpha_clamped_and_empty_train():
    f = LOSSES.build("focal", alpha="balanced")
    f.setup(_ctx3("multi_label", counts=(2, 5, 0), train_size=10))
    torch.testing.assert_close(f.alpha, torch.tensor([0.8, 0.5, 1.0]))
    f.setup(_ctx3("multi_label", counts=(2, 0, 0), train_size=0))     # no rows: counts over 1, clamped at 0
    torch.testing.assert_close(f.alpha, torch.tensor([0.0, 1.0, 1.0]))


def test_loss_weight_buffers_are_not_saved():
    for name, kwargs, task in [("ce", {"class_weights": "balanced"}, "single_label"),
                               ("focal", {"alpha": 0.25}, "multi_label"),
                               ("bce", {"pos_weight": "balanced"}, "multi_label")]:
        loss = LOSSES.build(name, **kwargs)
        loss.setup(_ctx3(task))
        assert next(iter(loss.buffers())) is not None and loss.state_dict() == {}
