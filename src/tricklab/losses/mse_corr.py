from __future__ import annotations

from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output
from .base import Loss
from .functional import mse_corr_loss


@LOSSES.register("mse_corr")
class MSECorr(Loss):
    """MSE + p·(1 - Pearson correlation) for regression: the correlation term rewards ranking
    the batch right (STS-style metrics), the MSE keeps the scale. p is `corr_weight`.

    Shapes: out.logits (B, 1), batch.labels (B,) float -> scalar.
    """

    tasks = ("regression",)

    def __init__(self, corr_weight: float = 1.0):
        super().__init__()
        if not isinstance(corr_weight, (int, float)) or corr_weight < 0:
            raise ConfigError(f"loss mse_corr: corr_weight must be a number >= 0, got {corr_weight!r}")
        self.corr_weight = float(corr_weight)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        return mse_corr_loss(out.logits.squeeze(-1), batch.labels, self.corr_weight)
