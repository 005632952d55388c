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

from ..errors import ConfigError
from ..registry import HEADS, POOLINGS
from ..types import Output
from . import heads as _heads  # noqa: F401  (registration)
from . import pooling as _pooling  # noqa: F401
from .resolve import resolve_model

META_FILE = "tricklab.json"
WEIGHTS_FILE = "model.safetensors"
# model types whose *ForSequenceClassification is pooler -> dropout -> Linear named `classifier`
HF_COMPATIBLE = {"bert", "ernie", "nezha"}
# model types whose tokenizer puts the summary token last (XLNet: text <sep> <cls>); they have no pooler layer.
# Our batches are padded on the right (XLNet's relative attention is indifferent to the side), so `cls`
# pooling reads the last real token for them.
SUMMARY_LAST = {"xlnet"}


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "pooler", head: str = "linear",
                 head_args: dict[str, Any] | None = None, dropout: float = 0.1):
        super().__init__()
        self.encoder_name = getattr(encoder, "base_model_prefix", "") or "encoder"
        self.add_module(self.encoder_name, encoder)
        self.pooling_name, self.head_name = pooling, head
        self.head_args = dict(head_args or {})
        head_cls = HEADS.get_or_fail(head)
        self.pool = None if head_cls.sequence else POOLINGS.build(pooling)
        hidden = encoder.config.hidden_size
        if self.pool is not None and self.pool.needs_pooler and getattr(encoder, "pooler", None) is None:
            raise ConfigError(f"model.pooling=pooler: this {encoder.config.model_type} encoder has no pooler layer; "
                              f"fix: --set model.pooling=mean (or max, cls)")
        if self.pool is not None:
            self.pool.summary_last = encoder.config.model_type in SUMMARY_LAST
        if (self.pool is None or not self.pool.needs_pooler) and getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused weights would stall DDP and waste time
        in_dim = hidden if self.pool is None else self.pool.out_dim(hidden, encoder.config.num_hidden_layers)
        self.dropout = nn.Dropout(dropout)
        try:
            self.classifier = head_cls(in_dim, num_labels, dropout, **self.head_args)
        except TypeError as e:
            raise ConfigError(f"model.head_args for head {head!r}: {e}") from None

    @property
    def encoder(self) -> nn.Module:
        return getattr(self, self.encoder_name)

    @torch.no_grad()
    def init_output_bias(self, bias: Tensor) -> None:
        """Set the bias of the layer that produces the logits (B, C) to `bias` (C,), e.g. `prior_bias(...)`."""
        layer = self.classifier.output_layer
        if bias.shape != layer.bias.shape:
            raise ValueError(f"init_output_bias: expected {tuple(layer.bias.shape)} values, got {tuple(bias.shape)}")
        layer.bias.copy_(bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Output:
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        all_layers = self.pool is not None and self.pool.needs_all_layers
        enc = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=all_layers,
                           return_dict=True, **kw)
        if self.pool is None:                                    # sequence heads read (B, T, H)
            logits, feats = self.classifier(self.dropout(enc.last_hidden_state), attention_mask)
        else:
            pooled = self.pool(enc, attention_mask)              # (B, P)
            logits, feats = self.classifier(self.dropout(pooled), attention_mask)
        return Output(logits=logits, pooled=feats)


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
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load a tokenizer from {path!r}: {str(e).splitlines()[0]}") from None


def build_classifier(model_name: str, num_labels: int, pooling: str, head: str, head_args: dict[str, Any],
                     dropout: float) -> tuple[Classifier, Any, str]:
    """A new classifier on pretrained encoder weights: (model, tokenizer, resolved path)."""
    path = resolve_model(model_name)
    try:
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load model {model_name!r}: {str(e).splitlines()[0]}; fix: give a local "
                          f"transformers folder, an alias (m3e-small, minilm-en), or a hub id that is cached "
                          f"(this machine may be offline)") from None
    return Classifier(encoder, num_labels, pooling, head, head_args, dropout), load_tokenizer(path), path


def save_model(model: Classifier, tokenizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """Write model/ : config.json, model.safetensors, tokenizer files, tricklab.json."""
    out.mkdir(parents=True, exist_ok=True)
    config = model.encoder.config
    cfg = config.to_dict()
    labels = meta["labels"]["names"]
    cfg["id2label"] = {str(i): n for i, n in enumerate(labels)} if meta["task"] != "regression" else {"0": "score"}
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
    cfg["problem_type"] = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                           "regression": "regression"}[meta["task"]]
    if model.pooling_name == "pooler" and model.head_name == "linear" and config.model_type in HF_COMPATIBLE:
        cfg["architectures"] = [f"{type(model.encoder).__name__.replace('Model', '')}ForSequenceClassification"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def load_model(model_dir: str | Path) -> tuple[Classifier, Any, dict[str, Any]]:
    """Load a saved model/ folder (no pretrained download, no pickle)."""
    d = Path(model_dir)
    if not (d / META_FILE).is_file():
        raise ConfigError(f"{d}: not a tricklab model folder (no {META_FILE}); give a run folder from `tricklab train`")
    meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(str(d))
    encoder = AutoModel.from_config(config)
    m = meta["model"]
    model = Classifier(encoder, meta["num_labels"], m["pooling"], m["head"], m.get("head_args", {}), m.get("dropout", 0.1))
    state = load_file(str(d / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ConfigError(f"{d / WEIGHTS_FILE}: weights do not match the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    model.eval()
    return model, load_tokenizer(str(d)), meta
