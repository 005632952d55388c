"""One training factor at a time, on tricklab's own code paths and real THUCNews batches (m3e-small, max length 32).

    .venv/bin/python benchmarks/bench_train_factors.py compile [--train-limit 3000] [--steps 12] [--threads 2]
    .venv/bin/python benchmarks/bench_train_factors.py eval-batch [--dev-limit 1000] [--sizes 64,128,256,512,1024]

compile: two copies of the same classifier (build_classifier) with fused AdamW, one eager, one with its encoder under
torch.compile (model/runtime.compile_encoder: inductor, dynamic shapes), train on the same length-grouped batches
(data.train_batches, batch 128) in alternating order, step by step, so that a shared machine's load hits both alike.
Reports the compiled copy's first steps (compile time included), the median step after them for both, and how many
steps the compile time takes to pay back (never, when compiled steps are not faster).

eval-batch: model.runtime.all_logits over the dev headlines at each train.eval_batch_size, in interleaved rounds;
the median sentences/s per size.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "thucnews"


def encoded(source: Path, split: str, limit: int):
    """(Encoded split, tokenizer, model path) with tricklab's tokenisation (lower-cased, as m3e-small needs)."""
    from tricklab.data.batching import encode
    from tricklab.model.classifier import load_tokenizer
    from tricklab.model.resolve import resolve_model

    path = resolve_model("m3e-small")
    tok = load_tokenizer(path)
    lines = (source / f"{split}.txt").read_text(encoding="utf-8").splitlines()[:limit]
    texts, labels = zip(*(ln.rsplit("\t", 1) for ln in lines if ln.strip()))
    return encode(tok, list(texts), None, 32, True, [int(x) for x in labels]), tok, path


def step(model, opt, batch) -> float:
    t0 = time.perf_counter()
    out = model(**batch.inputs)
    torch.nn.functional.cross_entropy(out.logits, batch.labels).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def bench_compile(a: argparse.Namespace) -> None:
    from tricklab.data.batching import collate, train_batches
    from tricklab.model import build_classifier
    from tricklab.model.runtime import compile_encoder

    enc, tok, _ = encoded(Path(a.source), "train", a.train_limit)
    eager, _, _ = build_classifier("m3e-small", 10, "pooler", "linear", {}, 0.1)
    compiled = copy.deepcopy(eager)
    compile_encoder(compiled)
    opts = {id(m): torch.optim.AdamW(m.parameters(), lr=5e-5, fused=True) for m in (eager, compiled)}
    batches = train_batches(enc.lengths, 128, 1, 0, True)[: a.steps]
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for i, idx in enumerate(batches):
        b = collate(enc, idx, tok.pad_token_id, "single_label", 10)
        pair = [("eager", eager), ("compiled", compiled)]
        for name, m in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(step(m, opts[id(m)], b))
        print(f"step {i + 1} T={b.inputs['input_ids'].shape[1]}: eager {times['eager'][-1]:.2f} s, "
              f"compiled {times['compiled'][-1]:.2f} s", flush=True)
    warm = a.warm
    e, c = statistics.median(times["eager"][warm:]), statistics.median(times["compiled"][warm:])
    extra = sum(times["compiled"][:warm]) - sum(times["eager"][:warm])
    pay = f"{extra / (e - c):.0f} steps" if c < e else "never (compiled steps are not faster)"
    print(f"| steps | first {warm} compiled steps (s) | same {warm} eager (s) | median step after: eager (s) | "
          f"compiled (s) | compiled / eager | compile time paid back after |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(batches)} | {sum(times['compiled'][:warm]):.1f} | {sum(times['eager'][:warm]):.1f} | {e:.2f} | "
          f"{c:.2f} | {c / e:.2f} | {pay} |")


def bench_eval_batch(a: argparse.Namespace) -> None:
    from tricklab.model import build_classifier
    from tricklab.model.runtime import all_logits

    enc, tok, _ = encoded(Path(a.source), "dev", a.dev_limit)
    model, _, _ = build_classifier("m3e-small", 10, "pooler", "linear", {}, 0.1)
    sizes = [int(x) for x in a.sizes.split(",")]
    rates: dict[int, list[float]] = {s: [] for s in sizes}
    all_logits(model, enc, 256, tok.pad_token_id, torch.device("cpu"), "fp32")       # warm-up
    for r in range(a.rounds):
        for s in sizes if r % 2 == 0 else sizes[::-1]:
            t0 = time.perf_counter()
            all_logits(model, enc, s, tok.pad_token_id, torch.device("cpu"), "fp32")
            rates[s].append(len(enc) / (time.perf_counter() - t0))
    print("| eval_batch_size | sentences/s (median) | per round |")
    print("|---|---|---|")
    for s in sizes:
        print(f"| {s} | {statistics.median(rates[s]):.0f} | {' / '.join(f'{x:.0f}' for x in rates[s])} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("compile", "eval-batch"))
    ap.add_argument("--source", default=str(DATA))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=12, help="compile: optimizer steps of each copy")
    ap.add_argument("--warm", type=int, default=3, help="compile: first steps counted as compile time")
    ap.add_argument("--dev-limit", type=int, default=1000)
    ap.add_argument("--sizes", default="64,128,256,512,1024")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} threads", flush=True)
    (bench_compile if a.what == "compile" else bench_eval_batch)(a)


if __name__ == "__main__":
    main()
