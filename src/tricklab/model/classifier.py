"""Classifier = transformers encoder -> pooling -> dropout -> head -> Output(logits, pooled).

The encoder is registered under its own `base_model_prefix` (e.g. `bert`) and a linear head under
`classifier`, so a pooler+linear BERT classifier saves as a standard `BertForSequenceClassification`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..errors import ConfigError, TrickLabError
from ..registry import load_plugins
from ..runfiles import (atomic_write, check_manifest, check_tokenizer, check_tokenizer_files, read_json, write_json,
                        write_manifest)
from ..types import Output
from .parts import SUMMARY_LAST, ClassifierParts  # noqa: F401  (SUMMARY_LAST: re-exported)
from .resolve import pretrained_args, resolve_model

META_FILE = "tricklab.json"
WEIGHTS_FILE = "model.safetensors"
# model types whose *ForSequenceClassification is pooler -> dropout -> Linear named `classifier`
HF_COMPATIBLE = {"bert", "ernie", "nezha"}


class Classifier(ClassifierParts, nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "pooler", head: str = "linear",
                 head_args: dict[str, Any] | None = None, dropout: float = 0.1):
        super().__init__()
        self.build(encoder, num_labels, pooling, head, head_args, dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Output:
        return self.classify(input_ids, attention_mask, token_type_ids)


def prior_bias(task: str, class_counts: list[int], n: int, eps: float = 1e-4) -> Tensor:
    """Output biases that make the untrained model predict the train label frequencies p_c (clipped to
    [eps, 1 - eps]; Lin et al. 2017, arXiv:1708.02002, "prior probability" init). multi_label: log(p / (1 - p))
    per sigmoid; single_label: log p (softmax is shift-invariant). (C,) float32."""
    p = (torch.tensor(class_counts, dtype=torch.float64) / max(n, 1)).clamp(eps, 1 - eps)
    if task == "multi_label":
        return (p / (1 - p)).log().float()
    if task == "single_label":
        return p.log().float()
    raise ConfigError(f"model.prior_bias_init: for classification tasks only, not {task}; fix: --set "
                      f"model.prior_bias_init=auto")


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a model folder (or .gguf file); one without a pad token (decoder LMs) pads with its
    end-of-text token (attention masks and `last` pooling ignore what the pads hold)."""
    where, kw = pretrained_args(path)
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load a tokenizer from {path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_encoder(path: str, name: str | None = None) -> nn.Module:
    """The pretrained encoder (for a causal LM: its body without the LM head) from a resolved path."""
    where, kw = pretrained_args(path)
    try:
        return AutoModel.from_pretrained(where, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load model {name or path!r}: {str(e).splitlines()[0]}; fix: give a local "
                          f"transformers folder, a .gguf file, an alias (m3e-small, minilm-en, smollm2-135m), or a "
                          f"hub id that is cached (this machine may be offline)") from None


def decoder_backbone(model_name: str) -> str | None:
    """The model type of `model_name` when it is a decoder LM (parts.is_decoder), else None (config only)."""
    from .parts import is_decoder

    where, kw = pretrained_args(resolve_model(model_name))
    try:
        cfg = AutoConfig.from_pretrained(where, **kw)
    except (OSError, ValueError):
        return None                               # build_classifier reports it
    return cfg.model_type if is_decoder(cfg) else None


def build_classifier(model_name: str, num_labels: int, pooling: str, head: str, head_args: dict[str, Any],
                     dropout: float) -> tuple[Classifier, Any, str]:
    """A new classifier on pretrained encoder weights: (model, tokenizer, resolved path)."""
    path = resolve_model(model_name)
    encoder = load_encoder(path, model_name)
    return Classifier(encoder, num_labels, pooling, head, head_args, dropout), load_tokenizer(path), path


PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}


def hf_standard(pooling: str, head: str, model_type: str) -> bool:
    """pooler + linear on a BERT-type encoder is exactly transformers' `*ForSequenceClassification`."""
    return pooling == "pooler" and head == "linear" and model_type in HF_COMPATIBLE


def write_hf_config(out: Path, encoder_config: Any, meta: dict[str, Any], encoder_class: str) -> None:
    """config.json (+ modeling_tricklab.py) of a model/ folder, so that transformers loads it with the trained head:
    a standard `*ForSequenceClassification` where one fits, else `TrickLabForSequenceClassification` (hf.py) via
    `auto_map` with `trust_remote_code=True`."""
    from .hf import REMOTE_CODE, REMOTE_CODE_FILE, hf_config

    m = meta["model"]
    labels = meta["labels"]["names"]
    id2label = {str(i): n for i, n in enumerate(labels)} if meta["task"] != "regression" else {"0": "score"}
    if hf_standard(m["pooling"], m["head"], encoder_config.model_type):
        cfg = encoder_config.to_dict()
        cfg["id2label"] = id2label
        cfg["label2id"] = {v: int(k) for k, v in id2label.items()}
        cfg["problem_type"] = PROBLEM_TYPES[meta["task"]]
        cfg["architectures"] = [f"{encoder_class.replace('Model', '')}ForSequenceClassification"]
    else:
        cfg = hf_config(encoder_config, len(id2label), id2label, PROBLEM_TYPES[meta["task"]], m["pooling"], m["head"],
                        m.get("head_args") or {}, float(m.get("dropout", 0.1)), list(meta.get("plugins", [])))
        atomic_write(out / REMOTE_CODE_FILE, REMOTE_CODE)
    write_json(out / "config.json", cfg)


def save_model(model: Classifier, tokenizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """Write model/ : config.json (write_hf_config), model.safetensors, tokenizer files (match_tokenizer),
    tricklab.json, and manifest.json (every file's size and SHA-256, checked by load_model). An encoder with
    adapters (trick lora) saves them alone with the head instead of model.safetensors (adapters.py); tricklab.json's
    `adapter` names the base model."""
    out.mkdir(parents=True, exist_ok=True)
    write_hf_config(out, model.encoder.config, meta, type(model.encoder).__name__)
    from .adapters import HEAD_WEIGHTS, has_adapters, save_adapters

    if has_adapters(model.encoder):
        meta = dict(meta, adapter=save_adapters(model.encoder, out, meta["model"]["backbone"]))
        prefix = model.encoder_name + "."
        head = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith(prefix)}
        save_file(head, str(out / HEAD_WEIGHTS), metadata={"format": "pt"})
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    match_tokenizer(out, meta)
    write_json(out / META_FILE, meta)
    write_manifest(out)


def upgrade_model_folder(d: Path) -> bool:
    """A model/ folder saved before tricklab wrote TrickLabForSequenceClassification configs (its config.json
    is the encoder's with id2label, which transformers would load with a random head): rewrite its config.json,
    add modeling_tricklab.py and match its tokenizer. True when it changed anything; weights are untouched."""
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    m = meta["model"]
    if cfg.get("model_type") == "tricklab" or hf_standard(m["pooling"], m["head"], cfg.get("model_type", "")):
        return False
    encoder = AutoConfig.from_pretrained(str(d))
    write_hf_config(d, encoder, meta, (cfg.get("architectures") or ["Model"])[0])
    match_tokenizer(d, meta)
    if (d / "manifest.json").is_file():
        write_manifest(d)
    return True


def match_tokenizer(out: Path, meta: dict[str, Any]) -> None:
    """Make the saved tokenizer do what tricklab does before tokenizing, so transformers' pipeline sees the same
    tokens: lower-case the text first when the run does, and `model_max_length` = the run's data.max_length
    (pipeline(..., truncation=True) then cuts where data.truncation=head does). Lower-casing goes where
    transformers reads it: tokenizer classes with their own options (BERT-type: `do_lower_case`, with
    `strip_accents` kept off, as tricklab's str.lower() keeps accents) rebuild their normalizer from
    tokenizer_config.json; generic ones read tokenizer.json, which gets a `Lowercase` normalizer first."""
    tok_json, tok_cfg = out / "tokenizer.json", out / "tokenizer_config.json"
    c = json.loads(tok_cfg.read_text(encoding="utf-8")) if tok_cfg.is_file() else None
    data = meta.get("data") or {}
    if data.get("lowercase"):
        if tok_json.is_file():
            spec = json.loads(tok_json.read_text(encoding="utf-8"))
            norm = spec.get("normalizer")
            if not (isinstance(norm, dict) and norm.get("type") == "Sequence"
                    and norm.get("normalizers", [{}])[0].get("type") == "Lowercase"):
                spec["normalizer"] = {"type": "Sequence",
                                      "normalizers": [{"type": "Lowercase"}] + ([norm] if norm else [])}
                atomic_write(tok_json, json.dumps(spec, ensure_ascii=False))
        if c is not None and "do_lower_case" in c:
            c["do_lower_case"] = True
            if "strip_accents" in c and c["strip_accents"] is None:
                c["strip_accents"] = False
    if c is not None:
        if data.get("max_length"):
            c["model_max_length"] = int(data["max_length"])
        write_json(tok_cfg, c)


def encoder_config(d: Path) -> Any:
    """The encoder's config from a model/ folder: nested in a TrickLabConfig, or the folder's own config.json."""
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") == "tricklab":
        enc = dict(cfg["encoder"])
        return AutoConfig.for_model(enc.pop("model_type"), **enc)
    return AutoConfig.from_pretrained(str(d))


def check_model_folder(d: Path, what: str = "model folder") -> str:
    """manifest.json checked (sizes, SHA-256), or for older folders the tokenizer's files; returns the fix text."""
    fix = (f"copy the {what} {d} again from where it was made (its files were damaged or lost), or train it again "
           f"(tricklab train ... --overwrite)")
    if not check_manifest(d, fix):
        check_tokenizer_files(d, fix)
    return fix


def load_model(model_dir: str | Path) -> tuple[Classifier, Any, dict[str, Any]]:
    """Load a saved model/ folder (no pretrained download, no pickle), checked first (check_model_folder)."""
    d = Path(model_dir)
    if not (d / META_FILE).is_file():
        raise ConfigError(f"{d}: not a tricklab model folder (no {META_FILE}); give a run folder from `tricklab train`")
    fix = check_model_folder(d)
    meta = read_json(d / META_FILE, fix)
    load_plugins(meta.get("plugins", []))                     # plugin heads / poolings register themselves
    if meta.get("adapter"):
        model = load_with_adapters(d, meta)
    else:
        model = load_full(d, meta, fix)
    model.eval()
    tok = load_tokenizer(str(d))
    check_tokenizer(tok, d, fix)
    return model, tok, meta


def load_full(d: Path, meta: dict[str, Any], fix: str) -> Classifier:
    """A model/ folder with its full weights (model.safetensors)."""
    m = meta["model"]
    try:
        encoder = AutoModel.from_config(encoder_config(d))
    except (OSError, ValueError, KeyError) as e:
        raise TrickLabError(f"{d / 'config.json'}: unreadable ({str(e).splitlines()[0]}); fix: {fix}") from None
    model = Classifier(encoder, meta["num_labels"], m["pooling"], m["head"], m.get("head_args", {}), m.get("dropout", 0.1))
    try:
        state = load_file(str(d / WEIGHTS_FILE))
    except Exception as e:   # safetensors raises its own error types for a truncated or damaged file
        raise TrickLabError(f"{d / WEIGHTS_FILE}: unreadable ({str(e).splitlines()[0][:120]}: truncated or damaged); "
                            f"fix: {fix}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ConfigError(f"{d / WEIGHTS_FILE}: weights do not match the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model


def load_with_adapters(d: Path, meta: dict[str, Any]) -> Classifier:
    """A model/ folder with adapters: the base model recorded at training, the adapters merged into it
    (adapters.merge_adapters), the saved head."""
    from .adapters import HEAD_WEIGHTS, merge_adapters

    base, m = meta["adapter"]["base"], meta["model"]
    if not Path(base).exists() and (base.startswith(("/", ".", "~")) or base.count("/") != 1):
        raise ConfigError(f"{d}: its adapters need their base model {base!r} (recorded at training), which is not "
                          f"there; fix: put the base model back at that path, or edit adapter.base in "
                          f"{d / META_FILE} to where it is now")
    model = Classifier(load_encoder(base), meta["num_labels"], m["pooling"], m["head"], m.get("head_args", {}),
                       m.get("dropout", 0.1))
    merged = merge_adapters(model.encoder, d)
    model.add_module(model.encoder_name, merged)
    state = load_file(str(d / HEAD_WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(model.encoder_name + ".")]
    if missing or unexpected:
        raise ConfigError(f"{d / HEAD_WEIGHTS}: the head does not match the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model
