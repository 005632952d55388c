from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output, TrainContext
from .base import Loss
from .ce import class_weight_tensor
from .functional import focal_loss


@LOSSES.register("focal")
class FocalLoss(Loss):
    """Focal loss (Lin et al. 2017, arXiv:1708.02002): -alpha_t (1 - p_t)^gamma log p_t; gamma=0 and
    no alpha is cross-entropy (softmax) or binary cross-entropy (sigmoid).

    single_label: softmax over classes (or `sigmoid: true`: one sigmoid per class, one-hot targets,
        as in RetinaNet); alpha: per-class list, "balanced" (n / (C * count_c)), or None.
    multi_label: one sigmoid per label; alpha: a number (weight of positives, 1 - alpha for
        negatives, 0.25 in the paper), a list with one per label, or "balanced" (share of negatives).
    Shapes: out.logits (B, C), batch.labels (B,) long or (B, C) float -> scalar.
    """

    tasks = ("single_label", "multi_label")

    def __init__(self, gamma: float = 2.0, alpha: float | list[float] | str | None = None, sigmoid: bool = False):
        super().__init__()
        if not isinstance(gamma, (int, float)) or gamma < 0:
            raise ConfigError(f"loss focal: gamma must be a number >= 0 (2 in the paper), got {gamma!r}")
        self.gamma, self.alpha_spec, self.sigmoid = float(gamma), alpha, bool(sigmoid)
        self.register_buffer("alpha", None, persistent=False)

    def setup(self, ctx: TrainContext) -> None:
        spec, C = self.alpha_spec, ctx.num_labels
        sig = self.sigmoid or ctx.task == "multi_label"
        if spec is None:
            return
        if sig and spec == "balanced":  # alpha_c = share of negatives: rare labels weigh positives more
            pos = torch.tensor(ctx.class_counts, dtype=torch.float)
            self.alpha = (1 - pos / max(ctx.train_size, 1)).clamp(0, 1)
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            if sig and not 0 <= spec <= 1:
                raise ConfigError(f"loss focal: alpha for sigmoid focal must be in [0, 1] (e.g. 0.25), got {spec}")
            self.alpha = class_weight_tensor([float(spec)] * C, ctx, "focal")
        else:
            self.alpha = class_weight_tensor(spec, ctx, "focal")

    def forward(self, out: Output, batch: Batch) -> Tensor:
        return focal_loss(out.logits, batch.labels, self.gamma, self.alpha, sigmoid=self.sigmoid)
