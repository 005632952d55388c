"""Parameter-efficient fine-tuning with the `peft` library (an optional dependency: the `peft` extra).

Adapters (LoRA, DoRA, LoHa, LoKr) are injected in place into the classifier's encoder
(`peft.inject_adapter_in_model`): parameter names stay those of the encoder, the base weights are frozen, the head
stays trainable. A run's model/ folder then holds the adapters alone (`adapter_model.safetensors` from
`get_peft_model_state_dict`, `adapter_config.json` = the peft config, a standard PEFT adapter of the encoder body)
and the head (`head.safetensors`); tricklab.json records the base model. Loading rebuilds the base, loads the
adapters and merges them into the base weights (`merge_and_unload`), so the loaded classifier is a plain
transformers encoder + head: prediction, evaluation, ONNX export and serving run no peft layer (loading itself
imports peft).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..runfiles import read_json, write_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
HEAD_WEIGHTS = "head.safetensors"
METHODS = ("lora", "dora", "loha", "lokr")


def require_peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError("adapters (trick lora, or a run folder saved with adapters) need the peft package; "
                          "fix: pip install 'tricklab[peft]' (or pip install 'peft>=0.17,<1')") from None
    return peft


def linear_leaf_names(encoder: nn.Module) -> list[str]:
    """The distinct last names of the encoder's linear projections (nn.Linear; GPT-2's Conv1D), in first-seen
    order: BERT -> query, key, value, dense; LLaMA/Qwen2 -> q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
    down_proj; GPT-2 -> c_attn, c_proj, c_fc. Modules set to None (an unused pooler) are not found."""
    from transformers.pytorch_utils import Conv1D

    names: dict[str, None] = {}
    for name, mod in encoder.named_modules():
        if isinstance(mod, (nn.Linear, Conv1D)) and name:
            names.setdefault(name.rsplit(".", 1)[-1], None)
    return list(names)


def adapter_config(method: str, r: int, alpha: float, dropout: float, targets: list[str]) -> Any:
    """The peft config of `method`: lora and dora (LoraConfig, use_dora) take dropout as lora_dropout (on the
    adapter's input); loha and lokr (LyCORIS) as rank_dropout."""
    peft = require_peft()
    if method in ("lora", "dora"):
        return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                               use_dora=method == "dora")
    if method == "loha":
        return peft.LoHaConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=list(targets))
    if method == "lokr":
        return peft.LoKrConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=list(targets))
    raise ConfigError(f"adapter method {method!r}: choose from {', '.join(METHODS)}")


def add_adapters(encoder: nn.Module, config: Any) -> None:
    """Inject the adapters into `encoder` in place; only they train in it afterwards."""
    peft = require_peft()
    try:
        peft.inject_adapter_in_model(config, encoder)
    except ValueError as e:   # e.g. a target module name that the encoder does not have
        raise ConfigError(f"trick lora: {str(e).splitlines()[0]}; the encoder's linear layers are named: "
                          f"{', '.join(linear_leaf_names(encoder))}") from None


def has_adapters(encoder: nn.Module) -> bool:
    return bool(getattr(encoder, "peft_config", None))


def frozen_base_keys(model: nn.Module) -> set[str]:
    """The state_dict keys of a classifier's frozen base weights when its encoder has adapters: every entry of the
    encoder but its trainable parameters (the adapters). Empty without adapters. These come back from the base
    model when the run is built again, so a resume checkpoint need not hold them."""
    if not has_adapters(model.encoder):
        return set()
    prefix = model.encoder_name + "."
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.startswith(prefix) and k not in trainable}


def adapter_state(encoder: nn.Module) -> dict[str, Tensor]:
    """The adapter weights alone (peft's names, relative to the encoder)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(encoder, save_embedding_layers=False)   # the embeddings are not adapted


def save_adapters(encoder: nn.Module, out: Path, base: str) -> dict[str, Any]:
    """adapter_model.safetensors + adapter_config.json (base_model_name_or_path = the base model) into `out`;
    returns what tricklab.json records: {method, base, parameters}."""
    from safetensors.torch import save_file

    cfg = encoder.peft_config["default"]
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state(encoder).items()}
    save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    d = cfg.to_dict()
    d["base_model_name_or_path"] = base
    d["target_modules"] = sorted(d["target_modules"]) if d.get("target_modules") is not None else None
    write_json(out / ADAPTER_CONFIG, d, default=str)
    method = "dora" if getattr(cfg, "use_dora", False) else str(cfg.peft_type.value).lower()
    return {"method": method, "base": base, "parameters": int(sum(v.numel() for v in state.values()))}


def merge_adapters(encoder: nn.Module, folder: Path) -> nn.Module:
    """Load the adapters saved in `folder` into `encoder` (the base model), check that every adapter weight was
    found and used, and return the encoder with the adapters merged into its weights (no peft layers left)."""
    from safetensors.torch import load_file

    peft = require_peft()
    d = read_json(folder / ADAPTER_CONFIG, f"copy {folder} again from where it was made, or train the run again")
    config = peft.PeftConfig.from_peft_type(**{k: v for k, v in d.items() if k != "peft_version"})
    config.inference_mode = True
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    # the tuner object that inject_adapter_in_model builds and drops: kept here for its merge_and_unload
    wrapped = PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type](encoder, config, adapter_name="default")
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    expected = set(adapter_state(encoder))
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise ConfigError(f"{folder / ADAPTER_WEIGHTS}: the adapters do not fit the base model "
                          f"{d.get('base_model_name_or_path')!r} (missing {missing[:3]}, unexpected {extra[:3]}); "
                          f"fix: load it with the base model it was trained on")
    result = peft.set_peft_model_state_dict(encoder, saved)
    if result.unexpected_keys:
        raise ConfigError(f"{folder / ADAPTER_WEIGHTS}: unexpected adapter weights {result.unexpected_keys[:3]}")
    merged = wrapped.merge_and_unload()
    if hasattr(merged, "peft_config"):
        del merged.peft_config
    return merged
