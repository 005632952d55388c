"""Predictor: a trained run folder -> labels and probabilities for new texts (or text pairs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.batching import encode
from ..data.truncation import Truncation
from ..errors import ConfigError, TrickLabError
from ..evaluation.calibration import scaled_probs
from ..evaluation.metrics import sigmoid
from ..evaluation.thresholds import check_options, select_labels, threshold_vector
from ..model import load_model
from ..model.runtime import all_logits, resolve_precision
from ..runfiles import confine

Text = str | tuple[str, str] | list[str]


class Predictor:
    """`Predictor.from_run("runs/demo").predict(["text", ...], top_k=3)`.

    Returns one dict per input, in input order:
      single_label: {"label", "score", "top_k": [[label, prob], ...]}
      multi_label:  {"labels": [...], "scores": {label: prob}, "top_k": [...]}
      regression:   {"score": value}
    Probabilities use the model's fitted temperature (single_label, meta "temperature"); multi-label
    decisions use its tuned per-label thresholds (meta "thresholds"; 0.5 without), or `threshold` for
    every label, then at least `min_k` and at most `max_k` labels (most probable first).
    `abstain_below=P`: when the top probability is below P the answer is explicitly uncertain:
      {"label": None, "score": p_top, "uncertain": True, "top_k": [...]}   (multi_label: "labels": None)
    and with `abstain_below` set every answer carries "uncertain" (False when it is a real label).
    """

    def __init__(self, model: Any, tokenizer: Any, meta: dict[str, Any], device: str | None = None,
                 precision: str | None = None, batch_size: int = 64, threshold: float | None = None,
                 threads: int | None = None, min_k: int = 0, max_k: int | None = None,
                 abstain_below: float | None = None):
        # `model`: a torch Classifier, or an inference.onnx.OnnxModel (backend "onnx": CPU, fp32, its own threads)
        self.backend: str = getattr(model, "backend", "torch")
        if threads and self.backend == "torch":
            torch.set_num_threads(int(threads))
        if self.backend == "onnx":
            self.device, self.model, self.precision = torch.device("cpu"), model, "fp32"
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = model.to(self.device).eval()
            if precision is None:  # the run's own, so predictions reproduce its metrics.json (older runs: auto)
                precision = meta.get("precision") or "auto"
                precision = "auto" if precision == "fp16" and self.device.type != "cuda" else precision
            self.precision = resolve_precision(precision, self.device.type)
        self.tokenizer, self.meta = tokenizer, meta
        self.task = meta["task"]
        self.labels: list[str] = meta["labels"]["names"]
        self.batch_size = batch_size
        self.temperature = float(meta.get("temperature") or 1.0)
        self.threshold, self.min_k, self.max_k, self.abstain_below = threshold, min_k, max_k, abstain_below
        self._check(threshold, min_k, max_k, abstain_below)

    @classmethod
    def from_run(cls, run_dir: str | Path, **kw: Any) -> "Predictor":
        d = Path(run_dir)
        model_dir = d / "model" if (d / "model").is_dir() else d
        confine(d, model_dir, "the model folder")        # a run folder is not trusted to link elsewhere
        model, tok, meta = load_model(model_dir)
        return cls(model, tok, meta, **kw)

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        """An exported bundle (`tricklab export`), run by onnxruntime; no torch model code."""
        from .onnx import load_bundle

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

    def _check(self, threshold: float | None, min_k: int | None, max_k: int | None, abstain_below: float | None) -> None:
        check_options(threshold, min_k, max_k)
        if abstain_below is not None and not 0 <= abstain_below <= 1:
            raise ConfigError(f"--abstain-below {abstain_below}: must be a probability in [0, 1]")
        if self.task != "multi_label" and (threshold is not None or min_k or max_k is not None):
            raise ConfigError(f"--threshold/--min-k/--max-k are for multi-label models; this one is {self.task}")
        if self.task == "regression" and abstain_below is not None:
            raise ConfigError("--abstain-below is for classifiers; this model is a regression model (no probabilities)")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) logits -> probabilities as predict() reports them: softmax(z / T) or sigmoid(z)."""
        return scaled_probs(logits, self.temperature) if self.task == "single_label" else sigmoid(logits)

    def predict(self, texts: Sequence[Text], top_k: int = 1, *, threshold: float | None = None,
                min_k: int | None = None, max_k: int | None = None,
                abstain_below: float | None = None) -> list[dict[str, Any]]:
        """Options left at None take the Predictor's own (its constructor arguments)."""
        if isinstance(texts, str):
            raise TrickLabError("predict() takes a list of texts; wrap a single text in a list")
        threshold = self.threshold if threshold is None else threshold
        min_k = self.min_k if min_k is None else min_k
        max_k = self.max_k if max_k is None else max_k
        abstain = self.abstain_below if abstain_below is None else abstain_below
        self._check(threshold, min_k, max_k, abstain)
        if not texts:
            return []
        lg = self.logits(texts)
        if self.task == "regression":
            return [{"score": float(x)} for x in lg[:, 0]]
        probs = self.probabilities(lg)                                           # (N, C)
        k = max(1, min(top_k, len(self.labels)))
        chosen = select_labels(probs, threshold_vector(self.meta, threshold), min_k or 0, max_k) \
            if self.task == "multi_label" else None
        out = []
        for i, p in enumerate(probs):
            order = np.argsort(-p)[:k]
            top = [[self.labels[j], float(p[j])] for j in order]
            unsure = abstain is not None and float(p.max()) < abstain
            if self.task == "single_label":
                r = {"label": None if unsure else top[0][0], "score": top[0][1], "top_k": top}
            else:
                on = chosen[i]
                r = {"labels": None if unsure else [self.labels[j] for j in on],
                     "scores": {} if unsure else {self.labels[j]: float(p[j]) for j in on}, "top_k": top}
            if abstain is not None:
                r["uncertain"] = unsure
            out.append(r)
        return out
