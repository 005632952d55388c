from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output, TrainContext
from .base import Loss


@LOSSES.register("bce")
class BCE(Loss):
    """Binary cross-entropy with logits, one sigmoid per label (multi-label).

    pos_weight: a number for all labels, a list with one per label, or "balanced" (neg/pos from train).
    Shapes: out.logits (B, C), batch.labels (B, C) in {0, 1} -> scalar.
    """

    tasks = ("multi_label",)

    def __init__(self, pos_weight: float | list[float] | str | None = None):
        super().__init__()
        self.pos_weight_spec = pos_weight
        self.register_buffer("pos_weight", None, persistent=False)

    def setup(self, ctx: TrainContext) -> None:
        spec, C = self.pos_weight_spec, ctx.num_labels
        if spec is None:
            return
        if spec == "balanced":
            pos = torch.tensor(ctx.class_counts, dtype=torch.float).clamp(min=1)
            self.pos_weight = (ctx.train_size - pos).clamp(min=1) / pos
        elif isinstance(spec, (int, float)):
            self.pos_weight = torch.full((C,), float(spec))
        elif isinstance(spec, list) and len(spec) == C:
            self.pos_weight = torch.tensor([float(x) for x in spec])
        else:
            raise ConfigError(f"loss bce: pos_weight must be a number, 'balanced' or {C} numbers, got {spec!r}")

    def forward(self, out: Output, batch: Batch) -> Tensor:
        pw = None if self.pos_weight is None else self.pos_weight.to(out.logits.device)
        return F.binary_cross_entropy_with_logits(out.logits.float(), batch.labels.float(), pos_weight=pw)
