"""encoder -> pooling -> dropout -> head: the modules of a classifier and its forward pass, shared by
classifier.Classifier (training, prediction) and hf.TrickLabForSequenceClassification (transformers)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import HEADS, POOLINGS
from ..types import Output
from . import heads as _heads  # noqa: F401  (registration)
from . import pooling as _pooling  # noqa: F401

# model types whose tokenizer puts the summary token last (XLNet: text <sep> <cls>); they have no pooler layer.
# Our batches are padded on the right (XLNet's relative attention is indifferent to the side), so `cls`
# pooling reads the last real token for them.
SUMMARY_LAST = {"xlnet"}


def is_decoder(config: Any) -> bool:
    """A causal (decoder-only) LM body: a model type with a causal-LM class and no masked-LM one (LLaMA, Qwen2,
    GPT-2, Mistral, ...; not BERT/RoBERTa, which have both, nor XLNet)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    t = getattr(config, "model_type", "")
    return t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and t not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and t not in SUMMARY_LAST


class ClassifierParts:
    """encoder -> pooling -> dropout -> head, shared by `Classifier` (an nn.Module, used for training and
    prediction) and `hf.TrickLabForSequenceClassification` (the same modules as a transformers model, so one
    model.safetensors serves both). `build` registers the modules; `classify` runs them."""

    def build(self, encoder: nn.Module, num_labels: int, pooling: str = "pooler", head: str = "linear",
              head_args: dict[str, Any] | None = None, dropout: float = 0.1) -> None:
        self.encoder_name = getattr(encoder, "base_model_prefix", "") or "encoder"
        self.add_module(self.encoder_name, encoder)  # type: ignore[attr-defined]
        self.pooling_name, self.head_name = pooling, head
        self.head_args = dict(head_args or {})
        head_cls = HEADS.get_or_fail(head)
        self.pool = None if head_cls.sequence else POOLINGS.build(pooling)
        hidden = encoder.config.hidden_size
        if self.pool is not None and self.pool.needs_pooler and getattr(encoder, "pooler", None) is None:
            raise ConfigError(f"model.pooling=pooler: this {encoder.config.model_type} encoder has no pooler layer; "
                              f"fix: --set model.pooling="
                              + ("last (the decoder's last real token)" if is_decoder(encoder.config)
                                 else "mean (or max, cls)"))
        if self.pool is not None:
            self.pool.summary_last = encoder.config.model_type in SUMMARY_LAST
        if (self.pool is None or not self.pool.needs_pooler) and getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused weights would stall DDP and waste time
        in_dim = hidden if self.pool is None else self.pool.out_dim(hidden, encoder.config.num_hidden_layers)
        self.dropout = nn.Dropout(dropout)
        self.causal_body = is_decoder(encoder.config)
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

    def classify(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Output:
        kw: dict[str, Tensor] = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if getattr(self, "causal_body", False):   # positions count real tokens only: left padding = right padding
            kw["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        all_layers = self.pool is not None and self.pool.needs_all_layers
        enc = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=all_layers,
                           return_dict=True, **kw)
        if self.pool is None:                                    # sequence heads read (B, T, H)
            logits, feats = self.classifier(self.dropout(enc.last_hidden_state), attention_mask)
        else:
            pooled = self.pool(enc, attention_mask)              # (B, P)
            logits, feats = self.classifier(self.dropout(pooled), attention_mask)
        return Output(logits=logits, pooled=feats)
