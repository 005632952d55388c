from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import TRICKS
from ..types import TrainContext
from .base import Trick
from .llrd import encoder_depths


@TRICKS.register("freeze")
class Freeze(Trick):
    """Freeze the encoder's embeddings and/or its bottom `layers` blocks (requires_grad=False, set
    before the optimizer and any DDP wrapping are built). Blocks are found as in llrd."""

    name = "freeze"

    def __init__(self, embeddings: bool = True, layers: int = 0):
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
            raise ConfigError(f"trick freeze: layers must be an integer >= 0 (bottom blocks to freeze), got {layers!r}")
        self.embeddings, self.layers = bool(embeddings), layers
        self.frozen: list[str] = []

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        m = getattr(model, "module", model)
        depth, L = encoder_depths(m)
        if self.layers > L:
            raise ConfigError(f"trick freeze: layers={self.layers} but the encoder has {L} blocks; fix: layers <= {L}")
        if not self.embeddings and self.layers == 0:
            raise ConfigError("trick freeze: nothing to freeze; fix: embeddings: true and/or layers: N")
        params = dict(m.named_parameters())
        for n, d in depth.items():
            if (d == 0 and self.embeddings) or 1 <= d <= self.layers:
                params[n].requires_grad_(False)
                self.frozen.append(n)
