"""Mutation testing of tricklab's numerical core with mutmut 3 (`make mutate`; not run in CI).

    python benchmarks/mutate.py                      # every shard in TARGETS, fresh
    python benchmarks/mutate.py --only losses,stats  # some shards (names below)
    python benchmarks/mutate.py --only heads.py      # one file: its shard's tests, only that file mutated
    python benchmarks/mutate.py --resume             # keep mutmut's cache (continue an interrupted run)
    python benchmarks/mutate.py --report-only        # rebuild the tables and survivors.md from .mutmut/

TARGETS below is the one place that says what is mutated and which fast unit tests may kill it. Each
entry is one mutmut run ("shard") in .mutmut/<name>/: a generated pyproject.toml (this project's, plus a
[tool.mutmut] section naming the shard's files and tests) and links to src/ and tests/. mutmut copies
both into .mutmut/<name>/mutants/, rewrites each function of the shard's files into a trampoline plus
one copy per mutant, runs the selected tests once to learn which tests call which function, and then
runs, per mutant, only the tests that call its function (fastest first, stopping at the first failure)
in a process forked from the warm one. mutants/src goes first on sys.path, so the copy is imported, not
the editable install; mutmut's own "forced fail" check stops the run if the tests do not reach it.

mutmut 3 only mutates code inside functions and methods: module and class-level constants (registry
names, dataclass defaults) are never mutated, and neither is a function with a decorator other than
@staticmethod/@classmethod (@property, @torch.no_grad(), @contextlib.contextmanager): undecorated code
is what gets checked. Code that no test should pin (plot styling) can be left out in the source with
`# pragma: no mutate` (a line) or `# pragma: no mutate block` (on a def line: the whole function).

Printed: one row per file (mutants, killed, survived, no tests, timeout, score). Written to .mutmut/
(git-ignored): summary.md, summary.json and survivors.md (each surviving or untested mutant: file,
line, diff). Score = (killed + timeout) / mutants; "no tests" mutants (no selected test calls the
function) count as not killed, like survivors.
"""
from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".mutmut"

# (shard name, files to mutate: globs from the repo root, pytest arguments selecting the fast unit tests
# that cover them). Files move -> edit the globs; tests move -> edit the arguments. Slow tests (training
# runs in module fixtures) are left out with -k: a survivor re-runs every test that calls its function.
TARGETS: list[tuple[str, list[str], list[str]]] = [
    ("losses", ["src/tricklab/losses/*.py"], ["tests/test_losses.py", "tests/test_gather.py"]),
    ("tricks", ["src/tricklab/tricks/*.py"],
     ["tests/test_tricks.py", "tests/test_trick_reference.py", "tests/test_lora.py",
      "-k", "not end_to_end and not composes and not command_line and not push_refuses"]),
    ("model", ["src/tricklab/model/pooling.py", "src/tricklab/model/heads.py"],
     ["tests/test_model.py", "tests/test_padding.py"]),
    ("batching", ["src/tricklab/data/batching.py"],
     ["tests/test_batching.py", "tests/test_long_text.py", "tests/test_padding.py", "tests/test_train.py::test_lowercase_auto_detection",
      "-k", "not (each_policy or serve or onnx or xlnet)"]),
    ("stats", ["src/tricklab/ablation/stats.py"],
     ["tests/test_stats.py", "tests/test_compare.py", "-k", "test_stats or t_interval or paired or mcnemar or verdict or report_"]),
    ("calibration", ["src/tricklab/evaluation/calibration.py"],
     ["tests/test_calibration.py", "-k", "ece or temperature_fit or reliability or calibration_metrics or scaled_probs"]),
    ("thresholds", ["src/tricklab/evaluation/thresholds.py"],
     ["tests/test_thresholds_ref.py", "tests/test_thresholds.py", "-k", "thresholds_ref or tuner or tuned_thresholds_beat or select_labels"]),
]

MUTMUT_SETTINGS = {  # shared by every shard; see the [tool.mutmut] options in mutmut's README
    "source_paths": ["src"],
    "use_git_change_detection": False,   # mutmut would otherwise run `git diff` in the shared tree
    "timeout_multiplier": 15.0,
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}
COLUMNS = ("mutants", "killed", "survived", "no tests", "timeout", "other")


def files_of(globs: list[str]) -> list[str]:
    return sorted({str(Path(p)) for g in globs for p in glob.glob(g, root_dir=ROOT) if p.endswith(".py")})


def check_targets() -> None:
    """Every glob matches a file and every test path exists: a moved file must not drop out silently."""
    missing = [g for _, globs, _ in TARGETS for g in globs if not files_of([g])]
    skip = {i + 1 for _, _, tests in TARGETS for i, a in enumerate(tests) if a == "-k"}
    missing += [a for _, _, tests in TARGETS for i, a in enumerate(tests)
                if not a.startswith("-") and not (ROOT / a.split("::")[0]).is_file() and i not in skip]
    if missing:
        sys.exit(f"benchmarks/mutate.py TARGETS: nothing at {', '.join(missing)} (moved? update TARGETS)")


def toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"


def prepare(shard: Path, files: list[str], tests: list[str], resume: bool) -> None:
    """.mutmut/<shard>/: links to src/ and tests/, and pyproject.toml with this shard's [tool.mutmut]."""
    if shard.exists() and not resume:
        shutil.rmtree(shard)
    shard.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        if not (shard / name).exists():
            (shard / name).symlink_to(os.path.relpath(ROOT / name, shard))
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in project:
        sys.exit("pyproject.toml has its own [tool.mutmut]: the shards are configured in benchmarks/mutate.py")
    conf = {**MUTMUT_SETTINGS, "only_mutate": files, "pytest_add_cli_args_test_selection": tests}
    lines = [f"{k} = {toml_list(v) if isinstance(v, list) else json.dumps(v)}" for k, v in conf.items()]
    (shard / "pyproject.toml").write_text(project + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n", encoding="utf-8")


def run_mutmut(shard: Path, max_children: int) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}   # one thread per forked worker
    mutmut = Path(sys.executable).parent / "mutmut"
    with open(shard / "mutmut.log", "w", encoding="utf-8") as log:
        return subprocess.call([str(mutmut), "run", "--max-children", str(max_children)], cwd=shard, env=env,
                               stdout=log, stderr=subprocess.STDOUT)


def results(shard: Path, path: str) -> dict[str, int | None]:
    meta = shard / "mutants" / (path + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def count(codes: dict[str, int | None]) -> Counter:
    c = Counter(STATUS.get(v, "other") for v in codes.values())
    c["mutants"] = len(codes)
    c["other"] = sum(n for k, n in c.items() if k not in COLUMNS)
    return c


def score(c: Counter) -> str:
    return f"{100 * (c['killed'] + c['timeout']) / c['mutants']:.1f}%" if c["mutants"] else "-"


def function_of(key: str) -> tuple[str | None, str]:
    """'tricklab.losses.focal.xǁFocalLossǁforward__mutmut_3' -> ('FocalLoss', 'forward')."""
    name = key.rpartition(".")[2].partition("__mutmut_")[0]
    if name.startswith("xǁ"):
        cls, _, func = name[2:].partition("ǁ")
        return cls, func
    return None, name[2:]


def line_of(source: list[str], key: str, diff: str) -> int | None:
    """Line in the original file of the first line the mutant changes."""
    cls, func = function_of(key)
    body = ast.parse("".join(source)).body
    if cls is not None:
        body = next((n.body for n in body if isinstance(n, ast.ClassDef) and n.name == cls), [])
    node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func), None)
    if node is None:
        return None
    removed, guess = None, node.lineno
    for ln in diff.splitlines():   # the hunk's first line, plus its context lines, is the first changed line
        if ln.startswith("@@"):
            guess = node.lineno + int(re.match(r"@@ -(\d+)", ln).group(1)) - 1
        elif ln.startswith(" "):
            guess += 1
        elif ln.startswith("-") and not ln.startswith("---"):
            removed = ln[1:].strip()
            break
    if removed is None:
        return node.lineno
    hits = [i + 1 for i in range(node.lineno - 1, node.end_lineno) if source[i].strip() == removed]
    return min(hits, key=lambda i: abs(i - guess)) if hits else node.lineno


def diff_of(shard: Path, key: str, path: str) -> str:
    here = os.getcwd()
    try:
        os.chdir(shard)   # mutmut reads mutants/... relative to the working directory
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        return get_diff_for_mutant(key, path=path)
    except (ImportError, OSError):   # another mutmut version: its CLI prints the same diff
        out = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "show", key], check=False,
                             capture_output=True, text=True)
        return "\n".join(out.stdout.splitlines()[1:])
    finally:
        os.chdir(here)


def survivors(shard: Path, path: str, codes: dict[str, int | None]) -> list[str]:
    source = (ROOT / path).read_text(encoding="utf-8").splitlines(keepends=True)
    out = []
    for key, code in codes.items():
        status = STATUS.get(code, "other")
        if status in ("killed", "timeout", "skipped"):
            continue
        diff = diff_of(shard, key, path)
        cls, func = function_of(key)
        line = line_of(source, key, diff) or 0
        body = "\n".join(ln for ln in diff.splitlines() if not ln.startswith(("---", "+++")))
        title = f"### {path}:{line} `{(cls + '.' if cls else '') + func}` {status}"
        out.append((line, key, f"{title}\n`{key}`\n```diff\n{body}\n```\n"))
    return [text for _, _, text in sorted(out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated shard names or file paths (substrings)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    ap.add_argument("--resume", action="store_true", help="keep .mutmut/<shard>/mutants from the last run")
    ap.add_argument("--report-only", action="store_true", help="no mutmut run: rebuild the reports from .mutmut/")
    args = ap.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    check_targets()

    OUT.mkdir(exist_ok=True)
    rows: list[tuple[str, str, Counter]] = []
    report: list[str] = []
    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    for name, globs, tests in TARGETS:
        files = files_of(globs)
        if wanted and name not in wanted:
            files = [f for f in files if any(w in f for w in wanted)]
        shard = OUT / name
        if files and not args.report_only:
            prepare(shard, files, tests, args.resume)
            t0 = time.perf_counter()
            print(f"[{name}] {len(files)} files, tests: {' '.join(tests)}", flush=True)
            rc = run_mutmut(shard, args.max_children)
            timing[name] = time.perf_counter() - t0
            print(f"[{name}] mutmut exit {rc} in {timing[name] / 60:.1f} min (log: {shard / 'mutmut.log'})", flush=True)
            if rc != 0:
                report.append(f"### shard {name}: mutmut failed (exit {rc}), see {shard / 'mutmut.log'}\n")
        # the tables cover every shard with results: those not run now keep their last run's (marked *)
        label = name if name in timing or args.report_only else name + "*"
        for path in files_of(globs):
            codes = results(shard, path)
            if codes or path in files:
                rows.append((label, path, count(codes)))
                report += survivors(shard, path, codes)

    total = sum((c for _, _, c in rows), Counter())
    head = "| shard | file | " + " | ".join(COLUMNS) + " | score |"
    table = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, path, c in rows + [("", "**total**", total)]:
        table.append(f"| {name} | {path} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {score(c)} |")
    minutes = (time.perf_counter() - t_all) / 60
    summary = "\n".join(table) + f"\n\nwall time {minutes:.1f} min; per shard (min): " + \
        ", ".join(f"{k} {v / 60:.1f}" for k, v in timing.items()) + "\n"
    if any(label.endswith("*") for label, _, _ in rows):
        summary += "*: not run this time; results of its last run in .mutmut/<shard>/\n"
    print("\n" + summary)
    (OUT / "summary.md").write_text(summary, encoding="utf-8")
    (OUT / "summary.json").write_text(json.dumps({
        "files": {p: {**{k: c[k] for k in COLUMNS}, "score": score(c)} for _, p, c in rows},
        "total": {**{k: total[k] for k in COLUMNS}, "score": score(total)},
        "wall_minutes": round(minutes, 1), "shard_minutes": {k: round(v / 60, 1) for k, v in timing.items()},
    }, indent=2), encoding="utf-8")
    (OUT / "survivors.md").write_text("# Surviving and untested mutants\n\n" + "\n".join(report), encoding="utf-8")
    print(f"survivors: {OUT / 'survivors.md'} ({len(report)} entries)")


if __name__ == "__main__":
    main()
