"""The end of a training run, in named steps: the best model's logits on dev and test, calibration fitted on
dev (temperature or thresholds, saved in the model meta), metrics, and the run folder's files (metrics.json,
predictions.npz, bad_cases.tsv, confusion matrix, reliability diagram)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import CalibrationConfig
from ..data import DataBundle, Encoded
from ..model import load_model
from ..model.classifier import META_FILE
from ..model.runtime import all_logits
from ..runfiles import write_json, write_manifest
from .calibration import fit_temperature, plot_reliability
from .metrics import compute_run_metrics, sigmoid
from .predictions import save_predictions
from .reports import metrics_table, per_class_table, plot_confusion, write_bad_cases, zero_f1_note
from .thresholds import tune_thresholds

Preds = dict[str, tuple[np.ndarray, list[Any]]]   # split name -> (logits (N, C), gold labels)


def best_model_logits(model_dir: Path, bundle: DataBundle, dev: Encoded, test: Encoded | None, batch_size: int,
                      device: torch.device, precision: str) -> tuple[dict[str, Any], Preds]:
    """Reload the best weights from the run folder; (their meta, logits on dev and test)."""
    model, tok, meta = load_model(model_dir)
    model.to(device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    preds: Preds = {}
    for name, e, split in (("dev", dev, bundle.dev), ("test", test, bundle.test)):
        if e is not None:
            preds[name] = (all_logits(model, e, batch_size, pad_id, device, precision), split.labels)
    return meta, preds


def calibrate(meta: dict[str, Any], task: str, dev: tuple[np.ndarray, list[Any]], names: list[str],
              calib: CalibrationConfig) -> dict[str, Any]:
    """The meta with a temperature fitted on dev (single-label) or per-label thresholds tuned on dev
    (multi-label), refitted on every finish."""
    meta = {k: v for k, v in meta.items() if k not in ("temperature", "thresholds")}
    if task == "single_label" and calib.temperature:
        meta["temperature"] = fit_temperature(*dev)
    if task == "multi_label" and calib.thresholds:
        meta["thresholds"] = tune_thresholds(sigmoid(dev[0]), dev[1], names, calib.min_support)
    return meta


def write_plots_and_bad_cases(out: Path, bundle: DataBundle, evaluated_on: str, final: dict[str, Any], preds: Preds,
                              meta: dict[str, Any]) -> list[str]:
    """bad_cases.tsv, confusion_matrix.png and reliability.png for the split the run reports; the files written."""
    names = bundle.label_map.names
    split = bundle.test if evaluated_on == "test" else bundle.dev
    logits = preds[evaluated_on][0]
    write_bad_cases(out / "bad_cases.tsv", evaluated_on, bundle.task, split.rows, split.labels, logits, names, meta)
    written = ["bad_cases.tsv"]
    if "confusion_matrix" in final and plot_confusion(
            final["confusion_matrix"], names, out / "confusion_matrix.png",
            f"{evaluated_on} confusion matrix (acc {final['accuracy']:.4f}, macro-F1 {final['macro_f1']:.4f})"):
        written.append("confusion_matrix.png")
    if "temperature" in meta and plot_reliability(logits, split.labels, meta["temperature"], out / "reliability.png",
                                                  f"{evaluated_on} reliability (temperature fitted on dev)"):
        written.append("reliability.png")
    return written


def finish(out: Path, bundle: DataBundle, dev: Encoded, test: Encoded | None, batch_size: int, device: torch.device,
           precision: str, training: dict[str, Any], verbose: bool, calib: CalibrationConfig | None = None
           ) -> dict[str, Any]:
    """Evaluate the best model of a finished run: calibrate on dev, metrics on dev (and test), run folder files.
    `training`: the loop's figures kept in metrics.json (best_step, best_dev, steps, train seconds, samples/s).
    Returns the metrics (test's when there is a test split, else dev's, plus both in full)."""
    meta, preds = best_model_logits(out / "model", bundle, dev, test, batch_size, device, precision)
    names = bundle.label_map.names
    meta = calibrate(meta, bundle.task, preds["dev"], names, calib or CalibrationConfig())
    write_json(out / "model" / META_FILE, meta, root=out)
    write_manifest(out / "model")                      # the meta changed: its size and hash with it
    res = {name: compute_run_metrics(bundle.task, lg, gold, names, meta) for name, (lg, gold) in preds.items()}
    # per-example logits for `tricklab compare`'s paired tests
    save_predictions(out / "predictions.npz", bundle.task, bundle.label_map.num_labels, preds)  # before metrics.json
    evaluated_on = "test" if "test" in res else "dev"
    final = res[evaluated_on]
    metrics = {**{k: v for k, v in final.items() if k != "confusion_matrix"}, "evaluated_on": evaluated_on,
               "score_on": bundle.score_on, **training, **res}
    if bundle.skipped is not None:   # data.on_invalid=skip: rows skipped per split file (OUT/skipped_rows.tsv)
        metrics["skipped_rows"] = bundle.skipped_counts()
    if "thresholds" in meta:
        metrics["thresholds"] = meta["thresholds"]
    if bundle.task == "single_label":   # classes of the reported split never predicted right (zero_f1_note)
        metrics["zero_f1_classes"] = [n for n, v in final["per_class"].items() if v["support"] and v["f1"] == 0.0]
    write_json(out / "metrics.json", metrics, root=out)   # atomic: a killed run has all of it or none
    written = ["model/", "metrics.json", "log.jsonl"] + write_plots_and_bad_cases(out, bundle, evaluated_on, final,
                                                                                  preds, meta)
    if verbose:
        print(f"scores on {bundle.score_on}")
        print(metrics_table(res))
        print(per_class_table(final))
        warn = zero_f1_note(final, evaluated_on)
        if warn:
            print(warn)
        if bundle.skipped is not None:
            print("skipped rows (data.on_invalid=skip): " + ", ".join(f"{k} {v}" for k, v in
                                                                      bundle.skipped_counts().items()))
        print(f"run folder: {out}  ({', '.join(written)})")
    return metrics
