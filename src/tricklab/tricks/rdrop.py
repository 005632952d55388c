from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import LOSSES, TRICKS
from ..types import Batch, Output, TrainContext
from .base import Trick


def stack_views(batch: Batch, views: int = 2) -> Batch:
    """The batch repeated `views` times along dim 0: rows [v*N:(v+1)*N] are view v."""
    rep = lambda t: torch.cat([t] * views, 0)  # noqa: E731
    return Batch(inputs={k: rep(v) for k, v in batch.inputs.items()},
                 labels=None if batch.labels is None else rep(batch.labels), index=rep(batch.index),
                 extra={k: rep(v) for k, v in batch.extra.items()}, views=batch.views * views)


@TRICKS.register("rdrop")
class RDrop(Trick):
    """R-Drop (Liang et al. 2021, arXiv:2106.14448): two dropout passes of each example, the task
    loss on both, plus alpha·symmetric KL between their predictions (logged as rdrop_kl).

    concat (default): one forward over the batch stacked with itself (2B rows, views=2); the main
    loss then averages over both passes: (L1 + L2)/2 + alpha·KL. concat: false runs a second forward
    in extra_losses and adds the main loss of that pass as rdrop_pass2, the paper's eq. 3:
    L1 + L2 + alpha·KL (so the same alpha weighs the KL half as much relative to the task loss).
    Shapes: logits (2N, C) -> halves (N, C); regression compares (N, 1) by MSE.
    """

    name = "rdrop"

    def __init__(self, alpha: float = 4.0, concat: bool = True):
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ConfigError(f"trick rdrop: alpha must be a number >= 0 (0.3-5 in the paper), got {alpha!r}")
        self.alpha, self.concat = float(alpha), bool(concat)
        self.task = "single_label"
        self.main_loss: nn.Module | None = None

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        self.task = ctx.task
        if not self.concat:  # the second pass needs the main loss: the loop's, or the task default
            from ..losses import DEFAULT_LOSS

            self.main_loss = ctx.data.get("main_loss")
            if self.main_loss is None:
                self.main_loss = LOSSES.build(DEFAULT_LOSS[ctx.task])
                self.main_loss.setup(ctx)

    def transform_batch(self, batch: Batch) -> Batch:
        return stack_views(batch, 2) if self.concat else batch

    def extra_losses(self, model: nn.Module, batch: Batch, out: Output) -> dict[str, Tensor]:
        from ..losses.functional import rdrop_kl

        if self.concat:
            n = out.logits.shape[0] // 2
            return {"rdrop_kl": self.alpha * rdrop_kl(out.logits[:n], out.logits[n:], self.task)}
        out2 = model(**batch.inputs)
        loss2 = self.main_loss.to(out2.logits.device)(out2, batch)
        return {"rdrop_pass2": loss2, "rdrop_kl": self.alpha * rdrop_kl(out.logits, out2.logits, self.task)}

    def state_dict(self) -> dict[str, Any]:
        return {}
