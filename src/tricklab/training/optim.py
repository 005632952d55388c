"""Optimizer groups (no decay on biases and norms, optional head LR) and the warmup-linear schedule."""
from __future__ import annotations

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
