from __future__ import annotations

from .classifier import Classifier, build_classifier, decoder_backbone, load_model, prior_bias, save_model
from . import hf  # noqa: F401,E402  (registers model_type "tricklab" with transformers' Auto classes)
from .resolve import resolve_model

__all__ = ["Classifier", "build_classifier", "decoder_backbone", "load_model", "prior_bias", "resolve_model", "save_model"]
