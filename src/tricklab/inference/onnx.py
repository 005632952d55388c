"""ONNX runtime: a bundle folder (written by inference/export.py) that predicts with onnxruntime.

A bundle folder holds:
  model.onnx       the classifier graph, inputs (input_ids, attention_mask[, token_type_ids]) with
                   dynamic batch and sequence axes, output `logits` (B, C)
  tokenizer files  as written by the tokenizer's save_pretrained
  tricklab.json    the run's meta: task, labels, data.max_length, data.lowercase, data.pair,
                   data.truncation (long-text policy: chunk windows are aggregated per text, as in torch),
                   temperature (single-label) / thresholds (multi-label) fitted on dev, applied by Predictor
  bundle.json      what was exported, how (opset, quantization) and with which versions; the
                   verification result (torch vs ONNX agreement)
  manifest.json    size and SHA-256 of every file above (runfiles.write_manifest), checked at load: a
                   missing, truncated or edited file is one line naming it (bundles without one: the tokenizer's
                   files are checked)

Loading a bundle needs onnxruntime and a tokenizer, never the torch model classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.batching import Encoded, eval_batches
from ..errors import ConfigError, TrickLabError
from ..runfiles import check_manifest, check_tokenizer, check_tokenizer_files, read_json

BUNDLE_FILE = "bundle.json"
META_FILE = "tricklab.json"
ONNX_FILE = "model.onnx"
BUNDLE_VERSION = 1
FORMATS = ("onnx",)
QUANTIZE = ("int8",)


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise TrickLabError("onnxruntime is not installed; fix: pip install 'tricklab[serve]' "
                            "(or pip install onnx onnxruntime)") from None
    return onnxruntime


class OnnxModel:
    """An onnxruntime session with the same batching as the torch backend (length-sorted batches,
    each padded to its own longest example, results in input order)."""

    backend = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = _require_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def all_logits(self, enc: Encoded, batch_size: int, pad_id: int) -> np.ndarray:
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for idx in eval_batches(enc.lengths, batch_size):
            parts.append((idx, self.run(_pad(enc, idx, pad_id, "token_type_ids" in self.input_names))))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.zeros((len(enc), parts[0][1].shape[1]), dtype=np.float32)
        for idx, lg in parts:
            out[idx] = lg
        return enc.aggregate(out)  # chunk windows -> documents, as runtime.all_logits

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {k: v for k, v in feeds.items() if k in self.input_names})[0].astype(np.float32)


def _pad(enc: Encoded, idx: np.ndarray, pad_id: int, with_types: bool) -> dict[str, np.ndarray]:
    """int64 arrays (B, T) for one batch, padded to its longest example."""
    ids = [enc.input_ids[i] for i in idx]
    T = max(len(x) for x in ids)
    input_ids = np.full((len(ids), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), T), dtype=np.int64)
    types = np.zeros((len(ids), T), dtype=np.int64)
    for r, i in enumerate(idx):
        x = enc.input_ids[i]
        input_ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
        if enc.token_type_ids is not None:
            types[r, : len(x)] = enc.token_type_ids[i]
    feeds = {"input_ids": input_ids, "attention_mask": mask}
    if with_types:
        feeds["token_type_ids"] = types
    return feeds


def load_bundle(bundle_dir: str | Path, threads: int | None = None) -> tuple[OnnxModel, Any, dict[str, Any]]:
    """(session, tokenizer, meta) from a bundle folder written by `export_bundle`."""
    d = Path(bundle_dir)
    if not (d / BUNDLE_FILE).is_file() or not (d / ONNX_FILE).is_file():
        hint = " (it is a run folder: give it to --run, or export it first with `tricklab export`)" \
            if (d / "model" / META_FILE).is_file() or (d / META_FILE).is_file() else ""
        raise ConfigError(f"{d}: not a tricklab bundle (needs {BUNDLE_FILE} and {ONNX_FILE}){hint}; "
                          f"fix: `tricklab export --run RUN --out {d}`")
    fix = f"export it again: tricklab export --run RUN --out {d} (its files were damaged or lost)"
    if not check_manifest(d, fix):                 # bundles from before manifests: the tokenizer's files at least
        check_tokenizer_files(d, fix)
    info = read_json(d / BUNDLE_FILE, fix)
    if info.get("bundle_version", 0) > BUNDLE_VERSION:
        raise ConfigError(f"{d}: bundle version {info.get('bundle_version')} is newer than this tricklab "
                          f"understands ({BUNDLE_VERSION}); fix: upgrade tricklab")
    meta = read_json(d / META_FILE, fix)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(d))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{d}: could not load the bundle's tokenizer: {str(e).splitlines()[0]}") from None
    check_tokenizer(tok, d, fix)
    try:
        model = OnnxModel(d / ONNX_FILE, threads)
    except TrickLabError:
        raise
    except Exception as e:   # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
        raise TrickLabError(f"{d / ONNX_FILE}: unreadable ({str(e).splitlines()[0][:160]}: truncated or damaged); "
                            f"fix: {fix}") from None
    return model, tok, meta


# ---------------------------------------------------------------- export

