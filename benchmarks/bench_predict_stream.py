"""`tricklab predict` on large files: the streaming path (Predictor.predict_file: read a chunk, predict, write)
against the in-memory path (read every text into a list, Predictor.predict(list), write), for peak memory and
throughput, at several input sizes.

Input: a CSV (`id,text`) of N lines cycling through the 10k THUCNews test headlines (../shared/data/thucnews).
Model: a tiny random BERT (hidden 32, 2 layers; the m3e-small tokenizer, 21,128 tokens, when the packaged
model is installed, else a character vocabulary) trained for one step so that it is a real run folder: the
point is the file path around the model (reading, tokenising, writing), which a small model leaves exposed.
Each (size, mode) runs in its own subprocess; peak RSS is that process's ru_maxrss, "rss after load" its RSS
once the model is loaded; texts/s counts from after the model load to the last row written, and CPU s is the
process's CPU time over the same span (steadier than wall time on a shared machine).

Modes: stream (predict_file as the CLI runs it: one checking pass over the file, then the streaming pass),
stream_nocheck (`--no-check`: the streaming pass only), memory (list in, list out).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_predict_stream.py --sizes 10000,100000 [--work /tmp/bps]
        [--data ../shared/data/thucnews]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
THUC = ROOT.parent / "shared" / "data" / "thucnews"   # --data overrides it
MODES = ("stream", "stream_nocheck", "memory")


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_run(work: Path) -> Path:
    """A tiny random BERT fine-tuned for one step on 64 THUCNews headlines: a real run folder."""
    run = work / "run"
    if (run / "model" / "tricklab.json").is_file():
        return run
    import importlib.util

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    spec = importlib.util.find_spec("embedding")
    if spec and spec.submodule_search_locations:
        tok = AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "m3e-small")
    else:
        chars = sorted(set((THUC / "test.txt").read_text(encoding="utf-8")) - {"\n", "\t"})
        tok = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars)})
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(work / "tiny")
    tok.save_pretrained(work / "tiny")
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = (THUC / "train.txt").read_text(encoding="utf-8").splitlines()
    (data / "train.txt").write_text("\n".join(lines[:64]) + "\n", encoding="utf-8")
    (data / "dev.txt").write_text("\n".join(lines[64:96]) + "\n", encoding="utf-8")
    (data / "class.txt").write_text((THUC / "class.txt").read_text(encoding="utf-8"), encoding="utf-8")
    from tricklab.config import load_config
    from tricklab.training import train

    train(load_config(None, [f"model.name={work / 'tiny'}", "train.max_steps=1", "train.batch_size=16",
                             "train.precision=fp32", "data.max_length=32"]), data, out=run, progress=False)
    return run


def make_input(work: Path, n: int) -> Path:
    path = work / f"in_{n}.csv"
    if path.is_file():
        return path
    texts = [ln.split("\t")[0] for ln in (THUC / "test.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([i, texts[i % len(texts)]])
    return path


def child(mode: str, run: str, inp: str, out: str, threads: int) -> None:
    from tricklab.inference.predictor import Predictor

    pred = Predictor.from_run(run, threads=threads, precision="fp32")
    base = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "memory":
        with open(inp, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))
        results = pred.predict([r["text"] for r in records])
        with open(out, "w", encoding="utf-8") as f:
            for r, p in zip(records, results):
                f.write(json.dumps({**r, **p}, ensure_ascii=False) + "\n")
        n = len(results)
    else:
        n = pred.predict_file(inp, out, check=mode == "stream", log=None)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": n, "seconds": sec, "texts_per_s": n / sec, "cpu_seconds": cpu, "rss_after_load_mb": base,
                      "peak_rss_mb": peak}))


def main() -> None:
    global THUC
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated line counts (e.g. 10000,100000,1000000)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--work", default="/tmp/bench_predict_stream")
    ap.add_argument("--data", default=str(THUC), help="the THUCNews folder (default: ../shared/data/thucnews)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (the machine is shared)")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "RUN", "IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, threads=args.threads)
    THUC = Path(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = make_run(work)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        inp = make_input(work, n)
        for mode in args.modes.split(","):
            out = work / f"out_{n}_{mode}.jsonl"
            r = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", mode, str(run),
                                str(inp), str(out)], capture_output=True, text=True, env=dict(os.environ))
            if r.returncode:
                sys.exit(f"{mode} {n}: failed\n{r.stderr[-3000:]}")
            res = {"lines": n, "mode": mode, **json.loads(r.stdout.strip().splitlines()[-1])}
            results.append(res)
            print(f"{n:>9} {mode:<15} {res['texts_per_s']:>9.0f} texts/s {res['seconds']:>8.1f} s "
                  f"cpu {res['cpu_seconds']:>8.1f} s "
                  f"rss after load {res['rss_after_load_mb']:>6.0f} MB  peak {res['peak_rss_mb']:>6.0f} MB", flush=True)
            out.unlink(missing_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print("| lines | mode | texts/s | seconds | CPU s | RSS after load MB | peak RSS MB |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['lines']:,} | {r['mode']} | {r['texts_per_s']:.0f} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
              f"{r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
