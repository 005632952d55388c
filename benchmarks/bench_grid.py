"""A `tricklab compare` grid (variants x seeds) against the same runs as separate `tricklab train` commands, wall time.

    .venv/bin/python benchmarks/bench_grid.py --data DIR [--config configs/thucnews.yaml] [--set train.epochs=1 ...]
        [--variants baseline,ls,ema] [--seeds 3] [--out runs/bench_grid] [--concurrent]

Arm `compare`: one `tricklab compare` process. Arm `separate`: one `tricklab train --config C` process per run, one
after the other, where C is exactly the config that compare trains for that variant and seed (written with compare's
own variant_config). Each arm gets a fresh token and precision cache ($TRICKLAB_CACHE), as a first grid on new data
would. --concurrent runs the two arms at the same time, so that a shared machine's changing load hits both (each
process keeps the thread count the environment gives it: set OMP_NUM_THREADS). Prints wall seconds per arm, the
test accuracy per run (the two arms must agree) and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tricklab_cmd() -> list[str]:
    return [sys.executable, "-m", "tricklab.cli"]


def separate_configs(a: argparse.Namespace, out: Path) -> list[tuple[str, int, Path]]:
    """(variant, seed, config file) of every run of the grid, as compare builds them."""
    from tricklab.ablation.compare import parse_seeds, parse_variants, variant_config
    from tricklab.config import load_config

    base = load_config(a.config, a.set).to_dict()
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for v in parse_variants(a.variants, {}, "baseline"):
        for s in parse_seeds(a.seeds):
            path = folder / f"{v.name}_seed{s}.yaml"
            variant_config(yaml.safe_load(yaml.safe_dump(base)), v, s, "separate").save(path)
            runs.append((v.name, s, path))
    return runs


def arm_compare(a: argparse.Namespace, out: Path, env: dict[str, str]) -> float:
    cmd = tricklab_cmd() + ["compare", "--data", a.data, "--variants", a.variants, "--seeds", str(a.seeds),
                            "--out", str(out / "compare")]
    cmd += ["--config", a.config] if a.config else []
    cmd += sum((["--set", s] for s in a.set), [])
    t0 = time.perf_counter()
    with open(out / "compare.log", "w", encoding="utf-8") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    return time.perf_counter() - t0


def arm_separate(a: argparse.Namespace, out: Path, env: dict[str, str], runs: list[tuple[str, int, Path]]) -> float:
    t0 = time.perf_counter()
    with open(out / "separate.log", "w", encoding="utf-8") as log:
        for name, seed, cfg in runs:
            cmd = tricklab_cmd() + ["train", "--data", a.data, "--config", str(cfg), "--quiet",
                                    "--out", str(out / "separate" / name / f"seed{seed}")]
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    return time.perf_counter() - t0


def accuracies(folder: Path, runs: list[tuple[str, int, Path]]) -> dict[str, float]:
    return {f"{n}/seed{s}": json.loads((folder / n / f"seed{s}" / "metrics.json").read_text())["accuracy"]
            for n, s, _ in runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default=str(ROOT / "configs" / "thucnews.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variants", default="baseline,ls,ema")
    ap.add_argument("--seeds", default="3")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_grid"))
    ap.add_argument("--concurrent", action="store_true", help="run the two arms at the same time")
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    runs = separate_configs(a, out)
    envs = {arm: dict(os.environ, HF_HUB_OFFLINE="1", TRICKLAB_CACHE=str(out / f"cache_{arm}"))
            for arm in ("compare", "separate")}
    wall: dict[str, float] = {}
    jobs = {"compare": lambda: arm_compare(a, out, envs["compare"]),
            "separate": lambda: arm_separate(a, out, envs["separate"], runs)}
    load0 = os.getloadavg()
    if a.concurrent:
        threads = [threading.Thread(target=lambda k=k: wall.__setitem__(k, jobs[k]())) for k in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for k, job in jobs.items():
            wall[k] = job()
    load1 = os.getloadavg()
    acc = {arm: accuracies(out / arm, runs) for arm in wall}
    print(f"runs: {len(runs)}; concurrent: {a.concurrent}; load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    print("| arm | wall s | per run s | test accuracy, mean over runs |")
    print("|---|---|---|---|")
    for arm, s in wall.items():
        print(f"| {arm} | {s:.0f} | {s / len(runs):.1f} | {sum(acc[arm].values()) / len(runs):.4f} |")
    same = all(abs(acc["compare"][k] - acc["separate"][k]) < 1e-9 for k in acc["compare"]) if len(acc) == 2 else None
    print(f"per-run test accuracy identical in both arms: {same}")
    (out / "result.json").write_text(json.dumps({"wall_s": wall, "accuracy": acc, "load": [load0, load1]}, indent=1))


if __name__ == "__main__":
    main()
