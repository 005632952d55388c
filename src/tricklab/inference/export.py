"""Export a run folder as an ONNX bundle (format: inference/onnx.py) and verify it against the torch model.

Uses torch.onnx (TorchScript exporter) and onnxruntime's dynamic quantisation; nothing hand-written in between.
"""
from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.truncation import Truncation
from ..errors import ConfigError, TrickLabError
from ..evaluation.thresholds import threshold_vector
from ..runfiles import write_json, write_manifest
from .onnx import (  # noqa: F401
    BUNDLE_FILE,
    BUNDLE_VERSION,
    FORMATS,
    META_FILE,
    ONNX_FILE,
    QUANTIZE,
    OnnxModel,
    _require_onnxruntime,
    load_bundle,
)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("tricklab", "torch", "transformers", "tokenizers", "onnx", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _export_onnx(model: Any, pair: bool, path: Path, opset: int, max_length: int = 8) -> None:
    """The TorchScript-based exporter (dynamo=False): one trace, dynamic (batch, sequence) axes.

    The dpcnn head's block loop runs once per halving of the sequence, a Python loop the trace unrolls:
    it is traced at the run's max_length, so the graph holds enough blocks for every input (shorter inputs
    pass through the extra blocks unchanged)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # (B, T) each -> (B, C)
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    wrapper = Logits(model).eval()
    B, T = 2, (max(8, max_length) if getattr(model, "head_name", "") == "dpcnn" else 8)
    ids = torch.full((B, T), 5, dtype=torch.long)
    mask = torch.ones((B, T), dtype=torch.long)
    mask[1, T // 2:] = 0
    args: tuple = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if pair:
        args = (ids, mask, torch.cat([torch.zeros((B, T // 2)), torch.ones((B, T // 2))], 1).long())
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    import warnings

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def sample_texts(tokenizer: Any, n: int = 64, pair: bool = False, seed: int = 0) -> list[Any]:
    """`n` texts of 1..40 vocabulary tokens (no special tokens), varied lengths, seeded."""
    special = set(tokenizer.all_special_tokens)
    vocab = [t for t in tokenizer.get_vocab() if t not in special and not t.startswith(("[unused", "<"))
             and not t.startswith("##")]
    if not vocab:
        vocab = list("abcdefghij")
    rng = random.Random(seed)

    def one() -> str:
        toks = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
        return "".join(toks) if all(len(t) == 1 for t in toks[:3]) else " ".join(toks)

    return [(one(), one()) if pair else one() for _ in range(n)]


def read_verify_texts(path: Path, run_dir: Path, pair: bool) -> list[Any]:
    """Texts of a data file in the run's data format (its config.yaml), labelled or not."""
    from ..config import load_config
    from ..data.readers import read_rows
    from ..errors import DataError

    cfg_path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--verify-data {path}: file not found; fix: give a dev/test file of the run, or leave it out")
    cfg = load_config(str(cfg_path) if cfg_path.is_file() else None, [])
    try:
        rows = read_rows(path, cfg.data, labelled=True, pair=pair)
    except DataError:
        rows = read_rows(path, cfg.data, labelled=False, pair=pair)
    return [(r.text, r.text_b or "") if pair else r.text for r in rows]


def compare(task: str, a: np.ndarray, b: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, Any]:
    """Agreement of two logit arrays (N, C): same top label (single), same label set (multi), and the
    largest probability (or score, for regression) difference."""
    if len(a) == 0:
        return {"n": 0, "agreement": 1.0, "max_prob_diff": 0.0}
    from ..evaluation.metrics import sigmoid, softmax

    if task == "regression":
        d = np.abs(a[:, 0] - b[:, 0])
        return {"n": len(a), "agreement": float(np.mean(d <= 1e-2 * np.maximum(1.0, np.abs(a[:, 0])))),
                "max_prob_diff": float(d.max())}
    f = softmax if task == "single_label" else sigmoid
    pa, pb = f(a), f(b)
    same = pa.argmax(1) == pb.argmax(1) if task == "single_label" else ((pa >= threshold) == (pb >= threshold)).all(1)
    return {"n": len(a), "agreement": float(same.mean()), "max_prob_diff": float(np.abs(pa - pb).max())}


def export_bundle(run_dir: str | Path, out: str | Path, fmt: str = "onnx", quantize: str | None = None,
                  opset: int = 17, verify_data: str | Path | None = None, verify_texts: Sequence[Any] | None = None,
                  log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Export a run's model as a bundle in `out`, verify it against torch, return bundle.json's content."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown export format (choose from: {', '.join(FORMATS)})")
    if quantize not in (None, "none", *QUANTIZE):
        raise ConfigError(f"--quantize {quantize!r}: unknown (choose from: {', '.join(QUANTIZE)}, or leave it out)")
    quantize = None if quantize == "none" else quantize
    _require_onnxruntime()
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise TrickLabError("onnx is not installed; fix: pip install 'tricklab[serve]'") from None
    from ..model import load_model
    from .predictor import Predictor

    run = Path(run_dir)
    model_dir = run / "model" if (run / "model").is_dir() else run
    model, tok, meta = load_model(model_dir)
    pair = bool(meta["data"].get("pair"))
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_FILE).is_file():
        raise ConfigError(f"--out {out}: folder exists and is not a bundle; fix: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        _export_onnx(model, pair, fp32, opset, int(meta["data"].get("max_length") or 8))
        if quantize == "int8":
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.disable(logging.WARNING)  # its "consider pre-processing" advice is for image models
            try:
                quantize_dynamic(str(fp32), str(out / ONNX_FILE), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
        else:
            shutil.move(str(fp32), str(out / ONNX_FILE))
    tok_files = [Path(p).name for p in tok.save_pretrained(str(out))]
    write_json(out / META_FILE, meta)

    # verify: the same texts through both backends
    if verify_texts is not None:
        texts, source = list(verify_texts), "given texts"
    elif verify_data is not None:
        texts, source = read_verify_texts(Path(verify_data), run, pair), str(verify_data)
    else:
        texts, source = sample_texts(tok, 64, pair), "texts sampled from the vocabulary"
    torch_pred = Predictor(model, tok, meta, device="cpu", precision="fp32")
    onnx_pred = Predictor(OnnxModel(out / ONNX_FILE), tok, meta)
    thr = threshold_vector(meta) if meta["task"] == "multi_label" else 0.5  # the decisions the bundle will make
    check = compare(meta["task"], torch_pred.logits(texts), onnx_pred.logits(texts), thr) | {"source": source}
    info = {"bundle_version": BUNDLE_VERSION, "format": fmt, "file": ONNX_FILE, "opset": opset,
            "quantize": quantize, "task": meta["task"], "labels": meta["labels"]["names"],
            "max_length": meta["data"]["max_length"], "lowercase": bool(meta["data"]["lowercase"]), "pair": pair,
            "truncation": Truncation.from_meta(meta["data"]).to_meta(),
            "temperature": meta.get("temperature"), "thresholds": meta.get("thresholds"),
            "inputs": onnx_pred.model.input_names, "name": run.resolve().name,
            "backbone": meta.get("model", {}).get("backbone"),
            "run": str(run.resolve()), "versions": _versions(), "verify": check}
    write_json(out / BUNDLE_FILE, info)
    write_manifest(out, [ONNX_FILE, META_FILE, BUNDLE_FILE, *tok_files])   # sizes and SHA-256, checked at load
    if log:
        log(f"exported {out / ONNX_FILE} ({fmt}{', ' + quantize if quantize else ''}, opset {opset})")
        log(f"verify on {check['n']} {source}: torch vs onnx agreement {check['agreement']:.4f}, "
            f"max prob difference {check['max_prob_diff']:.2e}")
    return info
