from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output, TrainContext
from .base import Loss


@LOSSES.register("ce")
class CrossEntropy(Loss):
    """Cross-entropy with optional label smoothing and class weights.

    class_weights: a list with one weight per class, or "balanced" (n / (C * count_c), from train).
    Shapes: out.logits (B, C), batch.labels (B,) -> scalar.
    """

    tasks = ("single_label",)

    def __init__(self, label_smoothing: float = 0.0, class_weights: list[float] | str | None = None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss ce: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.class_weights = class_weights
        self.register_buffer("weight", None, persistent=False)

    def setup(self, ctx: TrainContext) -> None:
        self.weight = class_weight_tensor(self.class_weights, ctx, "ce")

    def forward(self, out: Output, batch: Batch) -> Tensor:
        w = None if self.weight is None else self.weight.to(out.logits.device)
        return F.cross_entropy(out.logits.float(), batch.labels, weight=w, label_smoothing=self.label_smoothing)


def class_weight_tensor(spec: list[float] | str | None, ctx: TrainContext, loss: str) -> Tensor | None:
    """Turn a class_weights setting into a (C,) tensor: None, a list, or "balanced"."""
    if spec is None:
        return None
    C = ctx.num_labels
    if spec == "balanced":
        counts = torch.tensor(ctx.class_counts, dtype=torch.float)
        return counts.sum() / (C * counts.clamp(min=1))
    if isinstance(spec, str):
        raise ConfigError(f"loss {loss}: class_weights must be 'balanced' or a list of {C} numbers, got {spec!r}")
    if len(spec) != C:
        raise ConfigError(f"loss {loss}: class_weights has {len(spec)} numbers but there are {C} classes "
                          f"({', '.join(ctx.label_names)})")
    return torch.tensor([float(x) for x in spec])
