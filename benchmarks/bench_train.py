"""Side by side, in one run: tricklab's default THUCNews recipe vs a plain transformers Trainer.

Same m3e-small weights, ../shared/data/thucnews (19,371 train / 10k dev / 10k test; --train-limit,
--dev-limit, --test-limit take the first N lines of each), max length 32, lr 5e-5, seed 1. Each system runs
in its own subprocess, one after the other, so peak RSS and timings are its own; with --repeats R the
systems run R times, in alternating order (A B C, C B A, ...), so that drifting load on a shared machine
hits them all; --concurrent runs a repeat's systems at the same time instead (on a machine other jobs
load, the same load then hits every system). Prints test accuracy, macro-F1, train samples/s, wall time,
peak RSS and the throughput ratios as a markdown table (one row per run, then medians).

Systems:
    tricklab         configs/thucnews.yaml (batch 128, length-grouped batches, fused AdamW, dev every 100 steps)
    trainer_default  what a user writes with plain transformers: Trainer defaults (batch 64, dynamic padding,
                     dev evaluation each epoch); `trainer_fp32` is the same system under its former name
    trainer_bf16     trainer_default with bf16=True
    trainer_like     the like-for-like anchor: the Trainer with tricklab's settings where it has them: batch 128,
                     length-grouped batches (train_sampling_strategy="group_by_length", transformers 5's name for
                     group_by_length=True), optim="adamw_torch_fused", dev every 100 steps (each epoch when a run
                     has fewer steps), lower-cased input as tricklab's `lowercase: auto` does for m3e-small, and the
                     precision tricklab's `precision: auto` measures fastest on this host

    .venv/bin/python benchmarks/bench_train.py [--systems tricklab,trainer_default,trainer_like] [--train-limit N]
        [--dev-limit N] [--test-limit N] [--epochs E] [--threads T] [--repeats R] [--concurrent]
        [--tricklab-set KEY=VALUE ...]

"train samples/s" is samples over the optimizer loop's time without dev evaluations and checkpoint saving, for
every system (the Trainer's own `train_samples_per_second`, which includes its evaluations, is in the JSON too).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "thucnews"
SYSTEMS = ("tricklab", "trainer_default", "trainer_fp32", "trainer_bf16", "trainer_like")


def subset(source: Path, out: Path, train: int, dev: int, test: int) -> Path:
    """A seeded sample of N lines of each split of `source` (0: all), in file order, in out/data, read by every
    system alike (THUCNews' test.txt is sorted by class: its first lines are all one class)."""
    import random

    if not (train or dev or test):
        return source
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("dev", dev), ("test", test)):
        lines = (source / f"{split}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        keep = sorted(random.Random(0).sample(range(len(lines)), min(n, len(lines)))) if n else range(len(lines))
        (folder / f"{split}.txt").write_text("".join(lines[i] for i in keep), encoding="utf-8")
    (folder / "class.txt").write_text((source / "class.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def read(data: Path, split: str) -> tuple[list[str], list[int]]:
    lines = (data / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    texts, labels = zip(*(ln.rsplit("\t", 1) for ln in lines if ln.strip()))
    return list(texts), [int(x) for x in labels]


def run_tricklab(out: Path, data: Path, a: argparse.Namespace) -> dict:
    from tricklab.config import load_config
    from tricklab.training import train

    sets = [f"train.epochs={a.epochs}", f"train.threads={a.threads}"] + list(a.tricklab_set)
    cfg = load_config(ROOT / "configs" / "thucnews.yaml", sets)
    m = train(cfg, data, out=out, progress=False)
    import torch

    from tricklab.model.runtime import resolve_precision
    precision = resolve_precision(cfg.train.precision, "cuda" if torch.cuda.is_available() else "cpu")  # cached
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_samples_per_s": m["train_samples_per_s"],
            "train_s": m["train_seconds"], "precision": precision, "dev_accuracy": m["dev"]["accuracy"]}


def loop_timer():
    """A TrainerCallback that adds up the time the Trainer spends in dev evaluations and checkpoint saving (from the
    end of the step that triggers them to the last of them), to take out of its train time as tricklab does."""
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        def __init__(self) -> None:
            self.excluded, self.step_end, self.last_hook = 0.0, None, None

        def settle(self) -> None:
            if self.step_end is not None and self.last_hook is not None and self.last_hook > self.step_end:
                self.excluded += self.last_hook - self.step_end
            self.last_hook = None

        def on_step_begin(self, args, state, control, **kw):
            self.settle()

        def on_step_end(self, args, state, control, **kw):
            self.settle()
            self.step_end = time.perf_counter()

        def on_evaluate(self, args, state, control, **kw):
            self.last_hook = time.perf_counter()

        def on_save(self, args, state, control, **kw):
            self.last_hook = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.settle()

    return LoopTimer()


def trainer_args(system: str, out: Path, n_train: int, epochs: float):
    """TrainingArguments: the defaults a user keeps, or (trainer_like) tricklab's batch, sampler, optimizer, cadence
    and measured precision."""
    import math

    import torch
    from transformers import TrainingArguments

    like = system == "trainer_like"
    if like:
        from tricklab.model.runtime import resolve_precision
        bf16 = resolve_precision("auto", "cuda" if torch.cuda.is_available() else "cpu") == "bf16"
        batch = 128
        steps = math.ceil(n_train / batch) * epochs
        cadence = ({"eval_strategy": "steps", "eval_steps": 100, "save_strategy": "steps", "save_steps": 100}
                   if steps >= 100 else {"eval_strategy": "epoch", "save_strategy": "epoch"})
        extra = {"train_sampling_strategy": "group_by_length", "optim": "adamw_torch_fused"}
    else:
        bf16, batch = system == "trainer_bf16", 64
        cadence, extra = {"eval_strategy": "epoch", "save_strategy": "epoch"}, {}
    return TrainingArguments(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=batch,
                             per_device_eval_batch_size=256, learning_rate=5e-5, warmup_steps=0.05, weight_decay=0.01,
                             load_best_model_at_end=True, metric_for_best_model="accuracy", save_total_limit=1, seed=1,
                             bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to=[], logging_steps=50,
                             dataloader_num_workers=0, disable_tqdm=True, **cadence, **extra)


def run_trainer(system: str, out: Path, data: Path, a: argparse.Namespace) -> dict:
    """A plain transformers Trainer: dynamic padding, best dev accuracy kept (trainer_args for the settings)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    from tricklab.model import resolve_model

    torch.set_num_threads(a.threads)
    path = resolve_model("m3e-small")
    tok = AutoTokenizer.from_pretrained(path)
    names = (data / "class.txt").read_text(encoding="utf-8").split()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))

    def ds(split: str) -> Dataset:
        texts, labels = read(data, split)
        if system == "trainer_like":        # what tricklab's lowercase: auto does for this tokenizer
            texts = [t.lower() for t in texts]
        enc = tok(texts, truncation=True, max_length=32)
        return Dataset.from_dict({**enc, "labels": labels})

    train_ds, dev_ds, test_ds = ds("train"), ds("dev"), ds("test")

    def metrics(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    args = trainer_args(system, out, len(train_ds), a.epochs)
    timer = loop_timer()
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics, callbacks=[timer])
    t0 = time.perf_counter()
    tr = trainer.train()
    train_s = time.perf_counter() - t0 - timer.excluded
    p = trainer.predict(test_ds)
    pred, gold = p.predictions.argmax(-1), p.label_ids
    f1s = []
    for c in range(len(names)):
        tp = ((pred == c) & (gold == c)).sum()
        prec, rec = tp / max(1, (pred == c).sum()), tp / max(1, (gold == c).sum())
        f1s.append(0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return {"accuracy": float((pred == gold).mean()), "macro_f1": float(np.mean(f1s)),
            "train_samples_per_s": len(train_ds) * a.epochs / train_s, "train_s": train_s,
            "trainer_train_samples_per_second": float(tr.metrics["train_samples_per_second"]),
            "eval_and_save_s": timer.excluded, "precision": "bf16" if args.bf16 else "fp32",
            "dev_accuracy": float(trainer.state.best_metric)}


def child(system: str, out: Path, data: Path, a: argparse.Namespace) -> None:
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # every measurement starts from scratch
    t0 = time.perf_counter()
    if system == "tricklab":
        res = run_tricklab(out, data, a)
    else:
        res = run_trainer(system.replace("trainer_fp32", "trainer_default"), out, data, a)
    res["wall_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res), flush=True)


def table(rows: list[tuple[str, dict]]) -> None:
    """One markdown row per run, then the median of each system's runs; ratios of loop samples/s to the Trainer
    systems' medians."""
    by: dict[str, list[dict]] = {}
    for k, r in rows:
        by.setdefault(k, []).append(r)
    fields = ("dev_accuracy", "accuracy", "macro_f1", "train_samples_per_s", "train_s", "wall_s", "peak_rss_mb")
    med = {k: {f: statistics.median(r.get(f, float("nan")) for r in rs) for f in fields} for k, rs in by.items()}
    base = {k: v["train_samples_per_s"] for k, v in med.items() if k.startswith("trainer")}
    print("| system | run | precision | dev acc (best) | test acc | test macro-F1 | train samples/s | train s | wall s | "
          "peak RSS MB |" + "".join(f" x {k} |" for k in base))
    print("|---" * (10 + len(base)) + "|")
    shown = [(k, str(i + 1), r) for k, rs in by.items() for i, r in enumerate(rs)]
    shown += [(k, "median", v | {"precision": by[k][0].get("precision", "")}) for k, v in med.items() if len(by[k]) > 1]
    for k, run, r in shown:
        ratios = "".join(f" {r['train_samples_per_s'] / v:.2f} |" for v in base.values())
        print(f"| {k} | {run} | {r.get('precision', '')} | {r.get('dev_accuracy', float('nan')):.4f} | "
              f"{r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
              f"{r['train_samples_per_s']:.1f} | {r['train_s']:.0f} | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |{ratios}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", default="tricklab,trainer_default,trainer_like")
    ap.add_argument("--train-limit", type=int, default=0, help="first N train lines (0: all 19,371)")
    ap.add_argument("--dev-limit", type=int, default=0, help="first N dev lines (0: all 10,000)")
    ap.add_argument("--test-limit", type=int, default=0, help="first N test lines (0: all 10,000)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every system")
    ap.add_argument("--repeats", type=int, default=1, help="run the systems R times, order reversed every other time")
    ap.add_argument("--concurrent", action="store_true",
                    help="run the systems of a repeat at the same time (a shared machine's load then hits all alike)")
    ap.add_argument("--tricklab-set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for the tricklab system (e.g. train.compile=true)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_train"))
    ap.add_argument("--source", default=str(DATA), help="the THUCNews folder (train/dev/test.txt, class.txt)")
    ap.add_argument("--reuse", default="", help="systems whose result.json from an earlier invocation to include")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, Path(a.out) / a.child, Path(a.data), a)
        return
    systems = a.systems.split(",")
    for s in systems + (a.reuse.split(",") if a.reuse else []):
        if s not in SYSTEMS:
            raise SystemExit(f"--systems/--reuse: unknown system {s!r} (choose from: {', '.join(SYSTEMS)})")
    data = subset(Path(a.source), Path(a.out), a.train_limit, a.dev_limit, a.test_limit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(a.threads))
    reused = a.reuse.split(",") if a.reuse else []
    rows = [(s, json.loads((Path(a.out) / s / "result.json").read_text())) for s in reused]
    passthrough = sum((["--tricklab-set", x] for x in a.tricklab_set), [])
    for rep in range(a.repeats):
        order = systems if rep % 2 == 0 else systems[::-1]
        groups = [order] if a.concurrent else [[s] for s in order]
        for group in groups:
            load = os.getloadavg()[0]
            print(f"running {', '.join(group)} (repeat {rep + 1}, load average {load:.2f}) ...", file=sys.stderr,
                  flush=True)
            procs = [(s, subprocess.Popen([sys.executable, __file__, "--child", s, "--out", a.out, "--data", str(data),
                                           "--epochs", str(a.epochs), "--threads", str(a.threads)] + passthrough,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
                     for s in group]
            for system, p in procs:
                stdout, stderr = p.communicate()
                line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(stdout[-2000:], stderr[-4000:], file=sys.stderr)
                    raise SystemExit(f"{system} failed")
                res = json.loads(line[7:]) | {"load_before": load, "load_after": os.getloadavg()[0]}
                rows.append((system, res))
                (Path(a.out) / system / "result.json").write_text(json.dumps(res))
                print(f"  {system}: {res}", file=sys.stderr, flush=True)
    table(rows)


if __name__ == "__main__":
    main()
