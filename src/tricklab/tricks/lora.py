"""Parameter-efficient fine-tuning: low-rank adapters in the encoder, which stays frozen (through `peft`;
model/adapters.py). Methods: lora (Hu et al. 2021, arXiv:2106.09685), dora (weight-decomposed LoRA, Liu et al.
2024, arXiv:2402.09353), loha and lokr (LyCORIS: Hadamard / Kronecker products of low-rank factors).

`targets: auto` adapts every linear projection of the encoder (model/adapters.linear_leaf_names: BERT query, key,
value, dense; LLaMA/Qwen2 q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; GPT-2 c_attn, c_proj,
c_fc); a list names them. The head (and a loss's projection head) trains in full. The adapters go in through the
`adapt_model` hook, before any trick's setup, so EMA shadows, FGM/PGD and the optimizer see the adapted model.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from ..model.adapters import METHODS, add_adapters, adapter_config, linear_leaf_names, require_peft
from ..registry import TRICKS
from ..types import TrainContext
from .base import Trick


@TRICKS.register("lora")
class LoRA(Trick):
    """Adapters of rank `r` scaled by alpha/r (lora, dora; loha/lokr: alpha as peft takes it) with `dropout`
    on the adapter (lora, dora: its input; loha, lokr: its rank), on the encoder's `targets`."""

    name = "lora"

    def __init__(self, r: int = 8, alpha: float = 16, dropout: float = 0.1, targets: Any = "auto",
                 method: str = "lora"):
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ConfigError(f"trick lora: r must be an integer >= 1 (the adapter rank; 8 is usual), got {r!r}")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
            raise ConfigError(f"trick lora: alpha must be a positive number (2r is usual), got {alpha!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"trick lora: dropout must be in [0, 1), got {dropout!r}")
        if method not in METHODS:
            raise ConfigError(f"trick lora: method {method!r} is not one of {', '.join(METHODS)}")
        if isinstance(targets, str) and targets != "auto":
            targets = [t.strip() for t in targets.split("+") if t.strip()]
        if targets != "auto" and (not isinstance(targets, list) or not targets
                                  or not all(isinstance(t, str) and t for t in targets)):
            raise ConfigError(f"trick lora: targets must be auto or a list of module names (e.g. [query, value] or "
                              f"query+value), got {targets!r}")
        require_peft()
        self.r, self.alpha, self.dropout, self.targets, self.method = r, alpha, float(dropout), targets, method
        self.adapted: list[str] = []

    def adapt_model(self, model: nn.Module, ctx: TrainContext) -> None:
        m = getattr(model, "module", model)
        encoder = getattr(m, "encoder", m)
        found = linear_leaf_names(encoder)
        targets = found if self.targets == "auto" else list(self.targets)
        unknown = [t for t in targets if t not in found]
        if unknown:
            raise ConfigError(f"trick lora: targets {unknown} are not linear layers of this "
                              f"{encoder.config.model_type} encoder; its linear layers are: {', '.join(found)}; "
                              f"fix: targets=auto or a list of those")
        add_adapters(encoder, adapter_config(self.method, self.r, self.alpha, self.dropout, targets))
        self.adapted = targets
