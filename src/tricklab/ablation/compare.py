"""`tricklab compare`: train a grid of variants x seeds as ordinary run folders, then the leaderboard.

A *variant* is a named partial config, deep-merged onto the base config (YAML + --set + --model,
--loss, --aux, --trick): a built-in preset (`PRESETS`), an entry of a variants file (YAML: name ->
partial config, see configs/variants.yaml), or presets combined with `+` (`fgm+ema`). Merging:
sections merge key by key; `tricks` and `aux_losses` are lists of named items combined by name (a
new name is appended, a name already there has its parameters updated); `loss` merges when the
name is the same and is replaced otherwise (combining two presets that set different main losses
is an error: a run has one main loss). The compare-only settings (variants, seeds, jobs) never enter
`Config`: every run's config is an ordinary `Config`, built and validated (keys, loss and trick
names and parameters, loss vs task, the data files) for every variant before anything trains.

Layout of OUT (what `tricklab report --runs OUT` reads back):

    OUT/compare.json                the grid: variants (name -> partial config), seeds, baseline, data
    OUT/leaderboard.md|.csv, ablation.png
    OUT/<variant>/seed<k>/          an ordinary run folder, trained with train.seed = k:
        variant.yaml                the full config the grid asked for (a re-run checks it)
        train.log                   the run's console output (its tail is shown when a run fails)
        config.yaml, metrics.json, predictions.npz, log.jsonl, model/, checkpoints/

Re-running the same command continues a grid: runs with a readable metrics.json are skipped, runs
with a checkpoint are resumed (`train --resume`; a metrics.json torn by a kill counts as unfinished),
other run folders are restarted from scratch. A run folder another process is writing (its lock,
runfiles.RunLock) is refused with that process's pid; `--jobs` subprocesses end with their parent.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import queue
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import Config, from_dict, read_yaml_mapping
from ..errors import ConfigError, TrickLabError
from ..runfiles import LOCK_FILE, RunLock, child_env, holder, write_json, writable
from .progress import Progress

# name -> partial config. Parameter names are those of losses/ and tricks/ (checked by test_compare).
PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {},                                                               # the base config as is
    "rdrop": {"tricks": [{"name": "rdrop", "alpha": 4}]},                         # R-Drop, symmetric KL x4
    "supcon": {"aux_losses": [{"name": "supcon", "weight": 0.2}]},                # + 0.2 x supervised contrastive
    "fgm": {"tricks": [{"name": "fgm", "epsilon": 1.0}]},                         # adversarial embeddings, 1 step
    "pgd": {"tricks": [{"name": "pgd", "epsilon": 1.0, "alpha": 0.3, "steps": 3}]},  # adversarial, 3 steps
    "ema": {"tricks": [{"name": "ema", "decay": 0.999}]},                         # evaluate EMA weights
    "llrd": {"tricks": [{"name": "llrd", "decay": 0.9}]},                         # layer-wise LR decay
    "focal": {"loss": {"name": "focal", "gamma": 2}},                             # focal loss instead of CE/BCE
    "dice": {"loss": {"name": "dice"}},                                           # soft Dice loss
    "ls": {"loss": {"name": "ce", "label_smoothing": 0.1}},                       # label smoothing 0.1
    "balanced": {"loss": {"name": "ce", "class_weights": "balanced"}},            # inverse-frequency class weights
    "balanced_sampler": {"data": {"sampler": "balanced"}},                        # class-balanced batches (resampled)
    "mse": {"loss": {"name": "mse"}},                                             # regression: plain MSE
    "mse_corr": {"loss": {"name": "mse_corr", "corr_weight": 1.0}},               # regression: MSE + (1 - Pearson)
    "finetune": {"train": {"strategy": "finetune"}},                              # fine-tune encoder + head on the loss
    "setfit": {"train": {"strategy": "setfit"}},                                  # few-shot: contrastive pairs, then a
                                                                                  # logistic-regression head (SetFit)
}

NAMED_LISTS = ("tricks", "aux_losses")


def presets_help() -> str:
    """The preset catalogue as text (for `tricklab compare --help`)."""
    lines = ["presets (combine with +, e.g. fgm+ema; define your own with --variants-file):"]
    for name, partial in PRESETS.items():
        shown = json.dumps(partial, ensure_ascii=False).replace('"', "")
        lines.append(f"  {name:<10} {shown if partial else '(the base config)'}")
    return "\n".join(lines)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class Variant:
    name: str
    partial: dict[str, Any]


@dataclass
class RunSpec:
    variant: str
    seed: int
    folder: Path
    config: Config

    @property
    def label(self) -> str:
        return f"{self.variant} seed{self.seed}"


@dataclass
class RunResult:
    spec: RunSpec
    status: str              # done before | trained | resumed | restarted | failed
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""


@dataclass
class CompareResult:
    out: Path
    results: list[RunResult]
    leaderboard: Any = None  # leaderboard.Leaderboard, or None when no run finished

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status == "failed"]


# ---------------------------------------------------------------- variants


def merge(base: dict[str, Any], over: dict[str, Any], combining: str | None = None, _path: str = "") -> dict[str, Any]:
    """Deep-merge partial config `over` onto `base` (neither is modified). `combining`: the name of a
    `a+b` variant being built, which makes two different main losses an error instead of a replacement."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{_path}.{key}" if _path else str(key)
        cur = out.get(key)
        if not _path and key in NAMED_LISTS:
            out[key] = _merge_named(cur or [], value, path)
        elif not _path and key == "loss":
            out[key] = _merge_loss(cur, value, combining)
        elif isinstance(cur, dict) and isinstance(value, dict):
            out[key] = merge(cur, value, combining, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_named(cur: list[Any], new: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(new, list):
        new = [new]
    out = [dict(x) if isinstance(x, dict) else x for x in cur]
    for i, item in enumerate(new):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{path}[{i}]: expected a mapping with a 'name', e.g. {{name: rdrop, alpha: 4}}, got {item!r}")
        hit = next((x for x in out if isinstance(x, dict) and x.get("name") == item["name"]), None)
        if hit is None:
            out.append(copy.deepcopy(item))
        else:
            hit.update(copy.deepcopy(item))
    return out


def _merge_loss(cur: Any, new: Any, combining: str | None) -> Any:
    cur = {"name": cur} if isinstance(cur, str) else cur
    new = {"name": new} if isinstance(new, str) else new
    if isinstance(cur, dict) and isinstance(new, dict) and cur.get("name") == new.get("name"):
        return {**cur, **copy.deepcopy(new)}
    if combining and cur is not None and new is not None:
        raise ConfigError(f"variant {combining!r}: its parts set two different main losses "
                          f"({cur.get('name')!r} and {new.get('name')!r}); a run has one main loss. Fix: drop one "
                          f"part, or define the combination you mean in --variants-file")
    return copy.deepcopy(new)


def load_variants_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """YAML mapping name -> partial config (e.g. `short: {data: {max_length: 64}}`)."""
    p = Path(path)
    data = read_yaml_mapping(p, "--variants-file", "give a YAML file of name -> partial config (see "
                             "configs/variants.yaml)", "variant name -> partial config")
    out: dict[str, dict[str, Any]] = {}
    for name, partial in data.items():
        name = str(name)
        if not _NAME_RE.fullmatch(name) or "+" in name:
            raise ConfigError(f"--variants-file {p}: variant name {name!r} must be letters, digits, '_', '-', '.' "
                              f"(it names a folder; '+' combines variants)")
        if partial is None:
            partial = {}
        if not isinstance(partial, dict):
            raise ConfigError(f"--variants-file {p}: variant {name!r}: expected a partial config mapping such as "
                              f"{{tricks: [{{name: rdrop, alpha: 4}}]}}, got {partial!r}")
        out[name] = partial
    return out


def parse_variants(spec: str | list[str] | None, defined: dict[str, dict[str, Any]] | None = None,
                   baseline: str = "baseline") -> list[Variant]:
    """`baseline,rdrop,fgm+ema` -> variants; names from `defined` (a variants file) win over presets.
    Without a spec: the baseline and every defined variant. The baseline is added first when missing."""
    defined = defined or {}
    if not spec and not defined:
        raise ConfigError(f"--variants: none given; fix: e.g. --variants {baseline},rdrop,fgm+ema (presets: "
                          f"{', '.join(PRESETS)}), or --variants-file FILE")
    names = ([s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)) if spec else list(defined)
    names = [n for n in names if n]
    if baseline not in names:
        names.insert(0, baseline)
    seen: set[str] = set()
    out: list[Variant] = []
    known = {**PRESETS, **defined}
    for name in names:
        if name in seen:
            raise ConfigError(f"--variants: {name!r} is listed twice")
        seen.add(name)
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"--variants: {name!r} is not a valid variant name (letters, digits, '_', '-', '.', "
                              f"'+' to combine)")
        parts = [name] if name in known else name.split("+")
        partial: dict[str, Any] = {}
        for part in parts:
            if part not in known:
                hint = difflib.get_close_matches(part, list(known), n=1)
                raise ConfigError(f"--variants: unknown variant {part!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                                  + f" (presets: {', '.join(PRESETS)}"
                                  + (f"; from --variants-file: {', '.join(defined)}" if defined else "")
                                  + "; combine with +, e.g. fgm+ema)")
            partial = merge(partial, known[part], combining=name if len(parts) > 1 else None)
        out.append(Variant(name, partial))
    return out


def variant_config(base: dict[str, Any], variant: Variant, seed: int, grid: str = "") -> Config:
    """The full Config of one run: base + variant partial, train.seed = seed, validated. Its tracker run
    (tracking.report_to) is named <variant>/seed<k> in the group `grid` unless the config names them."""
    try:
        d = merge(base, variant.partial)
        d.setdefault("train", {})["seed"] = seed
        tracking = d.setdefault("tracking", {})
        tracking["group"] = tracking.get("group") or grid
        tracking["run_name"] = tracking.get("run_name") or f"{variant.name}/seed{seed}"
        return from_dict(Config, d)
    except ConfigError as e:
        raise ConfigError(f"variant {variant.name!r}: {e}") from None


def parse_seeds(seeds: int | str | list[int]) -> list[int]:
    """5 -> [1, 2, 3, 4, 5]; "3,7,11" -> [3, 7, 11]."""
    if isinstance(seeds, list):
        vals = seeds
    else:
        s = str(seeds).strip()
        try:
            vals = [int(x) for x in s.split(",") if x.strip()] if "," in s else list(range(1, int(s) + 1))
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected a count (5 -> seeds 1..5) or a comma list (3,7,11)") from None
    if not vals or len(set(vals)) != len(vals) or any(v < 0 for v in vals):
        raise ConfigError(f"--seeds {seeds!r}: expected at least one seed, all different and >= 0")
    return list(vals)


# ---------------------------------------------------------------- the grid


def plan_grid(base: Config, variants: list[Variant], seeds: list[int], out: Path) -> tuple[list[RunSpec], list[str]]:
    """Every run's config, seed-major (seed 1 of every variant first: a stopped grid still pairs up),
    and the config problems of the variants that could not be built."""
    base_d = base.to_dict()
    problems, runs = [], []
    for v in variants:
        for seed in seeds:
            try:
                runs.append(RunSpec(v.name, seed, out / v.name / f"seed{seed}",
                                    variant_config(base_d, v, seed, out.resolve().name)))
            except ConfigError as e:
                problems.append(str(e))
                break
    order = [v.name for v in variants]
    return sorted(runs, key=lambda r: (seeds.index(r.seed), order.index(r.variant))), problems


def validate_grid(runs: list[RunSpec], data: str | Path, dev: str | Path | None, test: str | Path | None,
                  problems: list[str] | None = None, describe: Callable[[RunSpec], str] | None = None,
                  say: Callable[[str], None] | None = None) -> str:
    """Load the data (once per distinct data config) and build every run's losses and tricks without
    a model; raise one ConfigError with every problem (and `problems` found before) before anything
    trains, each line starting with describe(run) (default: variant 'name'). `say` gets the data's notes once
    (how it was read, labels, warnings), which the runs otherwise print to their train.log only. Returns the task."""
    from ..data import load_data
    from ..data.balance import check_sampler
    from ..registry import TRICKS, load_plugins
    from ..training import build_losses
    from ..training.optim import lr_factor
    from ..training.setup import check_max_length_early
    from ..training.tracking import check_trackers

    problems = list(problems or [])
    tasks: dict[str, str] = {}
    done: set[str] = set()
    shown: set[str] = set()
    limits: dict[str, int | None] = {}          # each model's position limit, read once per grid
    for r in runs:
        data_cfg = {k: v for k, v in r.config.data.__dict__.items() if k != "sampler"}  # reading is the same
        key = json.dumps([r.config.task, data_cfg], sort_keys=True, default=str)
        if key not in tasks:
            bundle = load_data(copy.deepcopy(r.config), data, dev, test)       # DataError: the files' problems
            tasks[key] = bundle.task
            for n in bundle.notes if say else ():
                if n not in shown:
                    shown.add(n)
                    say(f"note: {n}")
        if r.variant in done:
            continue
        done.add(r.variant)
        try:
            check_sampler(r.config.data.sampler, tasks[key])
            load_plugins(r.config.plugins)
            check_trackers(r.config.tracking)
            lr_factor(r.config.train, 100)
            build_losses(r.config, tasks[key])
            for t in r.config.tricks:
                TRICKS.build(t["name"], **{k: v for k, v in t.items() if k != "name"})
            check_max_length_early(r.config, limits=limits)
        except ConfigError as e:
            problems.append(f"{describe(r) if describe else f'variant {r.variant!r}'}: {e}")
    if problems:
        raise ConfigError("\n".join(problems))
    found = sorted(set(tasks.values()))
    if len(found) > 1:
        raise ConfigError(f"variants disagree on the task ({', '.join(found)}); a leaderboard compares one task")
    return found[0]


def run_state(folder: Path) -> str:
    """done (metrics.json) | resume (a complete checkpoint) | restart (a folder with neither: killed
    before its first checkpoint, or failed) | new (no folder)."""
    from ..training.checkpoint import latest_checkpoint

    if (folder / "metrics.json").is_file() and finished(folder):
        return "done"
    if latest_checkpoint(folder / "checkpoints") is not None and (folder / "config.yaml").is_file():
        return "resume"
    return "restart" if folder.exists() else "new"


def finished(folder: Path) -> bool:
    """metrics.json reads as a JSON object (one torn by a kill, or edited into garbage, is an unfinished run)."""
    try:
        return isinstance(json.loads((folder / "metrics.json").read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def check_free(folders: list[Path]) -> None:
    """Refuse run folders that another process is writing (their lock is held), naming each and its pid."""
    busy = [f"{f}: in use by another tricklab process (pid {pid})" for f in folders
            if f.is_dir() and (pid := holder(f)) is not None]
    if busy:
        raise TrickLabError("; ".join(busy) + ". Fix: wait for it to end or stop it (kill PID), then run this again; "
                            "two writers of one run folder would corrupt it")


def clear_folder(folder: Path) -> None:
    """Empty a run folder to restart it, keeping its lock file (held by this process)."""
    from ..training.checkpoint import remove

    for p in folder.iterdir():
        if p.name != LOCK_FILE:
            remove(p)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def check_reuse(runs: list[RunSpec], states: dict[Path, str]) -> None:
    """A run kept from an earlier invocation must have been asked for with the same config."""
    problems = []
    for r in runs:
        saved = r.folder / "variant.yaml"
        if states[r.folder] in ("new", "restart") or not saved.is_file():
            continue
        raw = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        try:  # keys added to Config since that run was asked for take their defaults
            raw = yaml.safe_load(yaml.safe_dump(from_dict(Config, raw).to_dict()))
        except ConfigError:
            pass
        old = _flat(raw)
        new = _flat(yaml.safe_load(yaml.safe_dump(r.config.to_dict())))
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and not k.startswith("tracking.")]   # where it reports, not what it trains
        if diff:
            problems.append(f"{r.folder}: kept from an earlier run with another config ({'; '.join(diff[:4])}"
                            + (f"; {len(diff) - 4} more" if len(diff) > 4 else "") + ")")
    if problems:
        raise ConfigError("\n".join(problems) + "\nfix: use another --out for the new settings, or delete those folders")


def _tail(path: Path, n: int = 15) -> str:
    if not path.is_file():
        return "(no train.log)"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _execute(r: RunSpec, state: str, data: str | Path, dev: str | Path | None, test: str | Path | None,
             subprocess_env: dict[str, str] | None, ready: Callable[[RunSpec, bool], None] | None = None) -> RunResult:
    """Train (or resume) one run; in this process when subprocess_env is None, else as `python -m tricklab.cli`.
    `ready(spec, resumed)` is called once the run folder is prepared (progress.Progress.start)."""
    t0 = time.perf_counter()
    resume = state == "resume"
    with RunLock(r.folder):   # prepared under the run's lock; the training (here or a subprocess) takes it again
        if not resume:
            clear_folder(r.folder)
            r.config.save(r.folder / "variant.yaml")
        log_path = writable(r.folder / "train.log", r.folder)
    if ready is not None:
        ready(r, resume)
    ok = False
    with open(log_path, "a", encoding="utf-8") as log:
        if subprocess_env is None:
            from ..training.loop import train

            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    train(copy.deepcopy(r.config), data, dev, test, r.folder, resume=resume, progress=False)
                ok = True
            except Exception as e:  # one failed run must not stop the grid
                if isinstance(e, TrickLabError):
                    log.write(f"error: {e}\n")
                else:
                    traceback.print_exc(file=log)
        else:
            cmd = [sys.executable, "-m", "tricklab.cli", "train", "--data", str(data), "--out", str(r.folder), "--quiet"]
            cmd += ["--dev", str(dev)] if dev else []
            cmd += ["--test", str(test)] if test else []
            cmd += ["--resume"] if resume else ["--config", str(r.folder / "variant.yaml")]
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            # child_env: the subprocess ends when this process does (kill -9 included; runfiles.watch_parent)
            ok = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(subprocess_env)).returncode == 0
    seconds = time.perf_counter() - t0
    if ok and not finished(r.folder):
        ok = False
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("error: the run ended without writing metrics.json\n")
    if not ok:
        return RunResult(r, "failed", seconds, log_tail=_tail(log_path))
    metrics = json.loads((r.folder / "metrics.json").read_text(encoding="utf-8"))
    return RunResult(r, {"resume": "resumed", "restart": "restarted"}.get(state, "trained"), seconds, metrics)


def _gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x for x in env.split(",") if x.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _execute_parallel(todo: list[RunSpec], states: dict[Path, str], data: str | Path, dev: str | Path | None,
                      test: str | Path | None, jobs: int, report: Callable[[RunResult], None],
                      ready: Callable[[RunSpec, bool], None] | None = None) -> None:
    """Train `todo` as `jobs` subprocesses at a time, round-robin over the visible GPUs; report each as it ends."""
    env = dict(os.environ)
    gpus = _gpu_ids()
    if "OMP_NUM_THREADS" not in env:  # J processes share the cores (also beside a GPU: tokenizing, collating)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    slots: queue.Queue[int] = queue.Queue()
    for i in range(jobs):
        slots.put(i)

    def work(r: RunSpec) -> RunResult:
        slot = slots.get()
        try:
            e = dict(env)
            if gpus:
                e["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            return _execute(r, states[r.folder], data, dev, test, e, ready)
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for fut in as_completed([pool.submit(work, r) for r in todo]):
            report(fut.result())
    finally:  # Ctrl-C: start no new run (the running ones got the signal too and keep their checkpoints)
        pool.shutdown(wait=True, cancel_futures=True)


def compare(base: Config, data: str | Path, dev: str | Path | None = None, test: str | Path | None = None, *,
            variants: str | list[str] | None = None, variants_file: str | Path | None = None,
            seeds: int | str | list[int] = 3, out: str | Path = "runs/compare", jobs: int = 1,
            baseline: str = "baseline", metric: str | None = None,
            progress: Callable[[str], None] | None = None) -> CompareResult:
    """Validate the whole grid, train the missing runs (`jobs` at a time), write and print the leaderboard.

    jobs=1 trains in this process; jobs>1 starts that many `python -m tricklab.cli train` subprocesses
    at a time (each with its variant.yaml), spread round-robin over the visible GPUs, with
    OMP_NUM_THREADS = cores / jobs unless set. Each subprocess pays Python/torch start-up (seconds to
    tens of seconds), so jobs > 1 pays off when runs are long next to that, or the GPU is far from full. A failed run is reported with its log tail and the
    others go on; the result lists the failures (the CLI then exits with status 1).
    """
    from .leaderboard import discover_runs, write_report

    console = sys.stdout   # in-process runs redirect sys.stdout to their train.log: the console is this one
    say = progress or (lambda s: print(s, file=console, flush=True))
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be at least 1")
    out = Path(out)
    defined = load_variants_file(variants_file) if variants_file else {}
    vs = parse_variants(variants, defined, baseline)
    seed_list = parse_seeds(seeds)
    if jobs > 1 and not all(x is None or isinstance(x, (str, os.PathLike)) for x in (data, dev, test)):
        raise ConfigError(f"--jobs {jobs} trains in subprocesses, which read data from disk, and the data is in memory "
                          f"({type(data).__name__}); fix: jobs=1, or save it (e.g. Dataset.save_to_disk) and pass the folder")
    runs, problems = plan_grid(base, vs, seed_list, out)
    task = validate_grid(runs, data, dev, test, problems, say=say)
    from ..evaluation.metrics import DEFAULT_METRIC, TASK_METRICS

    if metric is not None and metric not in TASK_METRICS[task]:
        hint = difflib.get_close_matches(metric, TASK_METRICS[task], n=1)
        raise ConfigError(f"--metric {metric!r} is not a {task} metric" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (choose from: {', '.join(TASK_METRICS[task])})")
    states = {r.folder: run_state(r.folder) for r in runs}
    check_reuse(runs, states)
    check_free([r.folder for r in runs if states[r.folder] != "done"])

    out.mkdir(parents=True, exist_ok=True)
    grid = {"baseline": baseline, "seeds": seed_list, "task": task, "variants": {v.name: v.partial for v in vs},
            "data": {k: None if v is None else str(v) if isinstance(v, (str, os.PathLike)) else f"<in-memory {type(v).__name__}>"
                     for k, v in (("data", data), ("dev", dev), ("test", test))},
            "base": base.to_dict()}
    write_json(out / "compare.json", grid, default=str)

    show = metric or DEFAULT_METRIC[task]
    total = len(runs)
    results: list[RunResult] = []

    watch = Progress(say, show)

    def report(res: RunResult) -> None:
        watch.stop(res.spec.label)
        results.append(res)
        head = f"[{len(results)}/{total}] {res.spec.label}:"
        if res.status == "failed":
            say(f"{head} FAILED after {res.seconds:.1f} s; last lines of {res.spec.folder / 'train.log'}:\n"
                + "\n".join("    " + ln for ln in res.log_tail.splitlines()))
            return
        value = res.metrics.get(show)
        val = f"{show} {value:.4f}" if isinstance(value, (int, float)) else f"{show} n/a"
        if show != "macro_f1" and isinstance(res.metrics.get("macro_f1"), (int, float)):
            val += f", macro-F1 {res.metrics['macro_f1']:.4f}"
        if res.status == "done before":
            say(f"{head} {val} (done before, skipped)")
        else:
            say(f"{head} {val} ({res.status} in {res.seconds:.1f} s)")

    todo = [r for r in runs if states[r.folder] != "done"]
    n_resume = sum(states[r.folder] == "resume" for r in todo)
    say(f"compare: {len(vs)} variants x {len(seed_list)} seeds = {total} runs ({task}); "
        f"{total - len(todo)} done, {n_resume} to resume, {len(todo) - n_resume} to train; jobs {jobs}; out {out}")
    for r in runs:
        if states[r.folder] == "done":
            report(RunResult(r, "done before", 0.0, json.loads((r.folder / "metrics.json").read_text(encoding="utf-8"))))

    def ready(r: RunSpec, resumed: bool) -> None:
        watch.start(r.label, r.folder, resumed)

    with watch:
        if jobs == 1:
            for r in todo:
                report(_execute(r, states[r.folder], data, dev, test, None, ready))
        else:
            _execute_parallel(todo, states, data, dev, test, jobs, report, ready)

    board = None
    if any(r.status != "failed" for r in results):
        grid_keys = {(v.name, s) for v in vs for s in seed_list}  # this grid's runs only, not older seeds in OUT
        found = discover_runs([out / v.name for v in vs if any((out / v.name).glob("*/metrics.json"))])
        board = write_report([r for r in found if (r.variant, r.seed) in grid_keys], out, baseline, metric,
                             printer=say, require_baseline=False)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        say(f"compare: {len(failed)} of {total} runs failed: {', '.join(r.spec.label for r in failed)}; "
            f"re-run the same command to retry them (finished runs are kept)")
    return CompareResult(out, results, board)
