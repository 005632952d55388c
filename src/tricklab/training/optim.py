"""Optimizer groups (no decay on biases and norms, optional head LR) and the LR schedule.

The schedule is transformers' (`get_scheduler`: linear, cosine, cosine_with_restarts, polynomial, constant,
constant_with_warmup, inverse_sqrt), used as one LR multiplier per optimizer step, `lr_factor(tc, total)(step)`,
so more per-step factors compose with it by multiplication (`build_scheduler(..., factors=[...])`). The
scheduler is a LambdaLR over a plain function: its state_dict (step count, base LRs) is all --resume needs, and
it loads with torch.load(weights_only=True).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import SCHEDULERS, TrainConfig
from ..errors import ConfigError

Factor = Callable[[int], float]            # optimizer step (0-based) -> LR multiplier


def no_decay(name: str) -> bool:
    n = name.lower()
    return n.endswith("bias") or "layernorm" in n or "layer_norm" in n or ".norm" in n or "ln_" in n


def param_groups(model: nn.Module, extra: list[nn.Module], tc: TrainConfig) -> list[dict[str, Any]]:
    """Four groups: encoder/head x decay/no-decay. `extra` are loss modules with parameters."""
    enc_prefix = getattr(model, "encoder_name", "encoder") + "."
    head_lr = tc.head_lr or tc.lr
    groups: dict[tuple[str, bool], list] = {}
    named = list(model.named_parameters()) + [(f"loss{i}.{n}", p) for i, m in enumerate(extra) for n, p in m.named_parameters()]
    for name, p in named:
        if not p.requires_grad:
            continue
        part = "encoder" if name.startswith(enc_prefix) else "head"
        groups.setdefault((part, no_decay(name)), []).append((name, p))
    out = []
    for (part, nd), items in groups.items():
        out.append({"name": f"{part}{'_no_decay' if nd else ''}", "params": [p for _, p in items],
                    "param_names": [n for n, _ in items], "lr": tc.lr if part == "encoder" else head_lr,
                    "weight_decay": 0.0 if nd else tc.weight_decay})
    return out


def warmup_steps(tc: TrainConfig, total_steps: int) -> int:
    """train.warmup_steps when > 0, else train.warmup_ratio of the run's optimizer steps."""
    return tc.warmup_steps if tc.warmup_steps > 0 else int(tc.warmup_ratio * total_steps)

def lr_factor(tc: TrainConfig, total_steps: int, base_lr: float | None = None) -> Factor:
    """The LR multiplier of `train.scheduler` at each optimizer step: the lr_lambda of the LambdaLR that
    transformers.get_scheduler builds (on a one-parameter probe optimizer whose default LR is `base_lr`, the real
    optimizer's: `polynomial` decays towards the absolute lr_end from it), with train.scheduler_args as its
    scheduler_specific_kwargs. Bad arguments are a ConfigError."""
    from transformers import get_scheduler

    if tc.scheduler not in SCHEDULERS:
        raise ConfigError(f"config train.scheduler: {tc.scheduler!r} is not valid (choose from: {', '.join(SCHEDULERS)})")
    args = dict(tc.scheduler_args or {})
    if args and tc.scheduler in ("constant", "constant_with_warmup"):
        raise ConfigError(f"config train.scheduler_args: {tc.scheduler} takes no arguments, got {args}; fix: drop "
                          f"train.scheduler_args")
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tc.lr if base_lr is None else base_lr)
    try:
        sched = get_scheduler(tc.scheduler, probe, warmup_steps(tc, total_steps), max(1, total_steps),
                              scheduler_specific_kwargs=args)
    except TypeError as e:
        raise ConfigError(f"config train.scheduler_args for {tc.scheduler}: {e}") from None
    if not isinstance(sched, LambdaLR) or len(sched.lr_lambdas) != 1:  # every scheduler in SCHEDULERS is one
        raise ConfigError(f"config train.scheduler: {tc.scheduler} is not a per-step schedule")
    return sched.lr_lambdas[0]


def build_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig, total_steps: int,
                    factors: Sequence[Factor] = ()) -> LambdaLR:
    """LambdaLR whose multiplier at step s is lr_factor(tc, total_steps)(s) * f(s) for each f in `factors`."""
    base = lr_factor(tc, total_steps, optimizer.defaults["lr"])
    extra = list(factors)

    def factor(step: int) -> float:
        value = base(step)
        for f in extra:
            value *= f(step)
        return value

    return LambdaLR(optimizer, factor)


def adam_without_bias_correction(betas: tuple[float, float] = (0.9, 0.999)) -> Factor:
    """A schedule factor c_t = (1 - b1^t) / sqrt(1 - b2^t), t the step about to be taken (train.adam_bias_correction:
    false): AdamW then steps by lr·m_t / (sqrt(v_t) + eps·sqrt(1 - b2^t)), i.e. Adam without bias correction, as
    BertAdam (the original BERT optimizer, used by Bert-Chinese-Text-Classification-Pytorch) did. Early steps are
    larger than AdamW's at the same lr: 6.5x at step 10, 3.2x at 100, 1.7x at 456. Differences from BertAdam: eps is
    scaled by sqrt(1 - b2^t) (smaller), and the decoupled weight decay is scaled by c_t too."""
    b1, b2 = betas

    def factor(step: int) -> float:
        t = step + 1
        return (1 - b1 ** t) / math.sqrt(1 - b2 ** t)

    return factor
