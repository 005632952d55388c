from __future__ import annotations

from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output
from .base import Loss
from .functional import dice_loss


@LOSSES.register("dice")
class DiceLoss(Loss):
    """Soft Dice loss (Milletari et al. 2016, arXiv:1606.04797; Li et al. 2020, arXiv:1911.02855),
    one Dice score per class over the batch, 1 - their mean.

    single_label: softmax probabilities vs one-hot labels; multi_label: one sigmoid per label.
    smooth: added to numerator and denominator (a class absent from the batch and predicted absent
    scores 1); square: p² + y² in the denominator (V-Net form).
    Shapes: out.logits (B, C), batch.labels (B,) long or (B, C) float -> scalar.
    """

    tasks = ("single_label", "multi_label")

    def __init__(self, smooth: float = 1.0, square: bool = False):
        super().__init__()
        if not isinstance(smooth, (int, float)) or smooth < 0:
            raise ConfigError(f"loss dice: smooth must be a number >= 0 (1.0 is usual), got {smooth!r}")
        self.smooth, self.square = float(smooth), bool(square)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        return dice_loss(out.logits, batch.labels, self.smooth, square=self.square)
