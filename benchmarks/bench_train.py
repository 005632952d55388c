"""Side by side, in one run: tricklab's default THUCNews recipe vs a plain transformers Trainer.

Same m3e-small weights, ../shared/data/thucnews (19,371 train / 10k dev / 10k test), max length 32,
3 epochs, lr 5e-5, seed 1. Each system runs in its own subprocess, one after the other, so peak RSS
and timings are its own. Prints test accuracy, macro-F1, train samples/s, wall time, peak RSS and the
throughput ratios as a markdown table.

    .venv/bin/python benchmarks/bench_train.py [--systems tricklab,trainer_fp32,trainer_bf16] [--train-limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "thucnews"


def read(split: str, limit: int = 0) -> tuple[list[str], list[int]]:
    lines = (DATA / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    if limit:
        lines = lines[:limit]
    texts, labels = zip(*(ln.rsplit("\t", 1) for ln in lines if ln.strip()))
    return list(texts), [int(x) for x in labels]


def run_tricklab(out: Path, limit: int) -> dict:
    from tricklab.config import load_config
    from tricklab.training import train

    sets = [f"data.max_train_samples={limit}"] if limit else []
    cfg = load_config(ROOT / "configs" / "thucnews.yaml", sets + ["train.threads=2"])
    t0 = time.perf_counter()
    m = train(cfg, DATA, out=out, progress=False)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_samples_per_s": m["train_samples_per_s"],
            "train_s": m["train_seconds"], "wall_s": time.perf_counter() - t0}


def run_trainer(out: Path, limit: int, bf16: bool) -> dict:
    """What a user would write with plain transformers: Trainer defaults, dynamic padding, best dev accuracy."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tricklab.model import resolve_model

    torch.set_num_threads(2)
    path = resolve_model("m3e-small")
    tok = AutoTokenizer.from_pretrained(path)
    names = (DATA / "class.txt").read_text(encoding="utf-8").split()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))

    def ds(split: str, lim: int = 0) -> Dataset:
        texts, labels = read(split, lim)
        enc = tok(texts, truncation=True, max_length=32)
        return Dataset.from_dict({**enc, "labels": labels})

    train_ds, dev_ds, test_ds = ds("train", limit), ds("dev"), ds("test")

    def metrics(p):
        pred = p.predictions.argmax(-1)
        return {"accuracy": float((pred == p.label_ids).mean())}

    args = TrainingArguments(output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=64,
                             per_device_eval_batch_size=256, learning_rate=5e-5, warmup_steps=0.05, weight_decay=0.01,
                             eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="accuracy", save_total_limit=1, seed=1, bf16=bf16,
                             use_cpu=not torch.cuda.is_available(), report_to=[], logging_steps=50,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics)
    t0 = time.perf_counter()
    tr = trainer.train()
    train_s = time.perf_counter() - t0
    p = trainer.predict(test_ds)
    pred, gold = p.predictions.argmax(-1), p.label_ids
    f1s = []
    for c in range(len(names)):
        tp = ((pred == c) & (gold == c)).sum()
        prec = tp / max(1, (pred == c).sum())
        rec = tp / max(1, (gold == c).sum())
        f1s.append(0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return {"accuracy": float((pred == gold).mean()), "macro_f1": float(np.mean(f1s)),
            "train_samples_per_s": float(tr.metrics["train_samples_per_second"]), "train_s": train_s,
            "wall_s": time.perf_counter() - t0}


def child(system: str, out: Path, limit: int) -> None:
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # every measurement starts from scratch
    t0 = time.perf_counter()
    if system == "tricklab":
        res = run_tricklab(out, limit)
    else:
        res = run_trainer(out, limit, bf16=system == "trainer_bf16")
    res["wall_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", default="tricklab,trainer_fp32,trainer_bf16")
    ap.add_argument("--train-limit", type=int, default=0, help="first N train lines (0: all 19,371)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_train"))
    ap.add_argument("--reuse", default="", help="systems whose result.json from an earlier invocation to include")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, Path(a.out) / a.child, a.train_limit)
        return
    rows = {}
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    for system in a.reuse.split(",") if a.reuse else []:  # a result measured by an earlier invocation
        rows[system] = json.loads((Path(a.out) / system / "result.json").read_text())
    for system in a.systems.split(","):
        print(f"running {system} ...", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, __file__, "--child", system, "--out", a.out, "--train-limit", str(a.train_limit)],
                           capture_output=True, text=True, env=env)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{system} failed")
        rows[system] = json.loads(line[7:])
        (Path(a.out) / system / "result.json").write_text(line[7:])
        print(f"  {system}: {rows[system]}", file=sys.stderr, flush=True)
    base = {k: rows[k]["train_samples_per_s"] for k in rows if k.startswith("trainer")}
    print("| system | test acc | macro-F1 | train samples/s | train s | wall s | peak RSS MB |"
          + "".join(f" x {k} |" for k in base))
    print("|---" * (7 + len(base)) + "|")
    for k, r in rows.items():
        ratios = "".join(f" {r['train_samples_per_s'] / v:.2f} |" for v in base.values())
        print(f"| {k} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_samples_per_s']:.1f} | {r['train_s']:.0f} | "
              f"{r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |{ratios}")


if __name__ == "__main__":
    main()
