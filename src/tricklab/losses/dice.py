from __future__ import annotations

from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output
from .base import Loss
from .functional import dice_loss


@LOSSES.register("dice")
class DiceLoss(Loss):
    """Soft Dice loss (Milletari et al. 2016, arXiv:1606.04797) and its self-adjusting form (Li et al.
    2020, arXiv:1911.02855), one Dice score per class over the batch, 1 - their mean.

    single_label: softmax probabilities vs one-hot labels; multi_label: one sigmoid per label.
    smooth: added to numerator and denominator (a class absent from the batch and predicted absent
    scores 1); square: p² + y² in the denominator (V-Net form); alpha: each probability p becomes
    (1 - p)^alpha · p (Li et al.'s self-adjusting Dice; 0 = plain soft Dice; the
    authors' TNEWS script uses alpha 0.01, smooth 1, square).
    Where this follows or differs from the authors' code: see functional.dice_loss.
    Shapes: out.logits (B, C), batch.labels (B,) long or (B, C) float -> scalar.
    """

    tasks = ("single_label", "multi_label")

    def __init__(self, smooth: float = 1.0, square: bool = False, alpha: float = 0.0):
        super().__init__()
        if not isinstance(smooth, (int, float)) or smooth < 0:
            raise ConfigError(f"loss dice: smooth must be a number >= 0 (1.0 is usual), got {smooth!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ConfigError(f"loss dice: alpha must be a number >= 0 (0: plain soft Dice; > 0, e.g. 0.01: "
                              f"Li et al.'s self-adjusting Dice), got {alpha!r}")
        self.smooth, self.square, self.alpha = float(smooth), bool(square), float(alpha)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        return dice_loss(out.logits, batch.labels, self.smooth, square=self.square, alpha=self.alpha)
