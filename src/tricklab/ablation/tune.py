"""`tricklab tune`: hyperparameter search on Optuna (TPE sampler, median or successive-halving pruning, SQLite
storage), every trial an ordinary run folder, the objective the best dev metric; then the best config and the
base config re-run over seeds with `compare`'s paired statistics on test. Built on Optuna rather than by hand:
it is maintained, and its RDB storage gives resumable, multi-process studies.

The search space is a YAML mapping from config keys to distributions:

    train.lr: {log_uniform: [1.0e-5, 3.0e-4]}      # float, log scale
    train.warmup_ratio: {uniform: [0.0, 0.1]}      # float
    train.epochs: {int: [2, 5]}                    # integer ({int_log: [...]} on a log scale)
    train.batch_size: [32, 64, 128]                # a choice
    tricks.rdrop: [true, false]                    # a trick on or off (the same for aux_losses.<name>)
    tricks.rdrop.alpha: {uniform: [0.5, 5]}        # a trick's parameter, sampled when the trick is on
    loss: [ce, focal]                              # the main loss
    loss.focal.gamma: {uniform: [0.5, 3]}          # a loss parameter, sampled when that loss is the main one

Layout of OUT: study.db (the Optuna study: re-running the same command resumes it), trials/trial-NNNN/ (run
folders), best.yaml (the best trial's partial and full config), history.png, importance.png, verify/ (the
`compare` grid of `baseline` = the base config vs `tuned` = the best config, on test), tune.json (summary).
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import Config, read_yaml_mapping
from ..errors import ConfigError
from ..runfiles import atomic_write, write_json
from .compare import NAMED_LISTS, RunSpec, Variant, compare, merge, validate_grid, variant_config

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "int_log")
PRUNERS = ("median", "halving", "none")


@dataclass
class Param:
    """One dimension of the space: `key` as written in the space file; `kind` categorical or a distribution."""
    key: str
    kind: str                  # categorical | uniform | log_uniform | int | int_log
    values: list[Any]          # the choices, or [low, high]
    when: tuple[str, str] | None = None   # (list, name): only sampled when that trick / aux loss / loss is on

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.values)
        lo, hi = self.values
        if self.kind in ("int", "int_log"):
            return trial.suggest_int(self.key, int(lo), int(hi), log=self.kind == "int_log")
        return trial.suggest_float(self.key, float(lo), float(hi), log=self.kind == "log_uniform")



def _parse_one(key: str, spec: Any, where: str) -> Param:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: key {key!r}: expected dotted config keys like train.lr")
    if isinstance(spec, list):
        if not spec or any(isinstance(v, (list, dict)) for v in spec) or len(set(map(repr, spec))) != len(spec):
            raise ConfigError(f"{where}: {key}: a choice needs distinct plain values, e.g. [32, 64, 128], got {spec!r}")
        kind, values = "categorical", spec
    elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS:
        kind, values = next(iter(spec.items()))
        ok = (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                    for v in values) and values[0] < values[1])
        if not ok:
            raise ConfigError(f"{where}: {key}: {kind} needs [low, high] numbers with low < high, got {values!r}")
        if kind in ("log_uniform", "int_log") and values[0] <= 0:
            raise ConfigError(f"{where}: {key}: {kind} needs low > 0, got {values!r}")
        if kind in ("int", "int_log") and not all(float(v).is_integer() for v in values):
            raise ConfigError(f"{where}: {key}: {kind} needs whole numbers, got {values!r}")
    else:
        raise ConfigError(f"{where}: {key}: expected a list of choices or one of "
                          f"{{{', '.join(f'{d}: [low, high]' for d in DISTRIBUTIONS)}}}, got {spec!r}")
    named = parts[0] in (*NAMED_LISTS, "loss")
    if named and len(parts) > 3 or parts[0] == "loss" and len(parts) == 2:
        raise ConfigError(f"{where}: {key}: expected {parts[0]}.<name>.<parameter>, e.g. "
                          + ("loss.focal.gamma" if parts[0] == "loss" else f"{parts[0]}.rdrop.alpha"))
    if parts[0] in NAMED_LISTS and len(parts) == 2 and (kind != "categorical" or
                                                         not all(isinstance(v, bool) for v in values)):
        raise ConfigError(f"{where}: {key}: a trick or aux loss is switched with [true, false], got {spec!r}")
    return Param(key, kind, values, (parts[0], parts[1]) if named and len(parts) == 3 else None)


def parse_space(path: str | Path) -> list[Param]:
    """The space file's parameters, their shapes checked (the config keys are checked by `check_space`)."""
    p = Path(path)
    data = read_yaml_mapping(p, "--space", "give a YAML file of config key -> distribution (see tricklab tune --help)",
                             "config key -> distribution or list of choices")
    if not data:
        raise ConfigError(f"--space {p}: no parameters; fix: e.g. train.lr: {{log_uniform: [1.0e-5, 3.0e-4]}}")
    return [_parse_one(str(k), v, f"--space {p}") for k, v in data.items()]


def _set(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def partial_config(values: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Sampled {space key: value} -> the partial config to merge onto the base, plus "_off": the tricks and aux
    losses switched off ({list: [names]}), which a merge cannot remove."""
    partial: dict[str, Any] = {}
    off: dict[str, set[str]] = {k: set() for k in NAMED_LISTS}
    loss_name = _name(values.get("loss", base.get("loss")))
    for key, value in sorted(values.items(), key=lambda kv: kv[0].count(".")):   # switches before parameters
        parts = key.split(".")
        if parts[0] in NAMED_LISTS and len(parts) == 2:
            if value:
                partial = merge(partial, {parts[0]: [{"name": parts[1]}]})
            else:
                off[parts[0]].add(parts[1])
        elif parts[0] in NAMED_LISTS:
            partial = merge(partial, {parts[0]: [{"name": parts[1], parts[2]: value}]})
        elif parts == ["loss"]:
            partial["loss"] = {"name": value}
        elif parts[0] == "loss":
            if parts[1] == loss_name:
                partial["loss"] = {**partial.get("loss", {"name": loss_name}), parts[2]: value}
        else:
            _set(partial, parts, value)
    partial["_off"] = {k: sorted(v) for k, v in off.items() if v}
    return partial


def trial_config(base: Config, values: dict[str, Any], seed: int | None = None) -> Config:
    """The full config of a trial: base + sampled values (tricks/aux losses switched off are removed)."""
    base_d = base.to_dict()
    partial = partial_config(values, base_d)
    off = partial.pop("_off")
    d = merge(base_d, partial)
    for lst, names in off.items():
        d[lst] = [x for x in d.get(lst, []) if _name(x) not in names]
    return variant_config(d, Variant("trial", {}), base.train.seed if seed is None else seed)


def is_active(param: Param, values: dict[str, Any], base: Config) -> bool:
    """A conditional parameter is sampled only when its trick / aux loss / loss is on in this trial."""
    if param.when is None:
        return True
    lst, name = param.when
    if lst == "loss":
        loss = values.get("loss", base.loss)
        return _name(loss) == name
    if f"{lst}.{name}" in values:
        return bool(values[f"{lst}.{name}"])
    return any(_name(x) == name for x in getattr(base, lst))


def sample(trial: Any, space: list[Param], base: Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in sorted(space, key=lambda p: p.when is not None):      # switches before the parameters they gate
        if is_active(p, values, base):
            values[p.key] = p.suggest(trial)
    return values


def check_space(space: list[Param], base: Config, data: Any, dev: Any, test: Any, where: str) -> str:
    """Build a config at every choice and both ends of every range (others at the base) and validate them like a
    compare grid (keys, loss/trick names and parameters, the data): a bad space fails before any trial, naming
    the key. Returns the task."""
    problems: list[str] = []
    specs: list[RunSpec] = []
    for p in space:
        for v in p.values:                                     # every choice, both ends of a range
            values = {p.key: v}
            if p.when is not None and p.when[0] != "loss":
                values[f"{p.when[0]}.{p.when[1]}"] = True
            elif p.when is not None:
                values["loss"] = p.when[1]
            try:
                specs.append(RunSpec(f"{p.key} = {v!r}", base.train.seed, Path("."), trial_config(base, values)))
            except ConfigError as e:
                problems.append(f"{where}: {p.key} = {v!r}: {str(e).removeprefix('variant ' + repr('trial') + ': ')}")
                break                                           # one problem per key
    return validate_grid(specs, data, dev, test, problems, describe=lambda r: f"{where}: {r.variant}")


def _storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def load_study(out: Path, direction: str, pruner: str, seed: int) -> Any:
    import optuna

    pr = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
          "halving": optuna.pruners.SuccessiveHalvingPruner(),
          "none": optuna.pruners.NopPruner()}[pruner]
    try:   # a resumed study's sampler is seeded past its trials, or it would draw the first ones again
        n = len(optuna.load_study(study_name="tricklab", storage=_storage(out)).trials)
    except KeyError:
        n = 0
    return optuna.create_study(study_name="tricklab", storage=_storage(out), load_if_exists=True, direction=direction,
                               sampler=optuna.samplers.TPESampler(seed=seed + n), pruner=pr)


def requeue_interrupted(study: Any) -> int:
    """Trials left RUNNING by a killed tune: marked failed and their parameters queued again."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        n += 1
    return n


def objective_fn(base: Config, space: list[Param], data: Any, dev: Any, test: Any, out: Path,
                 metric: str, say: Callable[[str], None]) -> Callable[[Any], float]:
    import optuna

    from ..training import train

    def objective(trial: Any) -> float:
        values = sample(trial, space, base)
        cfg = trial_config(base, values)
        folder = out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("folder", str(folder))
        cfg.train.metric = metric
        cfg.tracking.group = cfg.tracking.group or out.name           # with --report-to: one tracker run per trial
        cfg.tracking.run_name = folder.name

        def report(step: int, m: dict[str, Any]) -> None:
            trial.report(float(m[metric]), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"dev {metric} {m[metric]:.4f} at step {step}")

        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        say(f"trial {trial.number}: {shown}")
        try:
            m = train(cfg, data, dev, test, folder, progress=False, on_evaluate=report)
        except optuna.TrialPruned as e:
            say(f"trial {trial.number}: pruned ({e})")
            raise
        value = float(m["best_dev"][metric])
        say(f"trial {trial.number}: dev {metric} {value:.4f}")
        return value

    return objective


def save_plots(study: Any, out: Path, say: Callable[[str], None]) -> list[str]:
    """history.png (objective per trial, best so far) and importance.png (fANOVA parameter importances); none,
    with a note, without matplotlib (the `plots` extra), which the `tune` extra does not install."""
    from ..evaluation.plots import available

    if not available():
        say("tune: history.png and importance.png skipped: matplotlib is not installed (pip install "
            "'tricklab[plots]')")
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written = []
    for name, fn in (("history.png", plot_optimization_history), ("importance.png", plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # "experimental" notices, equal-importance notices
                ax = fn(study)
            ax.figure.set_size_inches(8, 5)
            ax.figure.tight_layout()
            ax.figure.savefig(out / name, dpi=110)
            plt.close(ax.figure)
            written.append(name)
        except (ValueError, RuntimeError) as e:   # e.g. importances need 2+ finished trials with varied params
            say(f"tune: {name} skipped: {e}")
    return written


def tune(base: Config, data: str | Path, dev: str | Path | None = None, test: str | Path | None = None, *,
         space: str | Path, trials: int = 20, out: str | Path = "runs/tune", timeout: float | None = None,
         jobs: int = 1, pruner: str = "median", metric: str | None = None, verify_seeds: int = 3,
         worker: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search `space` for `trials` finished (complete or pruned) trials in total, then verify the best config
    against the base over `verify_seeds` seeds (0: skip). Returns the summary written to OUT/tune.json."""
    from ..evaluation.metrics import DEFAULT_METRIC, LOWER_IS_BETTER, TASK_METRICS

    say = progress or (lambda s: print(s, flush=True))
    out = Path(out)
    try:
        import optuna
    except ImportError:
        raise ConfigError("tricklab tune needs Optuna; fix: pip install 'tricklab[tune]'") from None
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: choose from {', '.join(PRUNERS)}")
    if trials < 1 or jobs < 1 or verify_seeds < 0:
        raise ConfigError("--trials and --jobs must be at least 1, --verify-seeds at least 0")
    params = parse_space(space)
    task = check_space(params, base, data, dev, test, f"--space {space}")
    metric = metric or (base.train.metric if base.train.metric != "auto" else DEFAULT_METRIC[task])
    if metric not in TASK_METRICS[task]:
        raise ConfigError(f"--metric {metric!r} is not a {task} metric (choose from: {', '.join(TASK_METRICS[task])})")
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(out, "minimize" if metric in LOWER_IS_BETTER else "maximize", pruner, base.train.seed)
    if not worker:
        n = requeue_interrupted(study)
        say(f"tune: {len(study.trials) - n} trials in {out / 'study.db'}" + (f"; {n} interrupted, queued again" if n else ""))
    procs = [] if worker else _start_workers(jobs - 1)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    try:
        study.optimize(objective_fn(base, params, data, dev, test, out, metric, say), timeout=timeout,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)],
                       catch=(ConfigError,), gc_after_trial=True)
    finally:
        for p in procs:
            p.wait()
    if worker:
        return {}
    return finish_tune(study, base, params, data, dev, test, out, metric, verify_seeds, say)


def _start_workers(n: int) -> list[subprocess.Popen]:
    """`--jobs N`: N - 1 more processes of the same command join the study (the SQLite storage is shared)."""
    if n <= 0:
        return []
    argv = [a for a in sys.argv[1:]]
    cmd = [sys.executable, "-m", "tricklab.cli", *argv, "--worker"]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (n + 1))))
    return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(n)]


def finish_tune(study: Any, base: Config, params: list[Param], data: Any, dev: Any, test: Any, out: Path,
                metric: str, verify_seeds: int, say: Callable[[str], None]) -> dict[str, Any]:
    """best.yaml, the plots, the verification grid and tune.json."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"tune: no trial finished in {out}; see trials/*/ (every trial was pruned or failed)")
    best = study.best_trial
    cfg = trial_config(base, best.params)
    atomic_write(out / "best.yaml", yaml.safe_dump({"params": best.params, "value": best.value, "metric": metric,
                                                   "trial": best.number, "config": cfg.to_dict()},
                                                  sort_keys=False, allow_unicode=True))
    say(f"tune: best trial {best.number}: dev {metric} {best.value:.4f} with "
        + ", ".join(f"{k}={v}" for k, v in best.params.items()))
    plots = save_plots(study, out, say)
    summary: dict[str, Any] = {"metric": metric, "best": {"trial": best.number, "value": best.value,
                                                          "params": best.params},
                               "trials": {s.name.lower(): sum(t.state == s for t in study.trials)
                                          for s in optuna.trial.TrialState},
                               "plots": plots}
    if verify_seeds:
        summary["verify"] = verify(base, best.params, data, dev, test, out, metric, verify_seeds)
    write_json(out / "tune.json", summary, default=str)
    return summary


def verify(base: Config, values: dict[str, Any], data: Any, dev: Any, test: Any, out: Path, metric: str,
           seeds: int) -> dict[str, Any]:
    """`default` (the base config) vs `tuned` (the best trial's config) over seeds, on test, with compare's
    paired statistics. Tricks the best trial switched off are taken out of the grid's base and put back by
    `default` (a variant can add to the base, not remove from it)."""
    base_d = base.to_dict()
    partial = partial_config(values, base_d)
    off = partial.pop("_off")
    removed = {lst: [x for x in base_d.get(lst, []) if _name(x) in names] for lst, names in off.items()}
    stripped = {**base_d, **{lst: [x for x in base_d.get(lst, []) if _name(x) not in names] for lst, names in off.items()}}
    grid_base = variant_config(stripped, Variant("default", {}), base.train.seed)
    vfile = out / "verify_variants.yaml"
    atomic_write(vfile, yaml.safe_dump({"default": removed, "tuned": partial}, sort_keys=False, allow_unicode=True))
    res = compare(grid_base, data, dev, test, variants="default,tuned", variants_file=vfile, seeds=seeds,
                  out=out / "verify", baseline="default", metric=metric)
    rows = [] if res.leaderboard is None else res.leaderboard.rows
    return {"out": str(out / "verify"), "failed": [r.spec.label for r in res.failed],
            "rows": {r.variant: {"mean": r.mean_std(metric)[0], "delta": r.delta, "ci": list(r.ci),
                                 "verdict": r.verdict} for r in rows}}


def _name(item: Any) -> Any:
    return item.get("name") if isinstance(item, dict) else item
