"""`tricklab evaluate`: a trained run on a labelled file, with the run's own reading and label map."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import load_config
from ..data.labels import LabelMap, encode_labels
from ..data.readers import read_rows
from ..errors import TrickLabError
from ..evaluation.metrics import compute_run_metrics
from ..evaluation.reports import metrics_table, per_class_table, plot_confusion, write_bad_cases
from .predictor import Predictor


def evaluate_run(run: str | Path, data: str | Path, batch_size: int = 128, verbose: bool = True) -> dict[str, Any]:
    run = Path(run)
    if not (run / "config.yaml").is_file() or not (run / "model").is_dir():
        raise TrickLabError(f"{run}: not a finished run folder (needs config.yaml and model/); give the --out of `tricklab train`")
    cfg = load_config(run / "config.yaml")
    pred = Predictor.from_run(run, batch_size=batch_size)
    lm = LabelMap.from_dict(pred.meta["labels"])
    rows = read_rows(Path(data), cfg.data)
    gold = encode_labels(rows, lm, cfg.data.label_sep)
    texts = [(r.text, r.text_b) if r.text_b is not None else r.text for r in rows]
    logits = pred.logits(texts)
    m = compute_run_metrics(lm.task, logits, gold, lm.names, pred.meta)  # with the run's temperature / thresholds
    stem = Path(data).stem
    (run / f"eval_{stem}.json").write_text(json.dumps(m, indent=2, ensure_ascii=False), encoding="utf-8")
    n_bad = write_bad_cases(run / f"bad_cases_{stem}.tsv", Path(data).name, lm.task, rows, gold, logits, lm.names,
                            pred.meta)
    if "confusion_matrix" in m:
        plot_confusion(m["confusion_matrix"], lm.names, run / f"confusion_matrix_{stem}.png",
                       f"{Path(data).name} (acc {m['accuracy']:.4f})")
    if verbose:
        print(metrics_table({Path(data).name: m}))
        print(per_class_table(m, confusions=10))  # and the 10 worst confusions (gold -> predicted, share)
        print(f"written: {run / f'eval_{stem}.json'}, {run / f'bad_cases_{stem}.tsv'} "
              f"({n_bad} {'rows' if lm.task == 'regression' else 'mistakes'}, most confident first)")
    return m
