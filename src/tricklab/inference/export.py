"""Export a run folder as an ONNX bundle (format: inference/onnx.py) and verify it against the torch model.

Uses torch.onnx (TorchScript exporter) and onnxruntime.quantization: `--quantize int8` is static
(quantize_static, QDQ format, per-channel weights, activation ranges calibrated on the run's own train/dev
texts or --calibration-data), so a text's answer does not depend on what else is in its batch;
`int8-dynamic` (quantize_dynamic) is kept for comparison and is run one text per call (inference/onnx.py).
Before quantization the fp32 graph can be fused by onnxruntime's transformer optimizer (inference/fusion.py,
`fuse`; by default for static int8: lower single-sentence latency at equal accuracy and throughput, benchmarks/RESULTS.md §15).
The bundle is built in a temporary folder and only moved into place when it agrees with the torch model on
real texts (the run's dev/test files) at least `min_agreement` of the time.
"""
from __future__ import annotations

import contextlib
import io
import json
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
from .fusion import FUSE, KINDS, eager_attention, fuse_graph, fused_differs, fusion_params
from .onnx import (  # noqa: F401
    BUNDLE_FILE,
    dynamic_activations,
    BUNDLE_VERSION,
    FORMATS,
    META_FILE,
    ONNX_FILE,
    QUANTIZE,
    OnnxModel,
    _pad,
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


MIN_AGREEMENT = 0.99   # default --min-agreement: top-label agreement with torch on the verification texts
VERIFY_N = 500         # verification texts at most (a seeded sample of the run's dev + test)
CALIBRATION_N = 256    # calibration texts at most (a seeded sample of the run's train + dev)
DEFAULT_KIND = "full"  # what --fuse true applies
AUTO_FUSION: dict[str | None, str] = {"int8": "full"}   # --fuse auto: quantize -> kind (RESULTS §15: p50 latency)


def run_data_texts(run: Path, roles: Sequence[str], pair: bool) -> tuple[list[Any], list[str]]:
    """Texts of the data files the run recorded in run.json (training/provenance.py) for `roles`, and the
    files read; ([], []) when the run records none (older runs, hand-made model folders) or they are gone."""
    info_path = run / "run.json"
    if not info_path.is_file():
        return [], []
    files = (json.loads(info_path.read_text(encoding="utf-8")).get("data") or {}).get("files") or {}
    texts: list[Any] = []
    used: list[str] = []
    for role in roles:
        path = Path((files.get(role) or {}).get("path") or "")
        if path.name and path.is_file():
            texts += read_verify_texts(path, run, pair)
            used.append(str(path))
    return texts, used


def _sample(texts: list[Any], n: int, seed: int = 0) -> list[Any]:
    if len(texts) <= n:
        return texts
    keep = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in keep]


def verification_texts(run: Path, pair: bool, tok: Any, verify_data: str | Path | None,
                       verify_texts: Sequence[Any] | None, n: int = VERIFY_N) -> tuple[list[Any], str]:
    """What torch and ONNX are compared on: the given texts, else --verify-data, else the run's dev + test
    files, else (a run that records no data) texts sampled from the vocabulary."""
    if verify_texts is not None:
        return list(verify_texts), "given texts"
    if verify_data is not None:
        return _sample(read_verify_texts(Path(verify_data), run, pair), n), str(verify_data)
    texts, used = run_data_texts(run, ("dev", "test"), pair)
    if texts:
        return _sample(texts, n), " + ".join(used)
    return sample_texts(tok, 64, pair), "texts sampled from the vocabulary (the run records no dev/test file)"


def calibration_texts(run: Path, pair: bool, calibration_data: str | Path | None,
                      n: int = CALIBRATION_N) -> tuple[list[Any], str]:
    """Texts whose activation ranges set the static int8 scales: --calibration-data, else the run's train +
    dev files."""
    if calibration_data is not None:
        path = Path(calibration_data)
        if not path.is_file():
            raise ConfigError(f"--calibration-data {path}: file not found; fix: give a data file in the run's format")
        texts, source = read_verify_texts(path, run, pair), str(path)
    else:
        texts, used = run_data_texts(run, ("train", "dev"), pair)
        source = " + ".join(used)
    if not texts:
        raise ConfigError(f"{run}: --quantize int8 calibrates on the run's train/dev texts, and the run records "
                          f"none (no run.json data files, or they were moved); fix: give --calibration-data FILE "
                          f"(texts like those the model will see, in the run's data format)")
    return _sample(texts, n), source


def quantize_static_int8(fp32: Path, dest: Path, texts: list[Any], tok: Any, meta: dict[str, Any]) -> None:
    """Static int8: weights per channel (7 bits, reduce_range, which avoids saturation in the u8 x s8 kernels of
    CPUs without VNNI), activations with the 99.999th percentile of the ranges seen on `texts`, QDQ format.
    MatMul/Gemm are quantized (the QDQ quantizer ignores MatMulConstBOnly, so in an unfused graph the two
    attention products are int8 too, with static scales; a fused Attention op keeps all of its work float), but the FFN
    output projections (BERT-style names `.../output/dense/MatMul`) stay float: their inputs, after GELU, have
    outliers that a per-tensor scale cannot hold (on m3e-small: agreement 0.95 with them, 0.98 without)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from ..data.batching import encode

    graph = onnx.load(str(fp32), load_external_data=False).graph
    names = {i.name for i in graph.input}
    keep_float = [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
                  and "/attention/" not in n.name]
    pair = bool(meta["data"].get("pair"))
    a = [t[0] if pair else t for t in texts]
    b = [t[1] for t in texts] if pair else None
    T = int(meta["data"]["max_length"])
    enc = encode(tok, a, b, T, meta["data"]["lowercase"], truncation=Truncation.from_meta(meta["data"]))
    feeds = []  # every batch 16 x max_length (the last one wraps around): the percentile histograms need one shape
    for idx in np.resize(np.arange(len(enc)), -(-len(enc) // 16) * 16).reshape(-1, 16):
        f = _pad(enc, idx, tok.pad_token_id or 0, "token_type_ids" in names)
        pad = T - f["input_ids"].shape[1]
        feeds.append({k: np.pad(v, ((0, 0), (0, pad)), constant_values=(tok.pad_token_id or 0) if k == "input_ids"
                                else 0) for k, v in f.items()})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its settings
        quantize_static(str(fp32), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=keep_float,
                        calibrate_method=CalibrationMethod.Percentile, extra_options={"MatMulConstBOnly": True})


def _check_feeds(tok: Any, meta: dict[str, Any], pair: bool) -> list[dict[str, np.ndarray]]:
    """Two padded batches of vocabulary texts of very different lengths (1..40 tokens, truncated at max_length)."""
    from ..data.batching import encode

    texts = sample_texts(tok, 12, pair, seed=3)
    a = [t[0] if pair else t for t in texts]
    b = [t[1] for t in texts] if pair else None
    enc = encode(tok, a, b, int(meta["data"]["max_length"]), meta["data"]["lowercase"],
                 truncation=Truncation.from_meta(meta["data"]))
    order = np.argsort(-enc.lengths, kind="stable")   # longest beside shortest in each batch
    return [_pad(enc, idx, tok.pad_token_id or 0, pair) for idx in (order[0::2], order[1::2])]


def fusion_kind(fuse: str, quantize: str | None) -> str | None:
    """The fusion kind (inference/fusion.py KINDS) to apply, or None: `auto` fuses where it was measured to help."""
    if fuse not in (*FUSE, *KINDS):
        raise ConfigError(f"--fuse {fuse!r}: unknown (choose from: {', '.join((*FUSE, *KINDS))})")
    if fuse == "auto":
        return AUTO_FUSION.get(quantize)
    if fuse == "true":
        return DEFAULT_KIND
    return None if fuse == "false" else fuse


def _fp32_graph(model: Any, tok: Any, meta: dict[str, Any], path: Path, opset: int,
                kind: str | None) -> dict[str, Any] | None:
    """The fp32 graph at `path`, fused when `kind` says so; returns the fusion record for bundle.json (None: not
    asked for; {"kind", "ops"}: applied; {"kind": None, "fallback": why}: the unfused graph was kept)."""
    pair, T = bool(meta["data"].get("pair")), int(meta["data"].get("max_length") or 8)
    if kind is None:
        _export_onnx(model, pair, path, opset, T)
        return None
    params = fusion_params(model)
    traced = path.with_name("model.traced.onnx")
    with eager_attention(model) as eager:
        _export_onnx(model, pair, traced, opset, T)
    reason = params if isinstance(params, str) else None
    ops: dict[str, int] = {}
    if reason is None and not eager:
        reason = "the encoder cannot be traced with eager attention, whose pattern the fusions need"
    if reason is None:
        try:
            ops = fuse_graph(traced, path, params, kind)  # type: ignore[arg-type]
        except Exception as e:   # the optimizer's own errors on a graph it does not expect
            reason = f"onnxruntime's optimizer failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    if reason is None:
        reason = "no fusable pattern was found" if not ops else fused_differs(traced, path, _check_feeds(tok, meta, pair))
    if reason is not None:
        traced.replace(path)
        return {"kind": None, "requested": kind, "fallback": reason}
    traced.unlink()
    return {"kind": kind, "ops": ops}


def _write_graph(model: Any, tok: Any, meta: dict[str, Any], run: Path, dest: Path, quantize: str | None,
                 opset: int, calibration_data: str | Path | None,
                 fusion: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """model.onnx in `dest` (fp32, or quantized), fused first when `fusion` (a kind) says so; returns the
    calibration record (static int8) or None, and the fusion record (`_fp32_graph`)."""
    import logging

    pair = bool(meta["data"].get("pair"))
    fp32 = dest / "model.fp32.onnx"
    fused = _fp32_graph(model, tok, meta, fp32, opset, fusion)
    if not quantize:
        fp32.rename(dest / ONNX_FILE)
        return None, fused
    logging.disable(logging.WARNING)  # its "consider pre-processing" advice is for image models
    try:
        if quantize == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(dest / ONNX_FILE), weight_type=QuantType.QInt8)
            return None, fused
        texts, source = calibration_texts(run, pair, calibration_data)
        quantize_static_int8(fp32, dest / ONNX_FILE, texts, tok, meta)
        return {"method": "static QDQ: per-channel int8 weights, activations at the 99.999th percentile",
                "n": len(texts), "source": source}, fused
    finally:
        logging.disable(logging.NOTSET)
        fp32.unlink(missing_ok=True)


def _move_into(tmp: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(item), str(target))


def export_bundle(run_dir: str | Path, out: str | Path, fmt: str = "onnx", quantize: str | None = None,
                  opset: int = 17, verify_data: str | Path | None = None, verify_texts: Sequence[Any] | None = None,
                  calibration_data: str | Path | None = None, min_agreement: float = MIN_AGREEMENT,
                  log: Callable[[str], None] | None = print, fuse: str = "auto") -> dict[str, Any]:
    """Export a run's model as a bundle in `out`, verify it against torch, return bundle.json's content.
    `fuse`: onnxruntime's transformer fusions before quantization (`fusion_kind`; a fused graph that fails its
    check falls back to the unfused one, logged and recorded in bundle.json's "fusion").
    Raises ConfigError (and writes nothing to `out`) when the agreement is below `min_agreement`."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown export format (choose from: {', '.join(FORMATS)})")
    if quantize not in (None, "none", *QUANTIZE):
        raise ConfigError(f"--quantize {quantize!r}: unknown (choose from: {', '.join(QUANTIZE)}, or leave it out)")
    if not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement {min_agreement}: must be a fraction in [0, 1]")
    quantize = None if quantize == "none" else quantize
    kind = fusion_kind(fuse, quantize)
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
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp_name:
        tmp = Path(tmp_name)
        calibration, fusion = _write_graph(model, tok, meta, run, tmp, quantize, opset, calibration_data, kind)
        tok_files = [Path(f).name for f in tok.save_pretrained(str(tmp))]
        write_json(tmp / META_FILE, meta)

        texts, source = verification_texts(run, pair, tok, verify_data, verify_texts)
        torch_pred = Predictor(model, tok, meta, device="cpu", precision="fp32")
        info = {"quantize": quantize, "calibration": calibration}
        onnx_pred = Predictor(OnnxModel(tmp / ONNX_FILE, per_text=dynamic_activations(info)), tok, meta)
        thr = threshold_vector(meta) if meta["task"] == "multi_label" else 0.5  # the decisions the bundle will make
        check = compare(meta["task"], torch_pred.logits(texts), onnx_pred.logits(texts), thr) | {
            "source": source, "min_agreement": min_agreement}
        if check["agreement"] < min_agreement:
            raise ConfigError(
                f"export {run} ({quantize or 'fp32'}): agreement with torch {check['agreement']:.4f} on {check['n']} "
                f"{source} is below --min-agreement {min_agreement}; nothing written to {out}; fix: "
                + ("export without --quantize, or give --calibration-data with texts like the served ones, "
                   if quantize else "check the run, ") + "or lower --min-agreement if that difference is acceptable")
        info = {"bundle_version": BUNDLE_VERSION, "format": fmt, "file": ONNX_FILE, "opset": opset,
                "quantize": quantize, "calibration": calibration, "fusion": fusion, "task": meta["task"],
                "labels": meta["labels"]["names"], "max_length": meta["data"]["max_length"],
                "lowercase": bool(meta["data"]["lowercase"]), "pair": pair,
                "truncation": Truncation.from_meta(meta["data"]).to_meta(),
                "temperature": meta.get("temperature"), "thresholds": meta.get("thresholds"),
                "inputs": onnx_pred.model.input_names, "name": run.resolve().name,
                "backbone": meta.get("model", {}).get("backbone"),
                "run": str(run.resolve()), "versions": _versions(), "verify": check}
        write_json(tmp / BUNDLE_FILE, info)
        write_manifest(tmp, [ONNX_FILE, META_FILE, BUNDLE_FILE, *tok_files])   # sizes and SHA-256, checked at load
        del onnx_pred  # release the session's file before moving it
        _move_into(tmp, out)
    if log:
        log(f"exported {out / ONNX_FILE} ({fmt}{', ' + quantize if quantize else ''}, opset {opset})")
        if fusion:
            log(f"fused ({fusion['kind']}): " + ", ".join(f"{n} {op}" for op, n in fusion["ops"].items())
                if fusion["kind"] else f"fusion ({fusion['requested']}) not applied, unfused graph kept: "
                f"{fusion['fallback']}")
        if calibration:
            log(f"calibrated int8 activation ranges on {calibration['n']} texts of {calibration['source']}")
        log(f"verify on {check['n']} {source}: torch vs onnx agreement {check['agreement']:.4f} "
            f"(at least {min_agreement}), max prob difference {check['max_prob_diff']:.2e}")
    return info
