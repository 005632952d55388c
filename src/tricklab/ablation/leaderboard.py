"""The leaderboard of a grid of runs: per variant, mean ± std over seeds and the statistics vs a
baseline (stats.py), as leaderboard.md, leaderboard.csv, ablation.png and a printed table.

`tricklab report --runs DIR [DIR ...]` reads run folders in any of these layouts:

    DIR/<variant>/seed<k>/metrics.json   a `tricklab compare` OUT folder
    DIR/seed<k>/metrics.json             one variant's folder (the variant is DIR's name)
    DIR/<name>/metrics.json              a folder of single runs (each one variant, one seed)
    DIR/metrics.json                     one run (the variant is DIR's name, or its parent's for seed<k>)

A run's seed is `train.seed` from its config.yaml (else the k of seed<k>); runs of two variants pair
up by seed. metrics.json gives the seed-level numbers (and `train_seconds`/`steps`, `per_class`);
predictions.npz (written by every run since it existed) adds the example-level tests. Folders
without metrics.json (failed or unfinished runs) are left out.
"""
from __future__ import annotations

import csv
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from ..errors import ConfigError, TrickLabError
from ..evaluation.predictions import load_predictions
from ..runfiles import atomic_open, atomic_write, read_json
from .stats import (MIN_SEEDS_FOR_VERDICT, Bootstrap, McNemar, mcnemar_exact, mean_std, paired_bootstrap,
                    paired_t_test, t_interval, verdict)

TASK_REPORT_METRICS = {"single_label": ("accuracy", "macro_f1"), "multi_label": ("micro_f1", "macro_f1"),
                       "regression": ("pearson", "spearman")}
LOWER_IS_BETTER = {"mse", "loss"}
_SEED_RE = re.compile(r"seed(\d+)")


@dataclass
class Run:
    variant: str
    seed: int
    folder: Path
    metrics: dict[str, Any]
    task: str


@dataclass
class Row:
    variant: str
    seeds: list[int]
    values: dict[str, list[float]]              # metric -> one value per seed (seed order)
    paired: int = 0                             # seeds shared with the baseline
    seed_deltas: list[float] = field(default_factory=list)
    delta: float = math.nan                     # mean per-seed difference of the verdict metric
    ci: tuple[float, float] = (math.nan, math.nan)
    t_p: float = math.nan
    bootstrap: Bootstrap | None = None
    mcnemar: McNemar | None = None
    example_note: str = ""
    sec_per_step: float = math.nan
    cost: float = math.nan                      # sec/step relative to the baseline
    gained: list[tuple[str, float]] = field(default_factory=list)
    lost: list[tuple[str, float]] = field(default_factory=list)
    verdict: str = ""

    def mean_std(self, metric: str) -> tuple[float, float]:
        return mean_std(self.values.get(metric, []))


@dataclass
class Leaderboard:
    task: str
    metric: str                  # the verdict metric
    metrics: tuple[str, ...]     # the columns
    baseline: str
    split: str                   # where metrics.json evaluated (test, else dev)
    rows: list[Row]
    notes: list[str]
    warnings: list[str] = field(default_factory=list)   # shown above the verdicts (chance_warning)


# ---------------------------------------------------------------- reading runs


def _task_of(folder: Path, metrics: dict[str, Any]) -> str:
    cfg = folder / "config.yaml"
    if cfg.is_file():
        task = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("task")
        if task in TASK_REPORT_METRICS:
            return task
    return "single_label" if "accuracy" in metrics else "multi_label" if "micro_f1" in metrics else "regression"


def _seed_of(folder: Path) -> int | None:
    cfg = folder / "config.yaml"
    if cfg.is_file():
        seed = ((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("train") or {}).get("seed")
        if isinstance(seed, int):
            return seed
    m = _SEED_RE.fullmatch(folder.name)
    return int(m.group(1)) if m else None


def discover_runs(dirs: list[str | Path]) -> list[Run]:
    """Every finished run (a folder with metrics.json) at depth 0-2 under each DIR (layouts above)."""
    runs: dict[tuple[str, int], Run] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise TrickLabError(f"--runs {d}: not a folder; give a `tricklab compare` --out folder, a variant folder "
                                f"(seed<k>/ inside) or run folders")
        found = [d] if (d / "metrics.json").is_file() else sorted(p.parent for p in d.glob("*/metrics.json"))
        if not found:
            found = sorted(p.parent for p in d.glob("*/*/metrics.json"))
        if not found:
            raise TrickLabError(f"--runs {d}: no run folders (metrics.json) inside; expected {d}/<variant>/seed<k>/, "
                                f"{d}/seed<k>/ or {d}/metrics.json")
        for run in found:
            variant = run.parent.name if _SEED_RE.fullmatch(run.name) else run.name
            metrics = read_json(run / "metrics.json", "re-run the `tricklab compare` command that made it (it "
                                "resumes an unfinished run), or delete that run folder")
            seed = _seed_of(run)
            if seed is None:
                seed = 0
            key = (variant, seed)
            if key in runs and runs[key].folder.resolve() != run.resolve():
                raise TrickLabError(f"two runs of variant {variant!r} with seed {seed}: {runs[key].folder} and {run}; "
                                    f"fix: give --runs folders whose variants differ")
            runs[key] = Run(variant, seed, run, metrics, _task_of(run, metrics))
    return sorted(runs.values(), key=lambda r: (r.variant, r.seed))


# ---------------------------------------------------------------- statistics


def _example_tests(base: dict[int, Run], var: dict[int, Run], seeds: list[int], split: str,
                   cache: dict[Path, dict[str, np.ndarray]]) -> tuple[Bootstrap | None, McNemar | None, str]:
    """Paired bootstrap of the accuracy difference and exact McNemar on the split's predictions,
    pooled over the paired seeds (single-label only)."""
    ca, cb, golds = [], [], []
    for s in seeds:
        pa = cache.setdefault(base[s].folder, load_predictions(base[s].folder))
        pb = cache.setdefault(var[s].folder, load_predictions(var[s].folder))
        key = f"{split}_gold"
        if key not in pa or key not in pb:
            return None, None, "no predictions.npz in some runs"
        if pa[key].shape != pb[key].shape or not np.array_equal(pa[key], pb[key]):
            return None, None, f"seed {s}: the two runs' {split} sets differ"
        golds.append(pa[key])
        ca.append(pa[f"{split}_logits"].argmax(-1) == pa[key])  # (N,)
        cb.append(pb[f"{split}_logits"].argmax(-1) == pb[key])
    mc = mcnemar_exact(np.concatenate(ca), np.concatenate(cb))
    same_set = all(g.shape == golds[0].shape and np.array_equal(g, golds[0]) for g in golds)
    if same_set:  # one test set: resample its examples, each carrying its mean difference over seeds
        d = np.mean([b.astype(float) - a.astype(float) for a, b in zip(ca, cb)], axis=0)   # (N,)
    else:         # a held-out split that differs by seed: resample the pooled (seed, example) pairs
        d = np.concatenate([b.astype(float) - a.astype(float) for a, b in zip(ca, cb)])
    return paired_bootstrap(d), mc, "" if same_set else "split differs by seed: pooled pairs resampled"


def chance_warning(task: str, baseline: list[dict[str, Any]]) -> str:
    """A warning when the baseline's runs (metrics.json dicts) are barely above chance, so that verdicts against
    them say little: single-label when the mean macro-F1 covers less than a quarter of the way from 1/C to 1, or the
    accuracy is within 0.01 of always predicting the majority class (its share of the evaluated split);
    multi-label when micro-F1 < 0.2; regression when Pearson < 0.2."""
    def mean(key: str) -> float:
        vals = [float(m[key]) for m in baseline if isinstance(m.get(key), (int, float))]
        return float(np.mean(vals)) if vals else math.nan

    tail = ("; its runs are probably undertrained (more epochs or data, another learning rate), and a trick that "
            "helps an untrained model may not help a trained one: read the verdicts below with care")
    if task == "single_label":
        support = [v.get("support", 0) for v in (baseline[0].get("per_class") or {}).values()] if baseline else []
        C, f1, acc = len(support), mean("macro_f1"), mean("accuracy")
        if C < 2:
            return ""
        chance = 1 / C
        if f1 < chance + 0.25 * (1 - chance):
            return (f"WARNING: the baseline is barely above chance: macro-F1 {f1:.4f} with {C} classes (chance "
                    f"{chance:.2f}, perfect 1){tail}")
        majority = max(support) / max(sum(support), 1)
        if acc <= majority + 0.01:
            return (f"WARNING: the baseline is barely above chance: accuracy {acc:.4f}, while always predicting the "
                    f"majority class scores {majority:.4f} (macro-F1 {f1:.4f}){tail}")
    elif task == "multi_label" and mean("micro_f1") < 0.2:
        return f"WARNING: the baseline is barely above chance: micro-F1 {mean('micro_f1'):.4f}{tail}"
    elif task == "regression" and mean("pearson") < 0.2:
        return f"WARNING: the baseline is barely above chance: Pearson {mean('pearson'):.4f}{tail}"
    return ""


def build_leaderboard(runs: list[Run], baseline: str = "baseline", metric: str | None = None,
                      require_baseline: bool = True) -> Leaderboard:
    if not runs:
        raise TrickLabError("no finished runs (metrics.json) to report on")
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1:
        raise TrickLabError(f"the runs mix tasks ({', '.join(tasks)}); fix: report on runs of one task")
    task = tasks[0]
    cols = TASK_REPORT_METRICS[task]
    metric = metric or cols[0]
    if not all(isinstance(r.metrics.get(metric), (int, float)) for r in runs):
        avail = sorted(k for k, v in runs[0].metrics.items() if isinstance(v, (int, float)) and k not in
                       ("best_step", "steps", "n", "train_seconds", "train_samples_per_s"))
        raise ConfigError(f"--metric {metric!r}: not in every run's metrics.json (choose from: {', '.join(avail)})")
    if metric not in cols:
        cols = (metric, *cols)
    by_variant: dict[str, dict[int, Run]] = {}
    for r in runs:
        by_variant.setdefault(r.variant, {})[r.seed] = r
    if baseline not in by_variant and require_baseline:
        hint = difflib.get_close_matches(baseline, list(by_variant), n=1)
        raise ConfigError(f"--baseline {baseline!r}: no such variant among the runs" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (variants: {', '.join(sorted(by_variant))})")
    splits = {r.metrics.get("evaluated_on", "test") for r in runs}
    split = "test" if splits == {"test"} else "dev"
    notes = []
    if len(splits) > 1:
        notes.append(f"runs evaluated on different splits ({', '.join(sorted(splits))}); the dev numbers of "
                     f"test-evaluated runs are not in metrics.json's headline, so compare like with like")
    if split == "dev":
        notes.append("no test split: the numbers are on dev, which also chose each run's best checkpoint "
                     "(slightly optimistic for every variant alike)")
    higher = metric not in LOWER_IS_BETTER
    base = by_variant.get(baseline, {})
    cache: dict[Path, dict[str, np.ndarray]] = {}
    base_sps = [r.metrics["train_seconds"] / r.metrics["steps"] for r in base.values() if r.metrics.get("steps")]
    rows = []
    for name, seeded in by_variant.items():
        seeds = sorted(seeded)
        row = Row(name, seeds, {m: [float(seeded[s].metrics.get(m, math.nan)) for s in seeds] for m in cols})
        sps = [r.metrics["train_seconds"] / r.metrics["steps"] for r in seeded.values() if r.metrics.get("steps")]
        row.sec_per_step = float(np.mean(sps)) if sps else math.nan
        if base_sps:
            row.cost = row.sec_per_step / float(np.mean(base_sps))
        if name == baseline:
            row.verdict = "baseline"
            rows.append(row)
            continue
        common = [s for s in seeds if s in base]
        row.paired = len(common)
        if not common:
            row.verdict = "no paired baseline runs"
            rows.append(row)
            continue
        a = [float(base[s].metrics[metric]) for s in common]
        b = [float(seeded[s].metrics[metric]) for s in common]
        row.seed_deltas = [y - x for x, y in zip(a, b)]
        row.delta, lo, hi = t_interval(row.seed_deltas)
        row.ci = (lo, hi)
        row.t_p = paired_t_test(a, b)
        row.verdict = verdict(len(common), lo, hi, row.t_p, higher_is_better=higher)
        if task == "single_label":
            row.bootstrap, row.mcnemar, row.example_note = _example_tests(base, seeded, common, split, cache)
        if task != "regression":
            f1 = {c: np.mean([seeded[s].metrics.get("per_class", {}).get(c, {}).get("f1", math.nan) for s in common])
                  - np.mean([base[s].metrics.get("per_class", {}).get(c, {}).get("f1", math.nan) for s in common])
                  for c in base[common[0]].metrics.get("per_class", {})}
            moves = sorted(((c, float(v)) for c, v in f1.items() if np.isfinite(v) and v != 0), key=lambda x: -x[1])
            row.gained = [m for m in moves if m[1] > 0][:2]
            row.lost = [m for m in reversed(moves) if m[1] < 0][:2]
        rows.append(row)
    sign = -1 if higher else 1
    rows.sort(key=lambda r: (math.isnan(r.mean_std(metric)[0]), sign * np.nan_to_num(r.mean_std(metric)[0]), r.variant))
    counts = {len(r.seeds) for r in rows}
    if len(counts) > 1:
        notes.append("variants have different numbers of finished seeds: deltas use the seeds shared with the baseline")
    warn = chance_warning(task, [r.metrics for r in base.values()])
    return Leaderboard(task, metric, tuple(cols), baseline, split, rows, notes, [warn] if warn else [])


# ---------------------------------------------------------------- output


def _num(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(lb: Leaderboard) -> str:
    head = ["variant", "seeds", *lb.metrics, f"Δ {lb.metric} [95% CI]", "t-test p"]
    single = lb.task == "single_label"
    if single:
        head += ["bootstrap Δ acc [95% CI]", "McNemar p"]
    head += ["cost", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in lb.rows:
        cells = [f"**{r.variant}**" if r.variant == lb.baseline else r.variant, str(len(r.seeds))]
        for m in lb.metrics:
            mu, sd = r.mean_std(m)
            cells.append(f"{_num(mu)} ± {_num(sd)}" if not math.isnan(sd) else _num(mu))
        if r.variant == lb.baseline or not r.paired:
            cells += ["", ""] + (["", ""] if single else [])
        else:
            cells.append(f"{_num(r.delta, True)} [{_num(r.ci[0], True)}, {_num(r.ci[1], True)}]")
            cells.append(_p(r.t_p))
            if single:
                bs = r.bootstrap
                cells.append(f"{_num(bs.delta, True)} [{_num(bs.low, True)}, {_num(bs.high, True)}]" if bs else "n/a")
                cells.append(f"{_p(r.mcnemar.p)} ({r.mcnemar.c}↑ {r.mcnemar.b}↓)" if r.mcnemar else "n/a")
        cells.append(f"{r.cost:.2f}x" if not math.isnan(r.cost) else "n/a")
        cells.append(r.verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_moves(lb: Leaderboard) -> list[str]:
    out = []
    for r in lb.rows:
        if r.gained or r.lost:
            g = ", ".join(f"{c} {v:+.3f}" for c, v in r.gained) or "none"
            lo = ", ".join(f"{c} {v:+.3f}" for c, v in r.lost) or "none"
            out.append(f"- {r.variant}: gained {g}; lost {lo}")
    return out


def markdown(lb: Leaderboard) -> str:
    seeds = sorted({s for r in lb.rows for s in r.seeds})
    parts = ["# Leaderboard: which tricks help?", "",
             f"task {lb.task} | evaluated on {lb.split} | verdicts on {lb.metric} | baseline `{lb.baseline}` | "
             f"seeds {', '.join(map(str, seeds))} | {sum(len(r.seeds) for r in lb.rows)} runs", "",
             *[f"> **{w}**\n" for w in lb.warnings], markdown_table(lb), ""]
    moves = class_moves(lb)
    if moves:
        parts += [f"## Classes that moved most (per-class F1 vs `{lb.baseline}`, mean over paired seeds)", "", *moves, ""]
    notes = lb.notes + [f"{r.variant}: {r.example_note}" for r in lb.rows if r.example_note]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    parts += ["## How to read this", "",
              f"- **{lb.metric} ± std**: mean and standard deviation over seeds (one run per seed).",
              f"- **Δ [95% CI]**: the mean of the per-seed differences to `{lb.baseline}` (runs with the same seed "
              f"pair up) with its 95% t-interval; **t-test p**: paired t-test over seeds. These measure training "
              f"noise: would the gain come back with new seeds?",
              "- **bootstrap Δ acc** (10,000 paired resamples of the test examples, fixed seed) and **McNemar p** "
              "(exact binomial test on the examples one run got right and the other wrong; ↑ variant right, "
              "↓ baseline right), pooled over the paired seeds, measure test-set noise only: a small p there "
              "with a CI over seeds that includes 0 means the difference is real for those particular runs but "
              "not reliably reproducible.",
              f"- **verdict**: `helps` / `hurts` only when the seed-level 95% CI excludes 0 and p < 0.05; otherwise "
              f"`no detectable effect` (not proof of no effect: the CI shows how large an effect could hide). "
              f"With fewer than {MIN_SEEDS_FOR_VERDICT} paired seeds: `needs more seeds`.",
              "- **cost**: training seconds per optimizer step relative to the baseline (runs trained in parallel "
              "with --jobs share the machine, so treat it as rough).", ""]
    return "\n".join(parts)


CSV_FIELDS = ("variant", "n_seeds", "seeds", "paired_seeds", "delta", "ci_low", "ci_high", "t_test_p", "boot_delta",
              "boot_low", "boot_high", "boot_p", "mcnemar_variant_better", "mcnemar_baseline_better", "mcnemar_p",
              "sec_per_step", "cost_ratio", "verdict", "gained", "lost")


def write_csv(lb: Leaderboard, path: Path) -> None:
    def f(x: Any) -> Any:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x

    metric_fields = [f"{m}_{s}" for m in lb.metrics for s in ("mean", "std")]
    fields = [*CSV_FIELDS[:3], *metric_fields, *CSV_FIELDS[3:]]
    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in lb.rows:
            bs, mc = r.bootstrap, r.mcnemar
            rec: dict[str, Any] = {"variant": r.variant, "n_seeds": len(r.seeds), "seeds": " ".join(map(str, r.seeds)),
                                   "paired_seeds": r.paired, "delta": f(r.delta), "ci_low": f(r.ci[0]),
                                   "ci_high": f(r.ci[1]), "t_test_p": f(r.t_p),
                                   "boot_delta": f(bs.delta) if bs else "", "boot_low": f(bs.low) if bs else "",
                                   "boot_high": f(bs.high) if bs else "", "boot_p": f(bs.p) if bs else "",
                                   "mcnemar_variant_better": mc.c if mc else "", "mcnemar_baseline_better": mc.b if mc else "",
                                   "mcnemar_p": f(mc.p) if mc else "", "sec_per_step": f(r.sec_per_step),
                                   "cost_ratio": f(r.cost), "verdict": r.verdict,
                                   "gained": "; ".join(f"{c} {v:+.4f}" for c, v in r.gained),
                                   "lost": "; ".join(f"{c} {v:+.4f}" for c, v in r.lost)}
            for m in lb.metrics:
                mu, sd = r.mean_std(m)
                rec[f"{m}_mean"], rec[f"{m}_std"] = f(mu), f(sd)
            w.writerow(rec)


def plot_ablation(lb: Leaderboard, path: Path) -> bool:
    """Per variant: the mean per-seed delta vs the baseline with its 95% CI, and each seed as a dot. Variant names
    are drawn with a font that has them, else numbered with a legend table (evaluation/plots.py). False (nothing
    written) without matplotlib."""
    from ..evaluation.plots import available, axis_labels, layout, pyplot, save_png

    if not available():
        return False
    rows = [r for r in lb.rows if r.variant != lb.baseline and r.paired]
    names = [r.variant for r in reversed(rows)]
    with pyplot([*names, lb.baseline]) as (plt, fonts):
        ticks = axis_labels(names, fonts)
        fig, ax = plt.subplots(figsize=(7.5 * (1.35 if ticks != names else 1), max(2.2, 0.55 * len(rows) + 1.4)))
        colors = {"helps": "tab:green", "hurts": "tab:red"}
        for i, r in enumerate(reversed(rows)):
            c = colors.get(r.verdict, "tab:gray")
            jitter = np.linspace(-0.12, 0.12, len(r.seed_deltas)) if len(r.seed_deltas) > 1 else np.zeros(1)
            ax.scatter(r.seed_deltas, i + jitter, s=16, color=c, alpha=0.55, zorder=3)
            if not math.isnan(r.ci[0]):
                ax.errorbar(r.delta, i, xerr=[[r.delta - r.ci[0]], [r.ci[1] - r.delta]], fmt="o", color=c, capsize=4,
                            lw=2, zorder=4)
            else:
                ax.plot(r.delta, i, "o", color=c, zorder=4)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(range(len(rows)), ticks)
        ax.set_xlabel(f"Δ {lb.metric} vs {fonts.safe(lb.baseline)} (mean over seeds, 95% CI; dots: seeds)")
        ax.set_title(f"Ablation on {lb.split} ({lb.task})")
        if not rows:
            ax.text(0.5, 0.5, "no variant with paired baseline runs", ha="center", va="center", transform=ax.transAxes)
        ax.grid(axis="x", alpha=0.3)
        layout(fig, names, ticks, fonts)
        save_png(fig, path, names)
    return True


def write_report(runs: list[Run], out: str | Path, baseline: str = "baseline", metric: str | None = None,
                 printer: Callable[[str], None] | None = print, require_baseline: bool = True) -> Leaderboard:
    """Compute the leaderboard of `runs` (see discover_runs), write leaderboard.md/.csv and
    ablation.png to `out`, print the table. Returns the Leaderboard."""
    lb = build_leaderboard(runs, baseline, metric, require_baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "leaderboard.md", markdown(lb))
    write_csv(lb, out / "leaderboard.csv")
    plotted = plot_ablation(lb, out / "ablation.png")
    if printer is not None:
        moves = class_moves(lb)
        printer("".join(w + "\n" for w in lb.warnings) + markdown_table(lb) + ("\n" + "\n".join(moves) if moves else "")
                + f"\nleaderboard: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}"
                + (f", {out / 'ablation.png'}" if plotted else ""))
    return lb
