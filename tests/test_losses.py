"""Loss checks: reference formulas (SupCon vs a loop and Khosla et al.'s code, focal vs CE, dice,
KD vs KL), and every registered loss trains a tiny model for 3 steps (parametrized over LOSSES)."""
from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

import tricklab.losses  # noqa: F401  (registration)
from tricklab.context import TrainContext
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
    """Straightforward per-anchor loop of eq. 2 of Khosla et al.; anchors without positives skipped."""
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
        denom = sum(math.exp(float(z[a] @ z[k]) / temperature) for k in others)
        terms = [math.log(math.exp(float(z[a] @ z[p]) / temperature) / denom) for p in pos]
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
    assert abs(got.item() - loop) < 1e-4


def test_supcon_excludes_anchors_without_positives():
    torch.manual_seed(0)
    feats = torch.randn(6, 1, 8)
    labels = torch.tensor([0, 0, 1, 2, 3, 3])             # anchors 2 and 3 have no positive
    got = supcon_loss(feats, labels)
    assert abs(got.item() - supcon_loop(feats, labels, 0.07, 0.07, "all")) < 1e-4
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
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
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
    ("focal", {"gamma": -1}, "gamma"), ("dice", {"smooth": -1}, "smooth"),
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
