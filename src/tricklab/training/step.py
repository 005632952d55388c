"""One optimizer step: the loss terms, forward + backward of each micro-batch with the tricks' hooks, and the
update (clip, step, schedule). Every trick plugs in through the hooks of tricks/base.py; nothing here knows
any trick by name."""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Callable

import torch
from accelerate import Accelerator

from ..config import Config
from ..errors import ConfigError
from ..losses import DEFAULT_LOSS
from ..registry import LOSSES, TRICKS
from ..tricks import Trick
from ..types import Batch

Losses = dict[str, tuple[float, torch.nn.Module]]   # {log name: (weight, loss module)}


def build_losses(cfg: Config, task: str) -> Losses:
    """{log name: (weight, loss module)}: the main loss (weight 1) and weighted auxiliary terms."""
    spec = cfg.loss if cfg.loss is not None else DEFAULT_LOSS[task]
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise ConfigError(f"config loss: expected a name or a mapping with 'name', got {cfg.loss!r}")
    out: Losses = {}
    for i, item in enumerate([spec] + [dict(a) for a in cfg.aux_losses]):
        name = item.pop("name")
        default_weight = getattr(LOSSES.get_or_fail(name), "default_weight", 1.0)
        weight = float(item.pop("weight", default_weight)) if i else 1.0
        loss = LOSSES.build(name, **item)
        if task not in loss.tasks:
            raise ConfigError(f"loss {name!r} is for {'/'.join(loss.tasks)} tasks, not {task}; "
                              f"fix: choose another --loss (default for {task}: {DEFAULT_LOSS[task]})")
        key = name if name not in out else f"{name}_{i}"
        out[key] = (weight, loss)
    return out


def check_specs(cfg: Config) -> None:
    """Loss and trick names and parameter names, before any data or model is loaded (did-you-mean errors)."""
    main = [] if cfg.loss is None else [{"name": cfg.loss} if isinstance(cfg.loss, str) else dict(cfg.loss)]
    for i, item in enumerate(main + [dict(a) for a in cfg.aux_losses]):
        if "name" in item:
            name = item.pop("name")
            LOSSES.get_or_fail(name)
            LOSSES.check_params(name, {k: v for k, v in item.items() if k != "weight" or (i == 0 and main)})
    for t in cfg.tricks:
        TRICKS.get_or_fail(t["name"])
        TRICKS.check_params(t["name"], {k: v for k, v in t.items() if k != "name"})


def forward_backward(model: torch.nn.Module, losses: Losses, tricks: list[Trick],
                     backward: Callable[[torch.Tensor], None], batch: Batch, scale: float) -> dict[str, torch.Tensor]:
    """One forward pass, every loss term (weighted) and the tricks' extra terms, one backward of their sum times
    `scale` (1 / micro-batches per step, so accumulated gradients are the mean over the step's micro-batches)."""
    out = model(**batch.inputs)
    parts = {name: w * loss(out, batch) for name, (w, loss) in losses.items()}
    for t in tricks:
        parts |= t.extra_losses(model, batch, out)
    backward(sum(parts.values()) * scale)
    return parts


def accumulate_gradients(model: torch.nn.Module, micro_batches: list[Batch], losses: Losses, tricks: list[Trick],
                         backward: Callable[[torch.Tensor], None],
                         no_sync: Callable[[torch.nn.Module], Any] | None = None) -> dict[str, float]:
    """The gradients of one optimizer step: forward + backward of each micro-batch with the tricks' hooks
    (transform_batch before, after_backward after: FGM/PGD add their adversarial passes there). The gradients
    left in .grad are the mean over the micro-batches; `no_sync` (DDP) defers the all-reduce to the last one.
    Returns each loss term averaged over the micro-batches."""
    n = len(micro_batches)
    running: dict[str, float] = {}
    for i, batch in enumerate(micro_batches):
        for t in tricks:
            batch = t.transform_batch(batch)
        fb = partial(forward_backward, model, losses, tricks, backward, batch, 1.0 / n)
        with no_sync(model) if no_sync is not None and i < n - 1 else contextlib.nullcontext():
            parts = fb()
            for t in tricks:
                t.after_backward(model, fb)
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + float(v.detach()) / n
    return running


def optimizer_step(accelerator: Accelerator, optimizer: Any, scheduler: Any, trainable: list[torch.nn.Parameter],
                   max_grad_norm: float, loss_params: list[torch.nn.Parameter]) -> bool:
    """Average the loss modules' gradients across processes (they sit outside DDP), clip, step, zero the
    gradients. Returns False when the fp16 gradient scaler skipped the update (inf/NaN gradients): the
    schedule then does not advance either, as in the transformers Trainer."""
    world = accelerator.num_processes
    if world > 1:
        for p in loss_params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    stepped = not accelerator.optimizer_step_was_skipped
    if stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped
