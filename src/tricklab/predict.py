"""Predictor: a trained run folder -> labels and probabilities for new texts (or text pairs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data.batching import encode
from .data.truncation import Truncation
from .errors import TrickLabError
from .evaluate import sigmoid, softmax
from .model import load_model
from .runtime import all_logits, resolve_precision

Text = str | tuple[str, str] | list[str]


class Predictor:
    """`Predictor.from_run("runs/demo").predict(["text", ...], top_k=3)`.

    Returns one dict per input, in input order:
      single_label: {"label", "score", "top_k": [[label, prob], ...]}
      multi_label:  {"labels": [...], "scores": {label: prob}, "top_k": [...]}   (threshold 0.5)
      regression:   {"score": value}
    """

    def __init__(self, model: Any, tokenizer: Any, meta: dict[str, Any], device: str | None = None,
                 precision: str = "auto", batch_size: int = 64, threshold: float = 0.5, threads: int | None = None):
        # `model`: a torch Classifier, or an onnx_backend.OnnxModel (backend "onnx": CPU, fp32, its own threads)
        self.backend: str = getattr(model, "backend", "torch")
        if threads and self.backend == "torch":
            torch.set_num_threads(int(threads))
        if self.backend == "onnx":
            self.device, self.model, self.precision = torch.device("cpu"), model, "fp32"
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = model.to(self.device).eval()
            self.precision = resolve_precision(precision, self.device.type)
        self.tokenizer, self.meta = tokenizer, meta
        self.task = meta["task"]
        self.labels: list[str] = meta["labels"]["names"]
        self.batch_size, self.threshold = batch_size, threshold

    @classmethod
    def from_run(cls, run_dir: str | Path, **kw: Any) -> "Predictor":
        d = Path(run_dir)
        model_dir = d / "model" if (d / "model").is_dir() else d
        model, tok, meta = load_model(model_dir)
        return cls(model, tok, meta, **kw)

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        """An exported bundle (`tricklab export`), run by onnxruntime; no torch model code."""
        from .onnx_backend import load_bundle

        model, tok, meta = load_bundle(bundle_dir, threads)
        return cls(model, tok, meta, **kw)

    def logits(self, texts: Sequence[Text]) -> np.ndarray:
        pair = bool(self.meta["data"].get("pair"))
        a, b = [], []
        for i, t in enumerate(texts):
            if pair:
                if isinstance(t, str):
                    t = tuple(t.split("\t", 1))
                if len(t) != 2:
                    raise TrickLabError(f"input {i + 1}: this model classifies sentence pairs: give text_a<TAB>text_b")
                a.append(t[0]), b.append(t[1])
            else:
                a.append(t if isinstance(t, str) else "\t".join(t))
        enc = encode(self.tokenizer, a, b if pair else None, self.meta["data"]["max_length"], self.meta["data"]["lowercase"],
                     truncation=Truncation.from_meta(self.meta["data"]))   # the run's long-text policy (old runs: head)
        pad = self.tokenizer.pad_token_id or 0
        if self.backend == "onnx":
            return self.model.all_logits(enc, self.batch_size, pad)
        return all_logits(self.model, enc, self.batch_size, pad, self.device, self.precision)

    def predict(self, texts: Sequence[Text], top_k: int = 1) -> list[dict[str, Any]]:
        if isinstance(texts, str):
            raise TrickLabError("predict() takes a list of texts; wrap a single text in a list")
        if not texts:
            return []
        lg = self.logits(texts)
        if self.task == "regression":
            return [{"score": float(x)} for x in lg[:, 0]]
        probs = softmax(lg) if self.task == "single_label" else sigmoid(lg)
        k = max(1, min(top_k, len(self.labels)))
        out = []
        for p in probs:
            order = np.argsort(-p)[:k]
            top = [[self.labels[j], float(p[j])] for j in order]
            if self.task == "single_label":
                out.append({"label": top[0][0], "score": top[0][1], "top_k": top})
            else:
                on = [j for j in np.argsort(-p) if p[j] >= self.threshold]
                out.append({"labels": [self.labels[j] for j in on], "scores": {self.labels[j]: float(p[j]) for j in on},
                            "top_k": top})
        return out
