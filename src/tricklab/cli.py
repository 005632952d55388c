"""Command line: parsing only; every subcommand calls a plain function."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, TrickLabError


def parse_spec(spec: str, flag: str) -> dict[str, Any]:
    """`name:k=v,k2=v2` -> {"name": name, k: v, ...} (values read as YAML: numbers, lists, booleans)."""
    from .config import parse_set

    name, _, rest = spec.partition(":")
    if not name:
        raise ConfigError(f"{flag} {spec!r}: expected NAME[:key=value,...], e.g. {flag} rdrop:alpha=4")
    out: dict[str, Any] = {"name": name.strip()}
    items, depth, cur = [], 0, ""
    for ch in rest:  # split on commas outside brackets: class_weights=[1,2,3] stays one item
        depth += 1 if ch in "[{" else -1 if ch in "]}" else 0
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    for item in filter(None, (i.strip() for i in items)):
        keys, value = parse_set(item)
        out[".".join(keys)] = value
    return out


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    from .config import load_config

    overrides = {"model.name": getattr(args, "model", None), "tracking.report_to": getattr(args, "report_to", None),
                 **(extra or {})}
    cfg = load_config(args.config, args.set, overrides)
    cfg.plugins = list(dict.fromkeys(list(cfg.plugins) + list(getattr(args, "plugin", None) or [])))
    if getattr(args, "loss", None):
        cfg.loss = parse_spec(args.loss, "--loss")
    cfg.aux_losses = list(cfg.aux_losses) + [parse_spec(s, "--aux") for s in getattr(args, "aux", None) or []]
    cfg.tricks = list(cfg.tricks) + [parse_spec(s, "--trick") for s in getattr(args, "trick", None) or []]
    from .config import validate
    from .registry import load_plugins

    validate(cfg)
    load_plugins(cfg.plugins)     # before anything checks a loss, trick, head or pooling name
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .training.loop import train

    if args.resume:
        extra = [f for f, v in (("--config", args.config), ("--set", args.set), ("--model", args.model),
                               ("--loss", args.loss), ("--aux", args.aux), ("--trick", args.trick),
                               ("--epochs", args.epochs), ("--max-train-samples", args.max_train_samples),
                               ("--max-train-per-class", args.max_train_per_class),
                               ("--overwrite", args.overwrite), ("--report-to", args.report_to),
                               ("--plugin", args.plugin)) if v]
        if extra:
            raise ConfigError(f"--resume continues the run with its saved config.yaml; {', '.join(extra)} cannot change it "
                              f"(fix: drop them, or start a new run with another --out)")
        if args.data and _is_run(Path(args.data)) and Path(args.data).resolve() != Path(args.out).resolve():
            raise ConfigError(f"--data {args.data} is a run folder, not data; did you mean --out {args.data} --resume? "
                              f"(a run knows its data: --data is only needed when the files moved)")
    elif not args.data:
        raise ConfigError("--data is required: a folder with train/dev/test files, a training file, or hf:NAME "
                          "(--out R --resume continues a run without it)")
    cfg = _config(args, {"train.epochs": args.epochs, "data.max_train_samples": args.max_train_samples,
                         "data.max_train_per_class": args.max_train_per_class}) \
        if not args.resume else None
    train(cfg, args.data, args.dev, args.test, args.out, resume=args.resume, progress=not args.quiet,
          force=args.force, overwrite=args.overwrite,
          command=shlex.join(["tricklab", *argv]) if (argv := getattr(args, "argv", None)) else None)
    return 0


def _is_run(p: Path) -> bool:
    return (p / "config.yaml").is_file() and ((p / "checkpoints").is_dir() or (p / "model").is_dir())


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, epochs=args.epochs, max_train_samples=args.max_train_samples, progress=not args.quiet)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import annotated_yaml
    from .training.setup import check_config

    cfg = _config(args, {"train.epochs": args.epochs, "data.max_train_samples": args.max_train_samples,
                         "data.max_train_per_class": args.max_train_per_class})
    check_config(cfg)
    sys.stdout.write(annotated_yaml(cfg))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .inference.evaluate import evaluate_run

    evaluate_run(args.run, args.data, batch_size=args.batch_size, bundle=args.bundle, out=args.out, sets=args.set,
                 split=args.split)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference.files import open_source
    from .inference.outputs import output_format
    from .inference.predictor import Predictor

    src = open_source(args.input, args.format, args.sheet, args.encoding)   # file, format, packages: before the model
    output_format(args.output)
    if args.bundle:
        pred = Predictor.from_bundle(args.bundle, threads=args.threads, batch_size=args.batch_size, **_decision(args))
    else:
        pred = Predictor.from_run(args.run, batch_size=args.batch_size, threads=args.threads, **_decision(args))
    try:
        pred.predict_file(src, args.output, text_column=args.text_column, text_b_column=args.text_b_column,
                          top_k=args.top_k, progress=not args.quiet, check=not args.no_check,
                          on_invalid=args.on_invalid)
    except BrokenPipeError:   # `tricklab predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.export import export_bundle

    export_bundle(args.run, args.out, fmt=args.format, quantize=args.quantize, opset=args.opset,
                  verify_data=args.verify_data, calibration_data=args.calibration_data,
                  min_agreement=args.min_agreement, fuse=args.fuse)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .inference.serve import serve

    serve(run=args.run, bundle=args.bundle, host=args.host, port=args.port, token=args.token,
          max_texts=args.max_texts, max_chars=args.max_chars, threads=args.threads, options=_decision(args),
          max_connections=args.max_connections, header_timeout=args.header_timeout, body_timeout=args.body_timeout,
          max_batch_tokens=args.max_batch_tokens)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .inference.hub import push_run

    push_run(args.run, args.repo, private=args.private, token=args.token)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .ablation.compare import compare

    base = _config(args, {"data.max_train_samples": args.max_train_samples, "train.epochs": args.epochs,
                         "data.max_train_per_class": args.max_train_per_class})
    res = compare(base, args.data, args.dev, args.test, variants=args.variants, variants_file=args.variants_file,
                  seeds=args.seeds, out=args.out, jobs=args.jobs, baseline=args.baseline, metric=args.metric)
    return 1 if res.failed else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .ablation.tune import tune

    base = _config(args, {"data.max_train_samples": args.max_train_samples, "train.epochs": args.epochs,
                         "data.max_train_per_class": args.max_train_per_class})
    tune(base, args.data, args.dev, args.test, space=args.space, trials=args.trials, out=args.out,
         timeout=args.timeout, jobs=args.jobs, pruner=args.pruner, metric=args.metric,
         verify_seeds=args.verify_seeds, worker=args.worker)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .ablation.leaderboard import discover_runs, write_report

    write_report(discover_runs(args.runs), args.out or args.runs[0], baseline=args.baseline, metric=args.metric)
    return 0


def model_source(sp: argparse.ArgumentParser) -> None:
    """--run or --bundle: the model a command predicts with."""
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder from `tricklab train` (torch)")
    src.add_argument("--bundle", help="bundle folder from `tricklab export` (onnxruntime)")


def decision_flags(sp: argparse.ArgumentParser) -> None:
    """How a model turns probabilities into answers (Predictor arguments): predict and serve."""
    sp.add_argument("--threshold", type=float, metavar="P",
                    help="multi-label: one threshold for every label (default: the thresholds tuned on dev, else 0.5)")
    sp.add_argument("--min-k", type=int, metavar="K", help="multi-label: at least K labels (1: the top one if none passes)")
    sp.add_argument("--max-k", type=int, metavar="K", help="multi-label: at most K labels, the most probable")
    sp.add_argument("--abstain-below", type=float, metavar="P",
                    help='answer "label": null, "uncertain": true when the top probability is below P (top_k still shown)')


def _decision(args: argparse.Namespace) -> dict[str, Any]:
    opts = {"threshold": args.threshold, "min_k": args.min_k, "max_k": args.max_k, "abstain_below": args.abstain_below}
    return {k: v for k, v in opts.items() if v is not None}


def config_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", help="YAML config (see configs/)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.lr=3e-5")
    sp.add_argument("--model", help="local folder, hub id, or alias: m3e-small, minilm-en")
    sp.add_argument("--loss", metavar="NAME[:k=v,...]", help="main loss, e.g. focal:gamma=2")
    sp.add_argument("--aux", action="append", metavar="NAME[:k=v,...]", help="auxiliary loss, e.g. supcon:weight=0.2")
    sp.add_argument("--trick", action="append", metavar="NAME[:k=v,...]", help="a trick, e.g. rdrop:alpha=4 (repeatable)")
    sp.add_argument("--report-to", metavar="TRACKER",
                    help="experiment tracking: none (default: log.jsonl only), tensorboard, wandb, mlflow "
                         "(comma-separated for several)")
    sp.add_argument("--plugin", action="append", metavar="MODULE",
                    help="import a module that registers losses, tricks, heads or poolings (repeatable; installed "
                         "packages' `tricklab.plugins` entry points load by themselves)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")


def data_flags(sp: argparse.ArgumentParser, required: bool = True) -> None:
    sp.add_argument("--data", required=required, help="folder with train/dev/test files, or a training file (txt, tsv, "
                    "csv, jsonl, json, parquet, arrow, xlsx; also .gz/.bz2/.zst), a datasets save_to_disk folder, or "
                    "hf:NAME[:CONFIG] (a Hugging Face dataset; offline from the local cache); a workbook with sheets "
                    "named train/dev/test (训练集/验证集/测试集) is read as those splits"
                    + ("" if required else " (--resume: the run's own, recorded in run.json)"))
    sp.add_argument("--dev", help="dev file (default: dev.* in the folder or the dataset's validation split, else 10%% "
                                  "of train)")
    sp.add_argument("--test", help="test file (default: test.* in the folder or the dataset's test split)")


def add_compare_parsers(sub: Any) -> None:
    """`tricklab compare` (grid of variants x seeds) and `tricklab report` (its leaderboard, rebuilt)."""
    from .ablation.compare import presets_help

    c = sub.add_parser("compare", help="train variants x seeds and report which tricks help (statistics vs a baseline)",
                       epilog=presets_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    data_flags(c)
    c.add_argument("--variants", help="comma-separated: presets (below), names from --variants-file, a+b combines; "
                                      "default: the baseline and every --variants-file entry")
    c.add_argument("--variants-file", help="YAML: variant name -> partial config (see configs/variants.yaml)")
    c.add_argument("--seeds", default="3", help="number of seeds (5: train.seed 1..5) or a comma list (default 3)")
    c.add_argument("--out", default="runs/compare", help="grid folder: OUT/<variant>/seed<k> (default runs/compare)")
    c.add_argument("--max-train-samples", type=int, help="budget: data.max_train_samples for every run")
    c.add_argument("--max-train-per-class", type=int, help="few-shot: data.max_train_per_class K for every run "
                                                         "(K per class, drawn with each run's train.seed)")
    c.add_argument("--epochs", type=float, help="budget: train.epochs for every run")
    c.add_argument("--jobs", type=int, default=1, help="runs at a time, as subprocesses when > 1 (default 1)")
    c.add_argument("--baseline", default="baseline", help="the variant the others are compared to (default baseline)")
    c.add_argument("--metric", help="metric of the verdicts (default: accuracy, micro_f1 or pearson by task)")
    config_flags(c)
    c.set_defaults(func=cmd_compare)

    tu = sub.add_parser("tune", help="hyperparameter search (Optuna): trials as run folders, pruned at dev "
                                     "evaluations, resumable; then the best config vs the base over seeds, on test")
    data_flags(tu)
    tu.add_argument("--space", required=True, help="YAML: config key -> {log_uniform|uniform|int|int_log: [low, high]} "
                                                    "or a list of choices; tricks.<name>: [true, false] switches a trick")
    tu.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials in the study (default 20)")
    tu.add_argument("--out", default="runs/tune", help="study folder: study.db, trials/, best.yaml, plots, verify/")
    tu.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tu.add_argument("--jobs", type=int, default=1, help="processes searching the same study (default 1)")
    tu.add_argument("--pruner", default="median", choices=["median", "halving", "none"],
                    help="stop bad trials at dev evaluations: median (default) or successive halving")
    tu.add_argument("--metric", help="dev metric to optimise (default: train.metric, else accuracy/micro_f1/pearson)")
    tu.add_argument("--verify-seeds", type=int, default=3, help="re-run best and base config over this many seeds "
                                                                 "and compare them on test (0: skip; default 3)")
    tu.add_argument("--max-train-samples", type=int, help="budget: data.max_train_samples for every trial")
    tu.add_argument("--max-train-per-class", type=int, help="few-shot: data.max_train_per_class K for every trial "
                                                         "(K per class, drawn with each trial's train.seed)")
    tu.add_argument("--epochs", type=float, help="budget: train.epochs for every trial")
    tu.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    config_flags(tu)
    tu.set_defaults(func=cmd_tune)

    rp = sub.add_parser("report", help="rebuild the compare leaderboard from run folders")
    rp.add_argument("--runs", nargs="+", required=True, help="a compare --out folder, variant folders (seed<k>/ "
                                                             "inside) or run folders")
    rp.add_argument("--baseline", default="baseline")
    rp.add_argument("--out", help="folder for leaderboard.md/.csv and ablation.png (default: the first --runs)")
    rp.add_argument("--metric", help="metric of the verdicts (default: accuracy, micro_f1 or pearson by task)")
    rp.set_defaults(func=cmd_report)


def evaluate_parser(sub: Any) -> None:
    """`tricklab evaluate` (inference/evaluate.py)."""
    e = sub.add_parser("evaluate", help="evaluate a trained run (or an exported bundle) on a labelled file")
    model_source(e)
    e.add_argument("--data", required=True, help="labelled file in the training format, or hf:NAME[:CONFIG] / a "
                                                 "datasets folder (the data extra), or a workbook with a sheet per "
                                                 "split")
    e.add_argument("--split", help="which split of a dataset (or sheet of such a workbook) given to --data, by its own "
                                   "name (validation_matched, 验证集) or train/dev/test (default: test, else validation; "
                                   "train only when asked)")
    e.add_argument("--out", help="folder for eval_<file>.json, bad_cases_<file>.tsv, confusion_matrix_<file>.png "
                                 "(default: the run or bundle folder)")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                   help="read --data another way than the run read its files, e.g. data.text_column=1 (data.* only)")
    e.set_defaults(func=cmd_evaluate)


def serve_parser(sub: Any) -> None:
    """`tricklab serve` and its limits (inference/serve.py, inference/guard.py)."""
    sv = sub.add_parser("serve", help="HTTP API (POST /predict, GET /health, /labels, /docs) and a web page at /")
    model_source(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token", default=os.environ.get("TRICKLAB_TOKEN"),
                    help="require `Authorization: Bearer TOKEN` on every path but /health (default: $TRICKLAB_TOKEN, "
                         "else no token; an empty token is refused)")
    sv.add_argument("--max-texts", type=int, default=256, help="texts per request (default 256)")
    sv.add_argument("--max-chars", type=int, default=2000, help="characters per text (default 2000)")
    sv.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    sv.add_argument("--max-connections", type=int, default=128,
                    help="open connections at most; beyond it requests get 503 (default 128)")
    sv.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                    help="close connections whose request headers take longer (default 10 s)")
    sv.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                    help="answer 408 when a request body takes longer to arrive (default 30 s)")
    sv.add_argument("--max-batch-tokens", type=int, default=8192,
                    help="tokens per model call at most (estimated); large requests are split (default 8192)")
    decision_flags(sv)
    sv.set_defaults(func=cmd_serve)


def export_parser(sub: Any) -> None:
    """`tricklab export`'s flags."""
    x = sub.add_parser("export", help="export a run as a self-contained ONNX bundle, verified against torch")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True, help="bundle folder to write")
    x.add_argument("--format", default="onnx", choices=["onnx"])
    x.add_argument("--quantize", choices=["int8", "int8-dynamic"],
                   help="int8: static int8 (weights per channel, activation ranges calibrated on the run's train/dev "
                        "texts), answers independent of batch neighbours; int8-dynamic: onnxruntime's dynamic "
                        "quantization, run one text per model call")
    x.add_argument("--calibration-data", metavar="FILE",
                   help="--quantize int8: texts (the run's data format) to calibrate the activation ranges on "
                        "(default: the run's train + dev files)")
    x.add_argument("--fuse", default="auto", choices=["auto", "true", "false", "full", "no-attention"],
                   help="onnxruntime's transformer graph fusions (Attention, SkipLayerNormalization, BiasGelu, "
                        "EmbedLayerNormalization) before quantization. auto (default): where they were measured to "
                        "help (static int8); true: always (= full); no-attention: all but Attention (its Q/K/V "
                        "weights then stay quantizable); false: never. A fused graph that does not reproduce the "
                        "unfused one falls back to it, with the reason printed and kept in bundle.json")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--verify-data", help="data file (the run's format) to compare torch and ONNX on "
                                         "(default: the run's dev + test files, up to 500 texts)")
    x.add_argument("--min-agreement", type=float, default=0.99, metavar="F",
                   help="fail (exit 2, nothing written) when torch and the bundle agree on fewer than this fraction "
                        "of the verification texts (default 0.99)")
    x.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tricklab", description="Fine-tune BERT-family text classifiers with composable tricks.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train, evaluate on dev (and test), save the best model")
    data_flags(t, required=False)
    t.add_argument("--out", default="runs/run", help="run folder (default: runs/run)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, with "
                                                         "its config and data (other data or versions are refused)")
    t.add_argument("--force", action="store_true", help="--resume even when the data files or versions differ from "
                                                        "the run's (run.json records it)")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument("--epochs", type=float, help="train.epochs")
    t.add_argument("--max-train-samples", type=int, help="data.max_train_samples: train on a seeded sample of N")
    t.add_argument("--max-train-per-class", type=int, help="data.max_train_per_class: train on a seeded, stratified "
                                                        "sample of K per class (few-shot experiments)")
    config_flags(t)
    t.set_defaults(func=cmd_train)

    cf = sub.add_parser("config", help="print the config a train with these flags would use: every key, its value "
                                       "and what it does, as YAML for --config (checked as train checks it)")
    cf.add_argument("--epochs", type=float, help="train.epochs")
    cf.add_argument("--max-train-samples", type=int, help="data.max_train_samples")
    cf.add_argument("--max-train-per-class", type=int, help="data.max_train_per_class")
    config_flags(cf)
    cf.set_defaults(func=cmd_config)

    d = sub.add_parser("demo", help="fine-tune m3e-small on the packaged THUCNews sample, evaluate, predict")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=float, default=None)
    d.add_argument("--max-train-samples", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    evaluate_parser(sub)

    pr = sub.add_parser("predict", help="predict the texts of a file or standard input (txt, CSV, TSV, JSONL, JSON, "
                                        "parquet, Excel .xlsx; .gz/.bz2/.zst); JSONL, CSV, TSV, parquet or .xlsx out")
    model_source(pr)
    pr.add_argument("input", nargs="?",
                    help="input file: .txt one text per line (pair models: text_a<TAB>text_b); .csv/.tsv with a header "
                         "line; .jsonl; .json (an array of objects); .parquet; .xlsx (header found as in training); the text "
                         "formats also compressed (.gz, .bz2, .zst). Default, or -: standard input, one text per line")
    pr.add_argument("--format", choices=["auto", "text", "csv", "tsv", "jsonl", "json", "parquet", "xlsx"], default="auto",
                    help="input format (default: from the extension; standard input and other extensions: text)")
    pr.add_argument("--text-column", metavar="NAME",
                    help="the column (key) holding the text (default: the one of text, sentence, content, review, ...)")
    pr.add_argument("--text-b-column", metavar="NAME",
                    help="pair models: the column holding the second text (default: text_b, sentence2, ...)")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument("--batch-size", type=int, default=64, help="texts per model batch (the input is read, predicted "
                                                                "and written 1024 records at a time)")
    pr.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: the library's)")
    pr.add_argument("--encoding", default="utf-8", help="text input's encoding: utf-8 (default; a BOM is dropped), "
                                                        "gb18030 (GBK: Excel's CSV on Chinese Windows), big5, ...")
    pr.add_argument("--sheet", metavar="NAME", help="an .xlsx input: the sheet to read, a name or 0-based index "
                                                     "(default: the first visible sheet with a text column)")
    pr.add_argument("--output", help="write here instead of standard output (JSONL); the format follows the "
                                     "extension: .jsonl, .json, .csv, .tsv, .parquet, .xlsx (other columns of the "
                                     "input pass through, then the prediction)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument("--no-check", action="store_true",
                    help="skip reading the input file once for problems before predicting (a bad record still stops "
                         "the run, unless --on-invalid skip)")
    pr.add_argument("--on-invalid", choices=["error", "skip"], default="error",
                    help="a bad record (an empty text, a row with the wrong number of columns, a line that is not "
                         "JSON): error (default) stops the run (a file is read once first, so that it stops before "
                         "predicting, with its bad records listed); skip leaves them out of the output and lists them "
                         "on standard error")
    decision_flags(pr)
    pr.set_defaults(func=cmd_predict)

    export_parser(sub)

    serve_parser(sub)

    ph = sub.add_parser("push", help="upload a run's model/ folder (with its model card) to the Hugging Face Hub")
    ph.add_argument("--run", required=True, help="run folder from `tricklab train`")
    ph.add_argument("--repo", required=True, help="repo id on the Hub, e.g. user/my-classifier")
    ph.add_argument("--private", action="store_true", help="create the repo private")
    ph.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN or the cached login)")
    ph.set_defaults(func=cmd_push)

    add_compare_parsers(sub)

    try:
        from .generation.cli import add_parser as add_generate
    except ImportError:
        add_generate = None
    if add_generate is not None:
        add_generate(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .runfiles import watch_parent

    watch_parent()             # a training subprocess of `compare --jobs` ends with its parent
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return int(args.func(args) or 0)
    except TrickLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        again = (f"; `tricklab train --out {shlex.quote(str(out))} --resume` continues from its last checkpoint "
                 f"(if one was written)"
                 if args.command == "train" and out else
                 "; the same command again reuses the finished runs" if args.command in ("compare", "tune") else "")
        print("interrupted" + again, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
