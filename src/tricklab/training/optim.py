"""Optimizer groups (no decay on biases and norms, optional head LR) and the warmup-linear schedule."""
from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig


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


def warmup_linear(optimizer: Any, warmup_steps: int, total_steps: int) -> LambdaLR:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, f)


def without_bias_correction(scheduler: LambdaLR, betas: tuple[float, float] = (0.9, 0.999)) -> LambdaLR:
    """Compose the schedule with c_t = (1 - b1^t) / sqrt(1 - b2^t), t the step about to be taken: AdamW then
    steps by lr·m_t / (sqrt(v_t) + eps·sqrt(1 - b2^t)), i.e. Adam without bias correction, as BertAdam (the
    original BERT optimizer, used by Bert-Chinese-Text-Classification-Pytorch) did. Early steps are larger
    than AdamW's at the same lr: 6.5x at step 10, 3.2x at 100, 1.7x at 456. Differences from BertAdam: eps is
    scaled by sqrt(1 - b2^t) (smaller), and the decoupled weight decay is scaled by c_t too."""
    b1, b2 = betas

    def factor(step: int) -> float:
        t = step + 1
        return (1 - b1 ** t) / math.sqrt(1 - b2 ** t)

    scheduler.lr_lambdas = [lambda s, f=f: f(s) * factor(s) for f in scheduler.lr_lambdas]
    for group, f in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):  # the first step's lr too
        group["lr"] = group["initial_lr"] * f(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
    return scheduler
