"""The Trick protocol: every hook is a no-op; the training loop calls each at exactly one place.

    batch = t.transform_batch(batch)                       # before the forward (R-Drop: stack 2 views)
    out = model(batch); losses = {main} | aux
    losses |= t.extra_losses(model, batch, out)            # R-Drop KL, distillation, ...
    backward(sum(losses))
    t.after_backward(model, forward_backward)              # FGM/PGD: extra adversarial passes
    optimizer step
    t.after_step(model, step)                              # EMA update
    with t.eval_weights(model): evaluate / save best       # EMA swap

`adapt_model(model, ctx)` runs for every trick before any trick's setup: it may change the model itself (LoRA
injects adapters and freezes the encoder), so that the other tricks are set up on the adapted model.
`setup(model, ctx)` runs once before the optimizer is built; `param_groups(model, groups)` may
rewrite the optimizer groups (LLRD); `state_dict()/load_state_dict()` are checkpointed for --resume.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from ..types import Batch, Output, TrainContext


class Trick:
    name: str = "trick"

    def adapt_model(self, model: nn.Module, ctx: TrainContext) -> None:
        pass

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        pass

    def param_groups(self, model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return groups

    def transform_batch(self, batch: Batch) -> Batch:
        return batch

    def extra_losses(self, model: nn.Module, batch: Batch, out: Output) -> dict[str, Tensor]:
        return {}

    def after_backward(self, model: nn.Module, forward_backward: Callable[[], Tensor]) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    @contextlib.contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        yield

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
