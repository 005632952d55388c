"""Loss interface: an nn.Module with forward(out: Output, batch: Batch) -> scalar Tensor."""
from __future__ import annotations

from torch import Tensor, nn

from ..types import Batch, Output, TrainContext


class Loss(nn.Module):
    """Base class. `tasks` lists the tasks the loss is defined for; `setup` sees the run context
    (class counts for balanced weights, a teacher's run folder, ...) before training starts."""

    tasks: tuple[str, ...] = ("single_label", "multi_label", "regression")

    def setup(self, ctx: TrainContext) -> None:
        pass

    def forward(self, out: Output, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
