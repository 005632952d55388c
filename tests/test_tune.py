"""`tricklab tune` on tiny models: the space parser (bad spaces fail before any trial, naming the key), sampled
values -> configs, pruning wired to dev evaluations, resume of a study (interrupted trials run again), and the
end: best.yaml, plots, and the verification grid with compare's verdicts."""
from __future__ import annotations

import json

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from conftest import tiny_cfg  # noqa: E402
from tricklab.ablation.tune import (check_space, load_study, objective_fn, parse_space, requeue_interrupted,  # noqa: E402
                                    trial_config, tune)
from tricklab.cli import main as cli_main  # noqa: E402
from tricklab.errors import ConfigError  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = """
train.lr: {log_uniform: [1.0e-4, 3.0e-3]}
train.batch_size: [8, 16]
train.warmup_ratio: {uniform: [0.0, 0.2]}
train.epochs: {int: [1, 2]}
tricks.rdrop: [true, false]
tricks.rdrop.alpha: {uniform: [0.5, 4.0]}
loss: [ce, focal]
loss.focal.gamma: {uniform: [0.5, 3.0]}
"""


def write(tmp_path, text, name="space.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_space_parses(tmp_path):
    space = {p.key: p for p in parse_space(write(tmp_path, GOOD))}
    assert space["train.lr"].kind == "log_uniform" and space["train.lr"].values == [1e-4, 3e-3]
    assert space["train.batch_size"].kind == "categorical" and space["train.epochs"].kind == "int"
    assert space["tricks.rdrop.alpha"].when == ("tricks", "rdrop") and space["loss.focal.gamma"].when == ("loss", "focal")
    assert space["tricks.rdrop"].when is None


@pytest.mark.parametrize("text,match", [
    ("train.lr: {log_uniform: [0, 1.0e-3]}", r"train\.lr: log_uniform needs low > 0"),
    ("train.lr: {uniform: [0.1, 0.01]}", r"train\.lr: uniform needs \[low, high\] numbers with low < high"),
    ("train.epochs: {int: [1.5, 3]}", r"train\.epochs: int needs whole numbers"),
    ("train.lr: {normal: [0, 1]}", r"train\.lr: expected a list of choices"),
    ("train.batch_size: []", r"train\.batch_size: a choice needs distinct plain values"),
    ("tricks.rdrop: [0.1, 0.2]", r"tricks\.rdrop: a trick or aux loss is switched with \[true, false\]"),
    ("loss.gamma: {uniform: [1, 2]}", r"loss\.gamma: expected loss\.<name>\.<parameter>"),
])
def test_bad_space_shapes_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        parse_space(write(tmp_path, text))


@pytest.mark.parametrize("text,match", [
    ("train.lrr: {uniform: [0.1, 0.2]}", r"train\.lrr = 0\.1: unknown config key 'train\.lrr'; did you mean 'train\.lr'"),
    ("tricks.rdrop.alphaa: {uniform: [0.5, 1.0]}", r"tricks\.rdrop\.alphaa = 0\.5: .*alphaa"),
    ("tricks.fgm.epsilon: {uniform: [-1.0, 1.0]}", r"tricks\.fgm\.epsilon = -1\.0: .*epsilon must be a positive"),
    ("loss: [ce, focall]", r"loss = 'focall': .*unknown loss 'focall'; did you mean 'focal'"),
])
def test_bad_space_keys_fail_before_any_trial(tmp_path, tiny_model, thuc_dir, text, match):
    base = tiny_cfg(tiny_model)
    with pytest.raises(ConfigError, match=match):
        check_space(parse_space(write(tmp_path, text)), base, thuc_dir, None, None, "--space s.yaml")
    with pytest.raises(ConfigError, match=match):   # through tune(): nothing is created before the check
        tune(base, thuc_dir, space=write(tmp_path, text), trials=1, out=tmp_path / "t", verify_seeds=0)
    assert not (tmp_path / "t" / "study.db").exists()


def test_trial_config_switches_tricks_and_losses(tiny_model):
    base = tiny_cfg(tiny_model, "train.lr=1e-3")
    base.tricks = [{"name": "ema", "decay": 0.99}, {"name": "rdrop", "alpha": 4.0}]
    cfg = trial_config(base, {"train.lr": 3e-4, "tricks.rdrop": False, "tricks.fgm": True, "tricks.fgm.epsilon": 0.5,
                              "loss": "focal", "loss.focal.gamma": 1.5, "loss.ce.label_smoothing": 0.1})
    assert cfg.train.lr == 3e-4
    assert [t["name"] for t in cfg.tricks] == ["ema", "fgm"] and cfg.tricks[1]["epsilon"] == 0.5
    assert cfg.loss == {"name": "focal", "gamma": 1.5}            # ce's parameter is not applied to focal
    on = trial_config(base, {"tricks.rdrop.alpha": 1.0})           # a parameter of a trick the base has
    assert next(t for t in on.tricks if t["name"] == "rdrop")["alpha"] == 1.0
    same = base.to_dict()
    same["tracking"]["run_name"] = "trial/seed42"   # named like compare's runs (run_trial renames it per folder)
    assert trial_config(base, {}).to_dict() == same


def test_pruning_stops_a_trial_at_a_dev_evaluation(tmp_path, tiny_model, thuc_dir):
    """A pruner that prunes below accuracy 2.0 stops every trial at its first dev evaluation: the trial is
    PRUNED with one intermediate value, and its run folder ends without metrics.json."""
    base = tiny_cfg(tiny_model, "train.eval_every=2", "train.epochs=1")
    space = parse_space(write(tmp_path, "train.lr: {log_uniform: [1.0e-4, 1.0e-3]}"))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective_fn(base, space, thuc_dir, None, None, tmp_path, "accuracy", lambda s: None), n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    t = study.trials[0]
    assert list(t.intermediate_values) == [2]                      # reported at step 2, then stopped
    assert not (tmp_path / "trials" / "trial-0000" / "metrics.json").exists()
    assert (tmp_path / "trials" / "trial-0000" / "log.jsonl").is_file()


def test_tune_resumes_and_verifies(tmp_path, tiny_model, thuc_dir, capsys):
    base = tiny_cfg(tiny_model, "train.epochs=1")
    space = write(tmp_path, "train.lr: {log_uniform: [3.0e-4, 3.0e-3]}\ntrain.batch_size: [8, 16]\n")
    out = tmp_path / "tune"
    tune(base, thuc_dir, space=space, trials=1, out=out, pruner="none", verify_seeds=0)
    # a killed tune leaves a RUNNING trial behind: the next run marks it failed and runs its parameters again
    study = load_study(out, "maximize", "none", base.train.seed)
    stale = study.ask({"train.lr": optuna.distributions.FloatDistribution(3e-4, 3e-3, log=True),
                       "train.batch_size": optuna.distributions.CategoricalDistribution([8, 16])})
    summary = tune(base, thuc_dir, space=space, trials=2, out=out, pruner="none", verify_seeds=1)
    study = load_study(out, "maximize", "none", base.train.seed)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study.trials[2].params == stale.params                    # the interrupted parameters ran again
    assert requeue_interrupted(study) == 0
    for t in (study.trials[0], study.trials[2]):
        m = json.loads((out / "trials" / f"trial-{t.number:04d}" / "metrics.json").read_text())
        assert t.value == pytest.approx(m["best_dev"]["accuracy"])   # the objective is the best dev metric
    assert summary["best"]["value"] == max(study.trials[0].value, study.trials[2].value)
    for f in ("best.yaml", "history.png", "importance.png", "tune.json", "verify/leaderboard.md"):
        assert (out / f).is_file(), f
    assert set(summary["verify"]["rows"]) == {"default", "tuned"} and not summary["verify"]["failed"]
    assert summary["verify"]["rows"]["default"]["verdict"] == "baseline"
    best = summary["best"]["params"]
    tuned = yaml.safe_load((out / "verify" / "tuned" / "seed1" / "config.yaml").read_text())
    default = yaml.safe_load((out / "verify" / "default" / "seed1" / "config.yaml").read_text())
    assert tuned["train"]["lr"] == pytest.approx(best["train.lr"]) and tuned["train"]["batch_size"] == best["train.batch_size"]
    assert default["train"]["lr"] == base.train.lr and default["train"]["batch_size"] == base.train.batch_size


def test_cli_tune_bad_space_exits_2(tmp_path, tiny_model, thuc_dir, capsys):
    space = write(tmp_path, "train.lrr: {uniform: [0.1, 0.2]}")
    code = cli_main(["tune", "--data", str(thuc_dir), "--space", str(space), "--model", str(tiny_model),
                     "--out", str(tmp_path / "t"), "--trials", "1"])
    assert code == 2 and "train.lrr" in capsys.readouterr().err


def test_plots_are_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    """The tune extra installs optuna alone: without matplotlib the study ends without its two PNGs, not a
    traceback after every trial has run."""
    from tricklab.ablation.tune import save_plots
    from tricklab.evaluation import plots

    study = optuna.create_study(direction="maximize")
    for x in (0.1, 0.5, 0.9):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    said: list[str] = []
    pytest.importorskip("matplotlib")
    assert save_plots(study, tmp_path, said.append) == ["history.png", "importance.png"]
    monkeypatch.setattr(plots, "available", lambda: False)
    assert save_plots(study, tmp_path / "none", said.append) == [] and not (tmp_path / "none").exists()
    assert said[-1].startswith("tune: history.png and importance.png skipped: matplotlib is not installed")
