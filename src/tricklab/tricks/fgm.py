"""Adversarial training on the word embeddings: FGM (one step) and PGD (K projected steps).

The attack direction is the gradient of the *current* micro-batch's loss w.r.t. the embedding matrix. Under
gradient accumulation `.grad` also holds the earlier micro-batches' gradients, so it is not read: a tensor hook
on the embedding weight (EmbeddingGrad) records each backward pass's own gradient before autograd adds it to
`.grad` (under DDP: this process's local gradient, before the all-reduce).

Frozen embeddings (trick lora, freeze embeddings: true) are attacked all the same: they require a gradient only
from each micro-batch's forward (transform_batch) to the end of its adversarial passes (after_backward), where
their .grad is dropped; they are never in the optimizer, so they stay bit-identical.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import TRICKS
from ..types import Batch, TrainContext
from .base import Trick


def word_embeddings(model: nn.Module) -> nn.Parameter:
    """The encoder's word-embedding matrix (V, H), found with transformers' get_input_embeddings()."""
    m = getattr(model, "module", model)                     # unwrap DDP
    enc = getattr(m, "encoder", m)
    get = getattr(enc, "get_input_embeddings", None) or getattr(m, "get_input_embeddings", None)
    emb = get() if get is not None else None
    if emb is None or not isinstance(getattr(emb, "weight", None), torch.Tensor):
        raise ConfigError(f"adversarial training: cannot find the word embeddings of {type(enc).__name__} "
                          "(no get_input_embeddings()); fix: drop the fgm/pgd trick for this encoder")
    return emb.weight


class EmbeddingGrad:
    """Records the gradient that the latest backward pass sent to the word-embedding matrix (V, H). A frozen
    matrix (attack only) requires a gradient only between open() and close()."""

    def __init__(self) -> None:
        self.grad: Tensor | None = None
        self._handle: Any = None
        self._weight: nn.Parameter | None = None
        self.frozen = False

    def attach(self, w: nn.Parameter) -> None:
        if self._weight is w:
            return
        if self._handle is not None:
            self._handle.remove()
        self.frozen = not w.requires_grad
        w.requires_grad_(True)                                 # a hook needs a tensor that requires grad
        self._weight, self._handle = w, w.register_hook(self._record)
        w.requires_grad_(not self.frozen)

    def open(self) -> None:
        """Before a forward: a frozen matrix requires a gradient, so that the attack has a direction."""
        if self.frozen and self._weight is not None:
            self._weight.requires_grad_(True)

    def close(self) -> None:
        """After the attack: a frozen matrix drops its gradient and is frozen again."""
        if self.frozen and self._weight is not None:
            self._weight.grad = None
            self._weight.requires_grad_(False)

    def _record(self, g: Tensor) -> None:
        self.grad = g.detach()

    def take(self) -> Tensor | None:
        """The recorded gradient (then forgotten), or None when no backward reached the embeddings."""
        g, self.grad = self.grad, None
        return g


def _unit_step(g: Tensor | None, size: float) -> Tensor | None:
    """size · g / ‖g‖ (Frobenius norm over the whole (V, H) matrix), or None when g is missing, zero or not finite."""
    if g is None:
        return None
    norm = torch.linalg.vector_norm(g.float())
    if not torch.isfinite(norm) or norm == 0:
        return None
    return g * (size / norm.item())


@TRICKS.register("fgm")
class FGM(Trick):
    """Fast Gradient Method on the word embeddings (Miyato et al. 2017, arXiv:1605.07725):
    r = epsilon·g/‖g‖ with g the gradient of the loss w.r.t. the embedding matrix (V, H); one more
    forward+backward at E + r adds the adversarial gradients; E is then restored bit-identically."""

    name = "fgm"

    def __init__(self, epsilon: float = 1.0):
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ConfigError(f"trick fgm: epsilon must be a positive number (1.0 is usual), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.emb_grad = EmbeddingGrad()

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        self.emb_grad.attach(word_embeddings(model))

    def transform_batch(self, batch: Batch) -> Batch:
        self.emb_grad.open()
        return batch

    def after_backward(self, model: nn.Module, forward_backward: Callable[[], dict[str, Tensor]]) -> None:
        w = word_embeddings(model)
        r = _unit_step(self.emb_grad.take(), self.epsilon)          # (V, H): this micro-batch's direction
        if r is None:
            self.emb_grad.close()
            return
        backup = w.data.clone()
        w.data.add_(r.to(w.dtype))
        try:
            forward_backward()                                      # adds the adversarial gradients to .grad
        finally:
            w.data.copy_(backup)
            self.emb_grad.take()
            self.emb_grad.close()


@TRICKS.register("pgd")
class PGD(Trick):
    """Projected Gradient Descent on the word embeddings (Madry et al. 2018, arXiv:1706.06083):
    K steps of E += alpha·g/‖g‖, each projected back into the ball ‖E - E0‖ ≤ epsilon; the gradients
    of the first K-1 steps are thrown away, those of the last one are added to the clean gradients.
    E (V, H) is restored bit-identically afterwards."""

    name = "pgd"

    def __init__(self, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3):
        for k, v in (("epsilon", epsilon), ("alpha", alpha)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"trick pgd: {k} must be a positive number, got {v!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"trick pgd: steps must be an integer >= 1 (3 is usual), got {steps!r}")
        self.epsilon, self.alpha, self.steps = float(epsilon), float(alpha), steps
        self.emb_grad = EmbeddingGrad()
        self.loss_params: list[nn.Parameter] = []

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        self.emb_grad.attach(word_embeddings(model))
        # parameters of loss modules (e.g. a SupCon projection head), when the loop lists them, so that
        # the throw-away steps' gradients are discarded there too
        self.loss_params = [p for m in (ctx.data.get("loss_modules", []) if ctx else []) for p in m.parameters()]

    def transform_batch(self, batch: Batch) -> Batch:
        self.emb_grad.open()
        return batch

    def after_backward(self, model: nn.Module, forward_backward: Callable[[], dict[str, Tensor]]) -> None:
        try:
            self._attack(model, forward_backward)
        finally:
            self.emb_grad.close()

    def _attack(self, model: nn.Module, forward_backward: Callable[[], dict[str, Tensor]]) -> None:
        w = word_embeddings(model)
        step = _unit_step(self.emb_grad.take(), self.alpha)         # (V, H): this micro-batch's clean direction
        if step is None:
            return
        params = [p for p in [*model.parameters(), *self.loss_params] if p.grad is not None]
        kept = [p.grad.clone() for p in params]   # earlier micro-batches + this one's clean gradients
        backup = w.data.clone()
        try:
            for k in range(self.steps):
                w.data.add_(step.to(w.dtype))
                r = w.data - backup                                         # (V, H)
                rn = torch.linalg.vector_norm(r.float()).item()
                if rn > self.epsilon:
                    w.data.copy_(backup).add_(r, alpha=self.epsilon / rn)
                last = k == self.steps - 1
                for p, g in zip(params, kept):
                    if last:
                        p.grad.copy_(g)  # the last adversarial backward adds onto the kept gradients
                    else:
                        p.grad.zero_()
                forward_backward()
                if not last and (step := _unit_step(self.emb_grad.take(), self.alpha)) is None:
                    for p, g in zip(params, kept):  # no direction left: keep only the clean gradients
                        p.grad.copy_(g)
                    return
        finally:
            w.data.copy_(backup)
            self.emb_grad.take()
