"""Inference: the Predictor (torch or an ONNX bundle), ONNX export, the HTTP server, and `tricklab evaluate` of a
trained run on a file. May import: evaluation, model, data, and the ground floor; never training.

`Predictor` is imported on first use, so the server's parser processes (guard.py) start without torch."""
from __future__ import annotations

from typing import Any

__all__ = ["Predictor"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
