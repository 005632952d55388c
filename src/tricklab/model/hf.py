"""A run's model/ folder as a transformers model: `TrickLabConfig` + `TrickLabForSequenceClassification`.

transformers' own custom-model API (PreTrainedConfig / PreTrainedModel, `auto_map` in config.json, loaded with
`trust_remote_code=True`; registered with AutoConfig / AutoModelForSequenceClassification when tricklab is
imported). The model holds the very modules of `classifier.Classifier` under the same names (ClassifierParts),
so the one model.safetensors loads in both, with every head and pooling:

    pipeline("text-classification", model="runs/x/model", trust_remote_code=True)
    AutoModelForSequenceClassification.from_pretrained("runs/x/model", trust_remote_code=True)

The folder carries `modeling_tricklab.py` (REMOTE_CODE), which only imports this module: without tricklab
installed, transformers refuses with "requires the following packages ...: tricklab. Run `pip install
tricklab`"; without trust_remote_code it refuses to load custom code. It never loads a random head.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput

from ..registry import load_plugins
from .parts import ClassifierParts

MODEL_TYPE = "tricklab"
REMOTE_CODE_FILE = "modeling_tricklab.py"
AUTO_MAP = {"AutoConfig": "modeling_tricklab.TrickLabConfig",
            "AutoModelForSequenceClassification": "modeling_tricklab.TrickLabForSequenceClassification"}
REMOTE_CODE = '''"""A tricklab classifier (encoder -> pooling -> head) for transformers' trust_remote_code=True.
The classes live in the tricklab package (pip install tricklab); this file only points transformers to them."""
from tricklab.model.hf import TrickLabConfig, TrickLabForSequenceClassification  # noqa: F401
'''


class TrickLabConfig(PretrainedConfig):
    """encoder: the encoder's own config (dict with its model_type); pooling, head, head_args, head_dropout: the
    tricklab model section; plugins: modules to import first (plugin heads or poolings); labels as usual
    (id2label, label2id, problem_type)."""
    model_type = MODEL_TYPE

    def __init__(self, encoder: dict[str, Any] | None = None, pooling: str = "pooler", head: str = "linear",
                 head_args: dict[str, Any] | None = None, head_dropout: float = 0.1,
                 plugins: list[str] | None = None, **kwargs: Any):
        self.encoder = dict(encoder or {})
        self.pooling, self.head = pooling, head
        self.head_args = dict(head_args or {})
        self.head_dropout = head_dropout
        self.plugins = list(plugins or [])
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        enc = dict(self.encoder)
        return AutoConfig.for_model(enc.pop("model_type"), **enc)


class TrickLabForSequenceClassification(ClassifierParts, PreTrainedModel):
    """`forward(input_ids, attention_mask, token_type_ids, labels)` -> SequenceClassifierOutput(loss, logits):
    the logits tricklab's Predictor computes before its temperature / thresholds."""
    config_class = TrickLabConfig
    base_model_prefix = "tricklab"   # no such attribute: the checkpoint's names are the full module paths

    def __init__(self, config: TrickLabConfig):
        super().__init__(config)
        load_plugins(config.plugins)
        self.build(AutoModel.from_config(config.encoder_config()), config.num_labels, config.pooling, config.head,
                   config.head_args, config.head_dropout)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if hasattr(self.encoder, "_init_weights") and module is not self:
            self.encoder._init_weights(module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.classify(input_ids, attention_mask, token_type_ids).logits      # (B, C)
        loss = None
        if labels is not None:
            f = torch.nn.functional
            if self.config.problem_type == "regression":
                loss = f.mse_loss(logits.squeeze(-1), labels.float())
            elif self.config.problem_type == "multi_label_classification":
                loss = f.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = f.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, TrickLabConfig, exist_ok=True)
AutoModelForSequenceClassification.register(TrickLabConfig, TrickLabForSequenceClassification, exist_ok=True)


def hf_config(encoder_config: PretrainedConfig, num_labels: int, id2label: dict[str, str], problem_type: str,
              pooling: str, head: str, head_args: dict[str, Any], dropout: float, plugins: list[str]) -> dict[str, Any]:
    """config.json of a model/ folder that transformers loads as TrickLabForSequenceClassification."""
    cfg = TrickLabConfig(encoder=encoder_config.to_dict(), pooling=pooling, head=head, head_args=head_args,
                         head_dropout=dropout, plugins=plugins, num_labels=num_labels,
                         id2label={int(k): v for k, v in id2label.items()},
                         label2id={v: int(k) for k, v in id2label.items()}, problem_type=problem_type,
                         architectures=["TrickLabForSequenceClassification"])
    d = cfg.to_dict()
    d["auto_map"] = dict(AUTO_MAP)
    return d
