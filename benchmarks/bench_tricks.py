"""Step-time cost of each trick relative to a plain training step, measured in one run.

m3e-small (4 layers, hidden 512), batch 64 x 32 tokens, bf16 autocast on CPU, AdamW. One model and
optimizer per variant; every round times one full optimizer step of every variant (forward, losses,
backward, trick hooks, clip, step, zero_grad) in a freshly shuffled order, so that drift in machine
load hits all variants alike. Reported: median step time, and the median over rounds of the paired
ratio variant/plain (same round), which is the number compared to the targets.

    python benchmarks/bench_tricks.py --rounds 4 --only rdrop,fgm,supcon,ema
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import tricklab.losses  # noqa: F401  (registration)
import tricklab.tricks  # noqa: F401
from tricklab.types import TrainContext
from tricklab.model import build_classifier
from tricklab.registry import LOSSES, TRICKS
from tricklab.types import Batch

C = 10
# name -> (tricks, aux losses [(weight, name, params)], target ratio or None)
VARIANTS = {
    "plain": ([], [], None),
    "rdrop": ([("rdrop", {})], [], 1.9),
    "fgm": ([("fgm", {})], [], 2.1),
    "pgd(K=3)": ([("pgd", {"steps": 3})], [], None),
    "supcon": ([], [(0.2, "supcon", {})], 1.05),
    "ema": ([("ema", {})], [], 1.05),
    "llrd": ([("llrd", {})], [], None),
    "freeze(emb)": ([("freeze", {})], [], None),
}


class Variant:
    def __init__(self, name: str, model_name: str, ctx: TrainContext):
        trick_specs, aux_specs, self.target = VARIANTS[name]
        torch.manual_seed(0)
        self.model, _, _ = build_classifier(model_name, C, "pooler", "linear", {}, 0.1)
        self.model.train()
        self.losses = [(1.0, LOSSES.build("ce"))] + [(w, LOSSES.build(n, **p)) for w, n, p in aux_specs]
        for _, loss in self.losses:
            loss.setup(ctx)
        self.tricks = [TRICKS.build(n, **p) for n, p in trick_specs]
        for t in self.tricks:
            t.setup(self.model, ctx)
        groups = [{"name": "all", "params": [p for p in self.model.parameters() if p.requires_grad],
                   "lr": 2e-5, "weight_decay": 0.01}]
        for t in self.tricks:
            groups = t.param_groups(self.model, groups)
        self.opt = torch.optim.AdamW(groups)
        self.n = 0

    def forward_backward(self, batch: Batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.model(**batch.inputs)
            parts = {i: w * loss(out, batch) for i, (w, loss) in enumerate(self.losses)}
            for t in self.tricks:
                parts |= t.extra_losses(self.model, batch, out)
        sum(parts.values()).backward()

    def step(self, batch: Batch) -> float:
        t0 = time.perf_counter()
        for t in self.tricks:
            batch = t.transform_batch(batch)
        self.forward_backward(batch)
        for t in self.tricks:
            t.after_backward(self.model, partial(self.forward_backward, batch))
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.n += 1
        for t in self.tricks:
            t.after_step(self.model, self.n)
        return time.perf_counter() - t0


def make_batch(rng: torch.Generator, batch: int, length: int) -> Batch:
    ids = torch.randint(106, 21128, (batch, length), generator=rng)
    ids[:, 0], ids[:, -1] = 101, 102
    return Batch(inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids),
                         "token_type_ids": torch.zeros_like(ids)},
                 labels=torch.randint(0, C, (batch,), generator=rng), index=torch.arange(batch))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="m3e-small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1, help="rounds discarded at the start")
    ap.add_argument("--only", default="rdrop,fgm,supcon,ema",
                    help="comma-separated variants (plain always included); 'all' for every one: "
                         + ", ".join(VARIANTS))
    args = ap.parse_args()
    names = list(VARIANTS) if args.only == "all" else ["plain"] + [n for n in args.only.split(",") if n != "plain"]
    ctx = TrainContext("single_label", C, [str(i) for i in range(C)], [1] * C, 1000, 1000)
    variants = {n: Variant(n, args.model, ctx) for n in names}
    rng = torch.Generator().manual_seed(0)
    order_rng = random.Random(0)
    times: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    for r in range(args.warmup + args.rounds):
        batch = make_batch(rng, args.batch, args.length)
        order = names[:]
        order_rng.shuffle(order)
        for n in order:
            dt = variants[n].step(batch)
            if r >= args.warmup:
                times[n].append(dt)
        print(f"round {r + 1}/{args.warmup + args.rounds} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    plain = times["plain"]
    print(f"\nm3e-small step time, batch {args.batch} x {args.length}, bf16 autocast, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds (+{args.warmup} warm-up)\n")
    print("| variant | median step (s) | ratio vs plain (median of paired) | ratio IQR | target | met |")
    print("|---|---|---|---|---|---|")
    for n in names:
        ratios = sorted(a / b for a, b in zip(times[n], plain))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        target = VARIANTS[n][2]
        med = statistics.median(ratios)
        met = "" if target is None else ("yes" if med <= target else "NO")
        print(f"| {n} | {statistics.median(times[n]):.3f} | {med:.3f}x | {q[0]:.3f}-{q[2]:.3f} | "
              f"{'' if target is None else f'<= {target}x'} | {met} |")


if __name__ == "__main__":
    main()
