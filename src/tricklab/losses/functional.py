"""Functional forms of the losses, importable for reuse (the loss modules are thin wrappers).

Every function computes in float32 (under bf16 autocast logits may arrive as bf16) and returns a
scalar tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_TINY = 1e-30  # floor for 1 - p before a fractional power: d/du u^g = g u^(g-1) stays finite (<= g·1e30)


def _one_minus_pow(one_minus_p: Tensor, power: float) -> Tensor:
    """(1 - p)^power, finite in value and gradient when 1 - p underflows to 0 (0 < power < 1)."""
    if power == 0:
        return torch.ones_like(one_minus_p)
    return one_minus_p.clamp(min=_TINY) ** power


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: Tensor | float | None = None,
               sigmoid: bool = False) -> Tensor:
    """Focal loss (Lin et al. 2017, arXiv:1708.02002): -alpha_t (1 - p_t)^gamma log p_t.

    softmax (multi-class): logits (B, C), targets (B,) long; alpha None, a number, or (C,) per class;
        mean over the B examples (gamma=0, alpha=None is cross-entropy).
    sigmoid (binary / multi-label): logits (B, C), targets (B, C) in [0, 1] (or (B,) long, one-hot
        encoded); alpha weighs positives and 1 - alpha negatives (a number or (C,)); mean over B*C
        (gamma=0, alpha=None is binary cross-entropy).
    1 - p_t is computed without cancellation (sum of the other classes' probabilities; sigmoid(-x)
    for a positive) and floored at 1e-30, so any gamma >= 0 gives finite gradients even when p_t
    rounds to 1 in float32 (logit margin >= ~17), where u^gamma with gamma < 1 has an infinite slope.
    """
    x = logits.float()
    if sigmoid or targets.dim() == 2:
        t = F.one_hot(targets, x.shape[-1]).float() if targets.dim() == 1 else targets.float()  # (B, C)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")          # (B, C)
        one_minus_pt = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)          # (B, C) = 1 - p_t
        loss = ce * _one_minus_pow(one_minus_pt, gamma)
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
            loss = (a * t + (1 - a) * (1 - t)) * loss
        return loss.mean()
    logp = x.log_softmax(-1)                                                      # (B, C)
    logp_t = logp.gather(1, targets[:, None]).squeeze(1)                          # (B,)
    others = torch.ones_like(logp, dtype=torch.bool).scatter(1, targets[:, None], False)
    one_minus_pt = (logp.exp() * others).sum(-1)                                  # (B,) = 1 - p_t
    loss = -_one_minus_pow(one_minus_pt, gamma) * logp_t
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        loss = (a[targets] if a.dim() == 1 else a) * loss
    return loss.mean()


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0, sigmoid: bool = False,
              square: bool = False, alpha: float = 0.0) -> Tensor:
    """Soft Dice loss (Milletari et al. 2016, arXiv:1606.04797), with the self-adjusting form of
    Li et al. 2020 ("Dice Loss for Data-imbalanced NLP Tasks", arXiv:1911.02855):
    1 - mean_c (2 sum_b q_bc y_bc + s) / (sum_b q_bc + sum_b y_bc + s), q = (1 - p)^alpha · p.

    softmax: logits (B, C), targets (B,) long. sigmoid: logits (B, C), targets (B, C) in [0, 1].
    The sums run over the batch, one Dice score per class; `smooth` (s) keeps a class absent from
    the batch (and predicted absent) at score 1; `square` uses q² and y² in the denominator (V-Net).
    alpha = 0 is plain soft Dice; alpha > 0 down-weights confident (easy) predictions.

    Follows the authors' code (ShannonAI/dice_loss_for_NLP, loss/dice_loss.py) in: q replaces p
    in numerator and denominator (squared too with `square`), the factor stays in the graph,
    softmax for multi-class, sigmoid otherwise. Differs in: their intersection is per example while
    their (non-square) denominator sums the whole batch, and their per-class losses are summed; here
    both sums run over the batch (set-level Dice, as in F1) and classes are averaged (at B = 1 ours is
    theirs / C); no OHEM or mask; 1 - p is floored at 1e-30 so alpha < 1 keeps finite gradients at p = 1.
    """
    x = logits.float()
    if sigmoid or targets.dim() == 2:
        p = torch.sigmoid(x)                                                      # (B, C)
        y = F.one_hot(targets, x.shape[-1]).float() if targets.dim() == 1 else targets.float()
        one_minus_p = torch.sigmoid(-x) if alpha else None                       # (B, C) = 1 - p
    else:
        p = x.softmax(-1)                                                         # (B, C)
        y = F.one_hot(targets, x.shape[-1]).float()
        one_minus_p = -torch.expm1(x.log_softmax(-1)) if alpha else None
    if alpha:
        p = _one_minus_pow(one_minus_p, alpha) * p                                # (B, C) q
    inter = (p * y).sum(0)                                                        # (C,)
    denom = (p * p).sum(0) + (y * y).sum(0) if square else p.sum(0) + y.sum(0)    # (C,)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two (B,) vectors."""
    a, b = a.float() - a.float().mean(), b.float() - b.float().mean()
    return (a * b).sum() / ((a.pow(2).sum() + eps).sqrt() * (b.pow(2).sum() + eps).sqrt())


def mse_corr_loss(preds: Tensor, targets: Tensor, corr_weight: float = 1.0) -> Tensor:
    """MSE + p·(1 - Pearson(preds, targets)) for regression; preds (B,) or (B, 1), targets (B,).

    The correlation term is left out (0) for a batch with fewer than 2 examples or constant targets,
    where the correlation is undefined (tested as max == min: y - mean(y) of a constant float
    vector is often not exactly 0)."""
    x, y = preds.float().reshape(-1), targets.float().reshape(-1)                 # (B,)
    mse = F.mse_loss(x, y)
    if x.numel() < 2 or bool(y.max() == y.min()):
        return mse
    return mse + corr_weight * (1 - pearson(x, y))


def supcon_loss(features: Tensor, labels: Tensor | None = None, temperature: float = 0.07,
                base_temperature: float = 0.07, contrast_mode: str = "all", normalize: bool = True) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, arXiv:2004.11362, eq. 2 "L_out").

    features: (B, H) one view per example, or (B, V, H) with V views; labels: (B,) long (None: SimCLR,
    each example is only its own positive). contrast_mode "all": every view is an anchor; "one": only
    view 0. Anchors with no positive in the batch are left out of the mean (not counted as zero);
    a batch with no positive pair at all gives 0 (with a graph). L2-normalises the features first.
    """
    f = features.float()
    if f.dim() == 2:
        f = f[:, None]                                                            # (B, 1, H)
    B, V, _ = f.shape
    if normalize:
        f = F.normalize(f, dim=-1)
    lab = torch.arange(B, device=f.device) if labels is None else labels.reshape(-1)
    contrast = f.transpose(0, 1).reshape(V * B, -1)                               # (VB, H) view-major
    if contrast_mode == "all":
        anchor, n_anchor_views = contrast, V
    elif contrast_mode == "one":
        anchor, n_anchor_views = f[:, 0], 1                                       # (B, H)
    else:
        raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
    A = anchor.shape[0]
    with torch.autocast(f.device.type, enabled=False):                           # float32 under bf16 autocast
        logits = anchor @ contrast.T / temperature                                # (A, VB)
    logits = logits - logits.max(1, keepdim=True).values.detach()                 # stability
    self_mask = torch.ones_like(logits, dtype=torch.bool)
    self_mask[torch.arange(A, device=f.device), torch.arange(A, device=f.device)] = False  # not itself
    lab_a, lab_c = lab.repeat(n_anchor_views), lab.repeat(V)                      # (A,), (VB,)
    pos = (lab_a[:, None] == lab_c[None, :]) & self_mask                          # (A, VB)
    log_prob = logits - torch.logsumexp(logits.masked_fill(~self_mask, float("-inf")), 1, keepdim=True)
    n_pos = pos.sum(1)                                                            # (A,)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return f.sum() * 0.0
    mean_log_prob_pos = (log_prob * pos).sum(1)[has_pos] / n_pos[has_pos]         # (A',)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def rdrop_kl(logits1: Tensor, logits2: Tensor, task: str = "single_label") -> Tensor:
    """R-Drop's symmetric divergence between two dropout passes (Liang et al. 2021, arXiv:2106.14448):
    (KL(p1‖p2) + KL(p2‖p1)) / 2, summed over classes, averaged over the B examples.

    single_label: softmax distributions of (B, C) logits; multi_label: one Bernoulli per label
    (summed over labels); regression: (B, 1) predictions -> mean squared difference.
    """
    a, b = logits1.float(), logits2.float()
    if task == "regression":
        return F.mse_loss(a, b)
    if task == "multi_label":
        la, lb = torch.stack([F.logsigmoid(-a), F.logsigmoid(a)], -1), torch.stack([F.logsigmoid(-b), F.logsigmoid(b)], -1)
        kl = (la.exp() * (la - lb) + lb.exp() * (lb - la)).sum(-1)               # (B, C)
        return 0.5 * kl.sum(-1).mean()
    la, lb = a.log_softmax(-1), b.log_softmax(-1)                                 # (B, C)
    return 0.5 * (la.exp() * (la - lb) + lb.exp() * (lb - la)).sum(-1).mean()


def kd_kl(student_logits: Tensor, teacher_log_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Hinton et al. 2015 (arXiv:1503.02531): T²·KL(teacher_T ‖ student_T), averaged over the batch.

    student_logits (B, C); teacher_log_probs (B, C): the teacher's log-probabilities already at
    temperature T (log_softmax(teacher_logits / T))."""
    log_s = (student_logits.float() / temperature).log_softmax(-1)                # (B, C)
    t = teacher_log_probs.float()
    return temperature ** 2 * (t.exp() * (t - log_s)).sum(-1).mean()
