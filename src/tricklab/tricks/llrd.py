from __future__ import annotations

import re
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import TRICKS
from ..types import TrainContext
from .base import Trick

_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBED = re.compile(r"embed|(?:^|\.)(?:wte|wpe)\.")


def encoder_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each encoder parameter: 0 embeddings, i + 1 for block i (found from `.layer.N.` /
    `.layers.N.` / `.h.N.` / `.block.N.` in the name), L + 1 for anything above the blocks (pooler,
    final norm). Returns ({full parameter name: depth}, L). Head parameters are not listed."""
    m = getattr(model, "module", model)
    prefix = getattr(m, "encoder_name", "encoder") + "."
    names = [n for n, _ in m.named_parameters() if n.startswith(prefix)]
    idx = {n: int(g.group(1)) for n in names if (g := _LAYER.search(n))}
    L = max(idx.values()) + 1 if idx else 0
    depth = {}
    for n in names:
        depth[n] = idx[n] + 1 if n in idx else (0 if _EMBED.search(n[len(prefix):]) else L + 1)
    return depth, L


@TRICKS.register("llrd")
class LLRD(Trick):
    """Layer-wise learning-rate decay (Howard & Ruder 2018, arXiv:1801.06146; Sun et al. 2019,
    arXiv:1905.05583): encoder block i (1..L, bottom to top) gets lr·decay^(L - i), the embeddings
    lr·decay^L (the lowest), the pooler/final norm lr; the head keeps its own group and lr.
    Each incoming group is split by depth, keeping its weight decay: names "<group>/layer<i>"."""

    name = "llrd"

    def __init__(self, decay: float = 0.9):
        if not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ConfigError(f"trick llrd: decay must be in (0, 1] (0.8-0.95 is usual), got {decay!r}")
        self.decay = float(decay)
        self.depth: dict[int, int] = {}
        self.num_layers = 0

    def setup(self, model: nn.Module, ctx: TrainContext) -> None:
        m = getattr(model, "module", model)
        depth, self.num_layers = encoder_depths(m)
        if self.num_layers == 0:
            raise ConfigError(f"trick llrd: found no numbered layers (.layer.N. / .layers.N. / .h.N.) in "
                              f"{type(m.encoder).__name__}; fix: drop llrd for this encoder")
        params = dict(m.named_parameters())
        self.depth = {id(params[n]): d for n, d in depth.items()}

    def scale(self, depth: int) -> float:
        return self.decay ** max(self.num_layers - depth, 0)

    def param_groups(self, model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.depth:
            self.setup(model, None)  # type: ignore[arg-type]
        out: list[dict[str, Any]] = []
        for g in groups:
            names = g.get("param_names", [None] * len(g["params"]))
            by_depth: dict[int | None, list] = {}
            for n, p in zip(names, g["params"]):
                by_depth.setdefault(self.depth.get(id(p)), []).append((n, p))
            for d in sorted(by_depth, key=lambda x: -1 if x is None else x):
                sub = {**g, "params": [p for _, p in by_depth[d]]}
                if "param_names" in g:
                    sub["param_names"] = [n for n, _ in by_depth[d]]
                if d is not None:  # not an encoder parameter (head, loss projection): untouched
                    label = "embeddings" if d == 0 else (f"layer{d}" if d <= self.num_layers else "top")
                    sub |= {"lr": g["lr"] * self.scale(d), "name": f"{g.get('name', 'group')}/{label}"}
                out.append(sub)
        return out
