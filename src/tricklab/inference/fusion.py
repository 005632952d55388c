"""onnxruntime's transformer graph fusions on an exported encoder graph, checked before they are kept.

Uses onnxruntime.transformers.optimizer.optimize_model (model_type "bert", the encoder config's heads and
hidden size; Python fusions only, opt_level 0, so the saved graph holds no host-specific kernels), then
onnxruntime's symbolic shape inference, which types the tensors between contrib ops. It rewrites
BERT-family subgraphs into onnxruntime contrib ops: EmbedLayerNormalization (word + position + segment
embeddings and their LayerNorm), Attention (Q/K/V projections, masked softmax and context product in one op),
SkipLayerNormalization (residual add + bias + LayerNorm) and BiasGelu. The attention pattern is only
recognised in a graph traced with eager attention (the sdpa trace hides it behind masking ops), so the model
is traced with eager attention when fusing (`eager_attention`).

Kinds (`KINDS`):
  full          every fusion above; the Attention op's Q/K/V weights are not quantized by static QDQ (it has
                no QDQ form), so they stay fp32 in a static int8 graph
  no-attention  SkipLayerNormalization, BiasGelu, LayerNormalization; the Q/K/V MatMuls stay MatMuls, which
                static int8 quantizes

A fused graph is kept only when it reproduces the unfused graph's logits on a batch of very different
lengths and on each of its texts alone (which also catches a fused Attention that reads the mask wrongly);
otherwise the unfused graph is kept and the reason is returned, for bundle.json and the export log.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

FUSE = ("auto", "true", "false")
KINDS = ("full", "no-attention")
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu",
             "Gelu", "FastGelu")
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "distilbert", "nezha", "megatron-bert")
TOLERANCE = 1e-4   # max |fused - unfused| logit difference (relative to max(1, |logit|)) for fp32 graphs


def fusion_params(model: Any) -> tuple[str, int, int] | str:
    """(model_type for optimize_model, num_heads, hidden_size) of the model's encoder, or why it cannot fuse."""
    cfg = getattr(getattr(model, "encoder", None), "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt not in BERT_LIKE:
        return f"encoder type {mt!r} has no onnxruntime BERT fusion (fused for: {', '.join(BERT_LIKE)})"
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)
    if not heads or not hidden:
        return f"encoder config lacks num_attention_heads/hidden_size ({heads}, {hidden})"
    return "bert", int(heads), int(hidden)


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[bool]:
    """The encoder set to eager attention for a trace (restored afterwards); yields whether it could be set."""
    enc = getattr(model, "encoder", None)
    cfg = getattr(enc, "config", None)
    before = getattr(cfg, "_attn_implementation", None)
    if enc is None or not hasattr(enc, "set_attn_implementation") or before is None:
        yield False
        return
    try:
        enc.set_attn_implementation("eager")
    except (ValueError, ImportError):
        yield False
        return
    try:
        yield True
    finally:
        enc.set_attn_implementation(before)


def fuse_graph(src: Path, dest: Path, params: tuple[str, int, int], kind: str = "full") -> dict[str, int]:
    """Write the fused graph of `src` to `dest`; return the fused op counts (op type -> nodes, non-zero)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    if kind not in KINDS:
        raise ValueError(f"fusion kind {kind!r}: choose from {', '.join(KINDS)}")
    model_type, heads, hidden = params
    opts = FusionOptions(model_type)
    opts.enable_attention = kind == "full"
    opts.enable_embed_layer_norm = kind == "full"   # its mask output feeds the fused Attention
    log = logging.getLogger("onnxruntime.transformers")   # it logs every fusion at INFO/WARNING
    level, log.level = log.level, logging.ERROR
    try:
        opt = optimizer.optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                                       optimization_options=opts, opt_level=0)
        stats = opt.get_fused_operator_statistics()
        # tensor types through the contrib ops (onnx's own shape inference stops at them): without them the
        # static quantizer cannot tell which MatMul inputs are float, and leaves those MatMuls unquantized
        opt.model = SymbolicShapeInference.infer_shapes(opt.model, auto_merge=True)
        opt.save_model_to_file(str(dest))   # also declares the com.microsoft opset of the fused ops
    finally:
        log.level = level
    return {op: int(n) for op, n in stats.items() if n and op in FUSED_OPS}


def fused_differs(unfused: Path, fused: Path, feeds: list[dict[str, np.ndarray]],
                  tolerance: float = TOLERANCE) -> str | None:
    """Why the fused graph cannot replace the unfused one (None when it reproduces its logits on every feed).
    Feeds are padded batches of different lengths; each row is also run alone, cut to its own length."""
    import onnxruntime as ort

    try:
        sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (unfused, fused)]
        names = [{i.name for i in s.get_inputs()} for s in sessions]
        for feed in feeds:
            cases = [feed] + [{k: v[r:r + 1, : int(feed["attention_mask"][r].sum())] for k, v in feed.items()}
                              for r in range(len(feed["input_ids"]))]
            for case in cases:
                a, b = (s.run(["logits"], {k: v for k, v in case.items() if k in n})[0]
                        for s, n in zip(sessions, names))
                diff = float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
                if not np.isfinite(diff) or diff > tolerance:
                    return (f"the fused graph's logits differ from the unfused graph's by {diff:.2e} "
                            f"(batch of {len(case['input_ids'])}, length {case['input_ids'].shape[1]}; "
                            f"tolerance {tolerance:g})")
    except Exception as e:   # onnxruntime's own error types (Fail, InvalidGraph, ...)
        return f"the fused graph does not run: {str(e).splitlines()[0][:200]}"
    return None
