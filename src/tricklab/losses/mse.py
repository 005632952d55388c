from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from ..types import Batch, Output
from .base import Loss


@LOSSES.register("mse")
class MSE(Loss):
    """Mean squared error for regression. Shapes: out.logits (B, 1), batch.labels (B,) -> scalar."""

    tasks = ("regression",)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        return F.mse_loss(out.logits.float().squeeze(-1), batch.labels.float())
