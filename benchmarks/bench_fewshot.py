"""Few-shot grid: fine-tuning vs SetFit at K labelled examples per class, over seeds, on one or more data sets.

    .venv/bin/python benchmarks/bench_fewshot.py --data thucnews=../shared/data/thucnews \
        --data chnsenticorp=../shared/data/chnsenticorp/train.tsv:../shared/data/chnsenticorp/dev.tsv \
        [--k 8,16,32,64] [--seeds 5] [--jobs 2] [--set model.pooling=mean ...] [--variants-file F] [--out runs/fewshot]

Each (data set, K) cell is one `tricklab compare` grid (tricklab.ablation.compare) of the variants in
configs/variants_fewshot.yaml (`finetune`, `setfit`; each seed draws its own K-per-class subset, shared by the two
variants), so a killed grid resumes where it stopped and every run is an ordinary run folder. `NAME=TRAIN[:TEST]`:
a folder (its train/dev/test files) or a train file with an optional test file. At the end it prints one Markdown
table per data set: K, each variant's test accuracy and macro-F1 (mean ± std over seeds), setfit - finetune with
its 95% t-interval over seeds and the paired t-test p, and the K where the leader changes (where the curves cross);
and fewshot.png: test accuracy against K (log scale), one panel per data set, each variant's mean over seeds with
its 95% t-interval and each seed as a dot. Both strategies are judged on the same test set; the dev set only picks each run's checkpoint.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "configs" / "variants_fewshot.yaml"


def parse_data(specs: list[str]) -> list[tuple[str, str, str | None]]:
    out = []
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            raise SystemExit(f"--data {spec!r}: expected NAME=TRAIN[:TEST]")
        train, _, test = paths.partition(":")
        out.append((name, train, test or None))
    return out


def cell(mean_std: tuple[float, float]) -> str:
    m, s = mean_std
    return "n/a" if math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def table(name: str, boards: dict[int, object], baseline: str, other: str) -> str:
    """One data set's rows (K ascending) and where the better variant changes."""
    lines = [f"### {name}", "", f"| K | {baseline} accuracy | {other} accuracy | {baseline} macro-F1 | {other} macro-F1 "
             f"| {other} - {baseline} [95% CI over seeds] | paired t p | seeds |", "|---|---|---|---|---|---|---|---|"]
    leaders = []
    for k in sorted(boards):
        rows = {r.variant: r for r in boards[k].rows}
        b, o = rows.get(baseline), rows.get(other)
        if b is None or o is None:
            lines.append(f"| {k} | (missing runs) | | | | | | |")
            continue
        delta = "n/a" if math.isnan(o.delta) else f"{o.delta:+.4f} [{o.ci[0]:+.4f}, {o.ci[1]:+.4f}]"
        p = "n/a" if math.isnan(o.t_p) else ("<0.001" if o.t_p < 0.001 else f"{o.t_p:.3f}")
        lines.append(f"| {k} | {cell(b.mean_std('accuracy'))} | {cell(o.mean_std('accuracy'))} | "
                     f"{cell(b.mean_std('macro_f1'))} | {cell(o.mean_std('macro_f1'))} | {delta} | {p} | {o.paired} |")
        if not math.isnan(o.delta):
            leaders.append((k, other if o.delta > 0 else baseline))
    crossings = [f"between K={a[0]} and K={b[0]} ({a[1]} -> {b[1]})" for a, b in zip(leaders, leaders[1:])
                 if a[1] != b[1]]
    lines += ["", "Curves cross " + "; ".join(crossings) + "." if crossings else
              "No crossing in this range of K" + (f": {leaders[0][1]} leads at every K." if leaders else ".")]
    return "\n".join(lines)


def curves_png(boards_by_data: dict[str, dict[int, object]], baseline: str, other: str, path: Path) -> bool:
    """fewshot.png: per data set, test accuracy vs K for both variants (mean over seeds, 95% t-interval of the mean,
    seeds as dots). False (nothing written) without matplotlib."""
    from tricklab.ablation.stats import t_interval
    from tricklab.evaluation.plots import available, pyplot, save_png

    if not available() or not boards_by_data:
        return False
    names = list(boards_by_data)
    with pyplot([*names, baseline, other]) as (plt, fonts):
        fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
        for ax, name in zip(axes[0], names):
            boards = boards_by_data[name]
            for variant, color, shift in ((baseline, "tab:blue", 0.97), (other, "tab:orange", 1.03)):
                ks, means, lo, hi = [], [], [], []
                for k in sorted(boards):
                    row = next((r for r in boards[k].rows if r.variant == variant), None)
                    accs = row.values.get("accuracy", []) if row else []
                    if not accs:
                        continue
                    m, a, b = t_interval(accs)
                    ks.append(k)
                    means.append(m)
                    lo.append(m - a if not math.isnan(a) else 0.0)
                    hi.append(b - m if not math.isnan(b) else 0.0)
                    ax.scatter([k * shift] * len(accs), accs, s=12, color=color, alpha=0.4, zorder=3)
                if ks:
                    ax.errorbar([k * shift for k in ks], means, yerr=[lo, hi], fmt="o-", color=color, capsize=4,
                                label=fonts.safe(variant), zorder=4)
            ax.set_xscale("log", base=2)
            ks_all = sorted(boards)
            ax.set_xticks(ks_all, [str(k) for k in ks_all])
            ax.set_xlabel("K labelled examples per class")
            ax.set_ylabel("test accuracy")
            ax.set_title(fonts.safe(name))
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        fig.suptitle("mean over seeds, 95% t-interval; dots: seeds", fontsize=9)
        fig.tight_layout()
        save_png(fig, path, [*names, baseline, other])
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="NAME=TRAIN[:TEST] (repeatable)")
    ap.add_argument("--k", default="8,16,32,64", help="examples per class, comma-separated")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="config override for every run (KEY=VALUE)")
    ap.add_argument("--variants", default="finetune,setfit", help="baseline first, then the other")
    ap.add_argument("--variants-file", default=str(VARIANTS),
                    help="their definitions (default configs/variants_fewshot.yaml; configs/variants_fewshot_steps.yaml "
                         "gives fine-tuning a step budget, for data sets with few classes)")
    ap.add_argument("--out", default="runs/fewshot")
    a = ap.parse_args()

    from tricklab.ablation.compare import compare
    from tricklab.config import load_config

    baseline, other = a.variants.split(",")
    ks = [int(k) for k in a.k.split(",")]
    reports, all_boards = [], {}
    for name, train, test in parse_data(a.data):
        boards = all_boards[name] = {}
        for k in ks:
            cfg = load_config(None, [*a.set, f"data.max_train_per_class={k}"])
            res = compare(cfg, train, test=test, variants=[baseline, other], variants_file=Path(a.variants_file), seeds=a.seeds,
                          out=Path(a.out) / name / f"k{k}", jobs=a.jobs, baseline=baseline, progress=print)
            if res.leaderboard is not None:
                boards[k] = res.leaderboard
        reports.append(table(name, boards, baseline, other))
    print("\n\n".join(reports))
    (Path(a.out) / "fewshot.md").write_text("\n\n".join(reports) + "\n", encoding="utf-8")
    if curves_png({n: b for n, b in all_boards.items() if b}, baseline, other, Path(a.out) / "fewshot.png"):
        print(f"plot: {Path(a.out) / 'fewshot.png'}")


if __name__ == "__main__":
    main()
