"""`tricklab evaluate`: a trained run (or an exported bundle) on a labelled file, read the way the run read its
data (its config.yaml; a bundle's model meta `data_config`), scored with the run's label map, temperature and
thresholds. Writes eval_<file>.json, bad_cases_<file>.tsv and confusion_matrix_<file>.png to `out` (default: the
run or bundle folder). Bad rows: every problem of the file is reported before any prediction (`--set
data.on_invalid=skip`: those rows are left out, counted in eval_<file>.json and listed in skipped_rows_<file>.tsv)."""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import DataConfig, from_dict, load_config
from ..data.columns import flag_names
from ..data.invalid import InvalidRows, skipped_note, write_skipped
from ..data.labels import LabelMap, encode_labels, mapped_names, relabel
from ..data.readers import Row, read_rows
from ..data.sources import unlabelled
from ..errors import ConfigError, DataError, TrickLabError
from ..runfiles import write_json
from ..evaluation.metrics import compute_run_metrics
from ..evaluation.reports import metrics_table, per_class_table, plot_confusion, write_bad_cases
from .predictor import Predictor


def _model(run: Path | None, bundle: Path | None, batch_size: int) -> tuple[Predictor, DataConfig, Path]:
    """(predictor, how to read data files, the model's folder)."""
    if bundle is not None:
        pred = Predictor.from_bundle(bundle, batch_size=batch_size)
        saved = pred.meta.get("data_config") or {}   # bundles of runs from before data_config: default reading
        known = {f.name for f in dataclasses.fields(DataConfig)}
        return pred, from_dict(DataConfig, {k: v for k, v in saved.items() if k in known}, "data"), bundle
    if run is None:
        raise TrickLabError("evaluate: give --run (a run folder) or --bundle (an exported bundle)")
    if not (run / "config.yaml").is_file() or not (run / "model").is_dir():
        raise TrickLabError(f"{run}: not a finished run folder (needs config.yaml and model/); give the --out of `tricklab train`")
    return Predictor.from_run(run, batch_size=batch_size), load_config(run / "config.yaml").data, run


# data.* keys about reading a file; the others (max_length, truncation, lowercase, dev_ratio, sampler, ...) are how
# the model was trained and reads its texts, which evaluate takes from the run, so a --set of them would do nothing
READING_KEYS = ("format", "encoding", "sheet", "header", "delimiter", "text_column", "text_b_column", "label_column", "label_type",
                "label_sep", "label_map", "on_invalid")


def with_sets(data_cfg: DataConfig, sets: list[str] | None) -> DataConfig:
    """`--set data.KEY=VALUE` overrides of how the file is read (READING_KEYS only: the model is the run's)."""
    from ..config import parse_set

    d = dataclasses.asdict(data_cfg)
    for item in sets or []:
        keys, value = parse_set(item)
        if len(keys) != 2 or keys[0] != "data" or keys[1] not in READING_KEYS:
            known = len(keys) == 2 and keys[0] == "data" and keys[1] in d
            what = ("is not a key of how --data is read" if not known else "is for training (kd's soft labels); "
                    "evaluate scores the gold labels" if keys[1] == "soft_label_column" else
                    "is how the model reads its texts, fixed by its training")
            raise ConfigError(f"--set {item!r}: {what}; evaluate takes data.KEY for KEY in {', '.join(READING_KEYS)} "
                              f"(e.g. --set data.text_column=1)")
        d[keys[1]] = value
    from ..config import check_encoding

    d["encoding"] = check_encoding(d["encoding"], "--set data.encoding")
    return from_dict(DataConfig, d, "data")


@dataclasses.dataclass
class EvalData:
    """What evaluate reads: a file (`path`), or one split of a dataset (`source`: hf:NAME, a datasets folder)."""
    name: str                    # in messages, bad_cases and skipped_rows
    stem: str                    # of the output files: eval_<stem>.json, ...
    path: Path | None = None
    source: Any = None           # data.sources.Source

    @property
    def shown(self) -> str:      # in tables and titles
        if self.path is None and getattr(self.source, "sheet", None) is not None:
            return Path(self.name).name      # a workbook's split: book.xlsx[测试集]
        return self.path.name if self.path is not None else self.name


def eval_data(data: str | Path, data_cfg: DataConfig, split: str | None, sheet_set: bool = True) -> EvalData:
    """A labelled file, or a split of a `hf:NAME[:CONFIG]` dataset, a datasets folder, a workbook with a sheet per
    split or in-memory data (data.sources.eval_source). `sheet_set`: data.sheet was given for this evaluation (the
    sheet a run trained on says nothing about where a workbook with a sheet per split keeps its test rows)."""
    from ..data.readers import uncompressed_name
    from ..data.sources import eval_source

    src = eval_source(data, split, data_cfg.label_column, data_cfg.sheet if sheet_set else None)
    if src is None:
        if split is not None:
            raise ConfigError(f"--split {split}: {data} is a file (it has no splits); fix: leave --split out")
        return EvalData(str(data), uncompressed_name(Path(data)).stem, path=Path(data))   # test.csv.gz: eval_test.json
    stem = f"{Path(data).stem}_{src.sheet}" if src.sheet is not None else src.name     # book_测试集
    return EvalData(src.name, re.sub(r"[^\w.-]+", "_", stem).strip("_"), source=src)


def _read(ed: EvalData, data_cfg: DataConfig, lm: LabelMap, found: list[str]) -> list[Row]:
    rows = read_rows(ed.path, data_cfg, problems=found) if ed.path is not None else ed.source.read(data_cfg, True, found)
    flags = flag_names(getattr(rows, "columns", None))          # one 0/1 column per class: the run's classes
    if flags is not None and set(mapped_names(flags, data_cfg.label_map)) != set(lm.names):
        found.append(f"{ed.name}: its 0/1 label columns ({', '.join(flags)}) do not stand for the model's classes "
                     f"({', '.join(lm.names)}); fix: give it one 0/1 column per class, named as in its training data")
        return []
    if not rows and ed.source is not None and ed.source.sheet is not None and unlabelled(found):
        found.append(f"{ed.name}: this sheet has no labels to score (texts to predict); fix: --split NAME for a "
                     f"labelled sheet, e.g. --split dev")
    relabel(rows, data_cfg.label_map, data_cfg.label_sep, Counter(), multi=lm.task == "multi_label")  # as train did
    names = ed.source.class_names if ed.source is not None else None
    if names and lm.task == "single_label" and not lm.from_ids:   # ClassLabel ids -> their names, the run's labels
        known = set(lm.names)
        rows = [dataclasses.replace(r, label=names[int(r.label)]) if str(r.label) not in known
                and str(r.label).isdigit() and int(r.label) < len(names) else r for r in rows]
    return rows


def _labelled_rows(ed: EvalData, data_cfg: DataConfig, lm: LabelMap) -> tuple[list[Row], Any, InvalidRows]:
    """The rows and gold labels under the run's label map. Every row problem (columns, empty text, a label the run
    does not know) is reported together, before any prediction; data.on_invalid=skip drops those rows."""
    inv, problems = InvalidRows(data_cfg.on_invalid), []
    rows = inv.read("eval", ed.name, lambda found: _read(ed, data_cfg, lm, found), problems)
    rows, gold = inv.keep_valid("eval", ed.name, rows, lambda rs: encode_labels(rs, lm, data_cfg.label_sep, model=True,
                                                                             label_map=data_cfg.label_map),
                                  problems)
    if problems:
        hint = inv.hint("evaluate", f"skipped_rows_{ed.stem}.tsv beside eval_{ed.stem}.json")
        raise DataError(problems + ([hint] if hint else []))
    return rows, gold, inv


def evaluate_run(run: str | Path | None, data: Any, batch_size: int = 128, verbose: bool = True, *,
                 bundle: str | Path | None = None, out: str | Path | None = None,
                 sets: list[str] | None = None, split: str | None = None) -> dict[str, Any]:
    """Metrics of a run (or a bundle) on a labelled file (or a dataset's split: eval_data); the files go to `out`
    (default: the run/bundle folder). sets: `data.KEY=VALUE` overrides of how the run read its files (with_sets)."""
    pred, data_cfg, home = _model(Path(run) if run else None, Path(bundle) if bundle else None, batch_size)
    data_cfg = with_sets(data_cfg, sets)
    dest = Path(out) if out else home
    dest.mkdir(parents=True, exist_ok=True)
    lm = LabelMap.from_dict(pred.meta["labels"])
    ed = eval_data(data, data_cfg, split, any(x.partition("=")[0].strip() == "data.sheet" for x in sets or []))
    rows, gold, inv = _labelled_rows(ed, data_cfg, lm)
    texts = [(r.text, r.text_b) if r.text_b is not None else r.text for r in rows]
    logits = pred.logits(texts)
    m = compute_run_metrics(lm.task, logits, gold, lm.names, pred.meta)  # with the run's temperature / thresholds
    stem = ed.stem
    if inv.skip:
        m["skipped_rows"] = sum(inv.counts().values())
        write_skipped(dest / f"skipped_rows_{stem}.tsv", inv.rows)
        if verbose:
            print(skipped_note(inv.rows, dest / f"skipped_rows_{stem}.tsv"))
    write_json(dest / f"eval_{stem}.json", m)   # atomic, and never through a link out of `dest`
    n_bad = write_bad_cases(dest / f"bad_cases_{stem}.tsv", ed.shown, lm.task, rows, gold, logits, lm.names,
                            pred.meta)
    if "confusion_matrix" in m:
        plot_confusion(m["confusion_matrix"], lm.names, dest / f"confusion_matrix_{stem}.png",
                       f"{ed.shown} (acc {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f})")
    if verbose:
        print(metrics_table({ed.shown: m}))
        print(per_class_table(m, confusions=10))  # and the 10 worst confusions (gold -> predicted, share)
        print(f"written: {dest / f'eval_{stem}.json'}, {dest / f'bad_cases_{stem}.tsv'} "
              f"({n_bad} {'rows' if lm.task == 'regression' else 'mistakes'}, most confident first)"
              + (f", {dest / f'confusion_matrix_{stem}.png'}" if "confusion_matrix" in m else ""))
    return m
