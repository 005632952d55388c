"""Inference: the Predictor (torch or an ONNX bundle), ONNX export, the HTTP server, and `tricklab evaluate` of a
trained run on a file. May import: evaluation, model, data, and the ground floor; never training."""
from __future__ import annotations

from .predictor import Predictor

__all__ = ["Predictor"]
