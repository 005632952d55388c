"""Experiment tracking through Accelerate's trackers: TensorBoard event files read back (every scalar of log.jsonl,
the config as hyperparameters), compare's one tracker run per grid run, grouped by grid; wandb / mlflow
arguments; a missing tracker package fails before training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main
from tricklab.errors import ConfigError
from tricklab.training import train


def event_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files directly in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def event_hparams(folder: Path) -> dict[str, object]:
    """The hyperparameters of the hparams plugin's session_start_info in a run's event files (the
    SummaryWriter.add_hparams layout: a sub-folder of `folder`)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    for f in sorted(folder.glob("*/events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(f)).Load():
            for v in event.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    info = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    return {k: getattr(x, x.WhichOneof("kind")) for k, x in info.session_start_info.hparams.items()}
    raise AssertionError(f"no hparams in {folder}")


def test_tensorboard_gets_every_logged_scalar_and_the_config(tiny_model, thuc_dir, tmp_path):
    cfg = tiny_cfg(tiny_model, "tracking.report_to=tensorboard", "train.max_steps=6", "train.eval_every=3",
                   "train.log_every=2", "tricks=[{name: rdrop, alpha: 1}]")
    run = tmp_path / "run"
    train(cfg, thuc_dir, out=run, progress=False)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    scalars = event_scalars(run / "tensorboard")
    expected = {}
    for rec in log:
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)):
                expected.setdefault(k, {})[rec["step"]] = v
    for must in ("loss", "loss/ce", "loss/rdrop_kl", "lr", "samples_per_s", "dev/accuracy", "dev/loss",
                 "final/test/accuracy", "final/dev/ece", "final/train_samples_per_s"):
        assert must in expected, must
    assert set(scalars) == set(expected)
    for tag, by_step in expected.items():
        assert scalars[tag] == pytest.approx(by_step, rel=1e-6), tag       # float32 in the event file
    assert sorted(scalars["dev/accuracy"]) == [3, 6] and sorted(scalars["loss"]) == [2, 4, 6]
    hp = event_hparams(run / "tensorboard")
    assert hp["train.lr"] == pytest.approx(2e-3) and hp["train.max_steps"] == 6
    assert hp["tracking.report_to"] == "tensorboard" and json.loads(hp["tricks"]) == [{"name": "rdrop", "alpha": 1}]
    assert hp["model.name"] == str(tiny_model)


def test_report_to_none_writes_no_tracker_files(tiny_model, thuc_dir, tmp_path):
    train(tiny_cfg(tiny_model, "train.max_steps=2", "train.checkpoint=false"), thuc_dir, out=tmp_path / "run",
          progress=False)
    assert not (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "log.jsonl").is_file()


def test_compare_gives_each_run_its_own_tracker_run_grouped_by_grid(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    out = tmp_path / "grid"
    code = cli_main(["compare", "--data", str(data), "--variants", "baseline,ls", "--seeds", "1", "--out", str(out),
                     "--model", str(tiny_model), "--report-to", "tensorboard", "--set", "train.max_steps=2",
                     "--set", "train.batch_size=16", "--set", "train.precision=fp32", "--set", "data.max_length=24",
                     "--quiet"])
    assert code == 0, capsys.readouterr()
    for variant in ("baseline", "ls"):
        run = out / variant / "seed1"
        tr = yaml.safe_load((run / "config.yaml").read_text())["tracking"]
        assert tr == {"report_to": "tensorboard", "project": "tricklab", "group": "grid",
                      "run_name": f"{variant}/seed1"}
        assert sorted(event_scalars(run / "tensorboard")["loss"]) == [2]
    # re-running the grid without tracking keeps the finished runs (where a run reports is not what it trains)
    assert cli_main(["compare", "--data", str(data), "--variants", "baseline,ls", "--seeds", "1", "--out", str(out),
                     "--model", str(tiny_model), "--set", "train.max_steps=2", "--set", "train.batch_size=16",
                     "--set", "train.precision=fp32", "--set", "data.max_length=24", "--quiet"]) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 2


class FakeAccelerator:
    log_with = ["wandb", "mlflow"]

    def init_trackers(self, project, config=None, init_kwargs=None):
        self.args = (project, config, init_kwargs)


def test_wandb_and_mlflow_runs_are_named_and_grouped(tmp_path):
    from tricklab.config import load_config
    from tricklab.training.tracking import start_tracking

    cfg = load_config(None, ["tracking.project=study", "tracking.group=grid7", "tracking.run_name=rdrop/seed2"])
    acc = FakeAccelerator()
    start_tracking(acc, cfg, tmp_path / "run")
    project, config, init = acc.args
    assert project == "study" and config["tracking.group"] == "grid7" and config["train.lr"] == 5e-5
    assert init["wandb"] == {"name": "rdrop/seed2", "group": "grid7", "dir": str(tmp_path / "run")}
    assert init["mlflow"] == {"run_name": "rdrop/seed2", "tags": {"group": "grid7"}}
    start_tracking(acc, load_config(None, []), tmp_path / "run")          # defaults: the folder's name, no group
    assert acc.args[2]["wandb"] == {"name": "run", "dir": str(tmp_path / "run")}


def test_a_missing_tracker_or_a_typo_fails_before_training(tiny_model, tmp_path):
    from accelerate.utils import is_wandb_available

    with pytest.raises(ConfigError, match=r"tracking.report_to: 'tensorbord' is not valid; did you mean 'tensorboard'"):
        tiny_cfg(tiny_model, "tracking.report_to=tensorbord")
    if is_wandb_available():
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match=r"tracking.report_to=wandb: the wandb package is not installed; fix: pip "
                                          r"install 'tricklab\[wandb\]'"):
        train(tiny_cfg(tiny_model, "tracking.report_to=wandb"), tmp_path / "no-data", out=tmp_path / "r",
              progress=False)
