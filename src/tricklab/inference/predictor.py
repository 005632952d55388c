"""Predictor: a trained run folder -> labels and probabilities for new texts (or text pairs): a list in memory
(predict), a stream of texts or records (predict_iter), or a file to a file (predict_file: inference/files.py
reads, inference/outputs.py writes, tqdm shows progress)."""
from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

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
from .files import ON_INVALID, Invalid, Source, check_flags, check_input, merge, open_source, quick_count
from .files import resolve_columns, skipped
from .files import texts as file_texts

Text = str | tuple[str, str] | list[str]
CHUNK = 1024   # texts read, predicted and written at a time by predict_iter / predict_file


def _stderr(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


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

    def _options(self, threshold: float | None = None, min_k: int | None = None, max_k: int | None = None,
                 abstain_below: float | None = None) -> tuple[float | None, int | None, int | None, float | None]:
        """Options left at None take the Predictor's own; checked."""
        threshold = self.threshold if threshold is None else threshold
        min_k = self.min_k if min_k is None else min_k
        max_k = self.max_k if max_k is None else max_k
        abstain = self.abstain_below if abstain_below is None else abstain_below
        self._check(threshold, min_k, max_k, abstain)
        return threshold, min_k, max_k, abstain

    def predict(self, texts: Sequence[Text], top_k: int = 1, *, threshold: float | None = None,
                min_k: int | None = None, max_k: int | None = None,
                abstain_below: float | None = None) -> list[dict[str, Any]]:
        """Options left at None take the Predictor's own (its constructor arguments)."""
        if isinstance(texts, str):
            raise TrickLabError("predict() takes a list of texts; wrap a single text in a list")
        threshold, min_k, max_k, abstain = self._options(threshold, min_k, max_k, abstain_below)
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

    @property
    def pair(self) -> bool:
        return bool(self.meta["data"].get("pair"))

    def _chunks(self, items: Iterable[tuple[Any, Text]], batch_size: int | None, top_k: int,
                options: dict[str, Any]) -> Iterator[tuple[list[tuple[Any, Text]], list[dict[str, Any]]]]:
        """(chunk of (record, text), their predictions): `batch_size` items held at a time, in input order."""
        size = CHUNK if batch_size is None else int(batch_size)
        if size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be at least 1")
        it = iter(items)
        while block := list(islice(it, size)):
            yield block, self.predict([x for _, x in block], top_k=top_k, **options)

    def _item(self, i: int, item: Any) -> Text:
        if self.pair:
            t = tuple(item.split("\t", 1)) if isinstance(item, str) else tuple(item)
            if len(t) != 2 or not all(isinstance(x, str) for x in t):
                raise TrickLabError(f"input {i}: this model classifies sentence pairs: give (text_a, text_b), "
                                    f"text_a<TAB>text_b or a dict with both texts; got {str(item)[:60]!r}")
            return t
        if not isinstance(item, str):
            raise TrickLabError(f"input {i}: expected a text (str) or a dict with a text, got {str(item)[:60]!r}")
        return item

    def predict_iter(self, items: Iterable[Text | dict[str, Any]], batch_size: int | None = None, *, top_k: int = 1,
                     text_column: str | None = None, text_b_column: str | None = None,
                     **options: Any) -> Iterator[dict[str, Any]]:
        """Predictions for a stream, yielded in input order. Items are texts (pair models: (text_a, text_b) or
        text_a<TAB>text_b), which yield their prediction as predict() does, or records (dicts), which yield the
        record followed by its prediction (a key the record already has comes as pred_<key>); a record's text is
        under `text_column`, else the key train read its text from, else the first known text key (text, sentence,
        content, ...) of the first record.
        `batch_size` items (default 1024) are read, predicted and yielded at a time, so memory stays constant;
        the model runs in batches of the Predictor's own batch_size. Options: as predict()."""
        opts = dict(zip(("threshold", "min_k", "max_k", "abstain_below"), self._options(**options)))
        check_flags("input", self.pair, text_column, text_b_column)
        cols = None

        def pairs() -> Iterator[tuple[Any, Text]]:
            nonlocal cols
            for i, item in enumerate(items, 1):
                if isinstance(item, dict):
                    if cols is None:
                        cols = resolve_columns("input", list(item), self.pair, text_column, text_b_column, "item",
                                               self.meta["data"].get("columns") or {})
                    yield cols.extract(i, item)
                else:
                    yield None, self._item(i, item)

        for block, preds in self._chunks(pairs(), batch_size, top_k, opts):
            for (rec, _), p in zip(block, preds):
                yield p if rec is None else merge(rec, p)

    def predict_file(self, path: str | Path | Source | None, output: str | Path | None = None, *,
                     text_column: str | None = None, text_b_column: str | None = None, format: str | None = None,
                     sheet: str | int | None = None, encoding: str = "utf-8", top_k: int = 1,
                     batch_size: int | None = None,
                     progress: bool = False, check: bool = True, on_invalid: str = "error",
                     log: Callable[[str], None] | None = _stderr, **options: Any) -> int:
        """Predict every text of a file (path None or "-": standard input) and write one row per record to
        `output`: the record's columns unchanged, then the prediction (format from the extension: .jsonl, .json,
        .csv, .tsv, .parquet, .xlsx; None: JSONL on standard output). `sheet`: an .xlsx input's sheet (name or
        0-based index; default the first). Formats in: inference/files.py. Streams: reads,
        predicts and writes `batch_size` records (default 1024) at a time, in input order; `progress`: a tqdm
        bar on standard error. `check`: read a file once first, so that every bad line is reported before
        any prediction (not standard input). `on_invalid`: `error` (a bad record stops the run) or `skip` (bad
        records are left out of the output and listed on `log`). Returns the number of rows written."""
        from tqdm.auto import tqdm

        from ..data.excel import MAX_ROWS
        from .outputs import Writer, output_format

        src = path if isinstance(path, Source) else open_source(path, format, sheet, encoding)
        src.trained = self.meta["data"].get("columns") or {}          # train's text column: the default
        opts = dict(zip(("threshold", "min_k", "max_k", "abstain_below"), self._options(**options)))
        output_format(output)
        if output is not None and src.path is not None and Path(output).resolve() == src.path.resolve():
            raise ConfigError(f"--output {output} is the input file; fix: write the predictions to another file")
        check_flags(src, self.pair, text_column, text_b_column)
        if on_invalid not in ON_INVALID:
            raise ConfigError(f"--on-invalid {on_invalid}: expected one of {', '.join(ON_INVALID)}")
        checked = check and src.path is not None
        total = check_input(src, self.pair, text_column, text_b_column, log, on_invalid) if checked \
            else quick_count(src)
        invalid = Invalid(src.name, skip=True) if on_invalid == "skip" else None
        from .files import arrow_schema

        if output_format(output) == "xlsx" and total is not None and total >= MAX_ROWS:
            raise ConfigError(f"--output {output}: {total:,} rows and a header do not fit in an Excel sheet "
                              f"({MAX_ROWS:,} rows at most); fix: write CSV or Parquet (--output NAME.csv / .parquet)")
        writer = Writer(output, arrow_schema(src), src.name, bom=src.excel)   # Excel in, CSV out: Excel reads it
        bar = tqdm(total=total, desc="predict", unit=" texts", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        ok = False
        try:
            stream = (((line, rec), x) for line, rec, x in file_texts(src, self.pair, text_column, text_b_column, log,
                                                                      invalid))
            for block, preds in self._chunks(stream, batch_size, top_k, opts):
                rows = [merge(rec, p) for ((_, rec), _), p in zip(block, preds)]
                if writer.rows == 0 and log and (clash := [k for k in preds[0] if k in block[0][0][1]]):
                    log(f"note: {src.name} already has {', '.join(map(repr, clash))}: the prediction's "
                        f"{'is' if len(clash) == 1 else 'are'} written as {', '.join('pred_' + k for k in clash)}")
                writer.write(rows, [line for (line, _), _ in block])
                bar.update(len(rows))
            if invalid is not None and not checked:      # else the check pass has said it
                skipped(invalid, writer.rows, log)
            ok = True
        finally:
            bar.close()
            writer.close(ok)
        if writer.rows == 0 and log:
            log(f"note: {src.name} holds no texts: nothing to predict")
        return writer.rows
