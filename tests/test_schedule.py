"""train.scheduler: transformers' schedules step for step, warm-up by ratio or steps, composable factors, clear
errors before training, and the LR the loop logs. (Resume exactness: tests/test_train.py, the SIGKILL test.)"""
from __future__ import annotations

import json

import pytest
import torch
from transformers import get_scheduler

from conftest import tiny_cfg
from tricklab.config import SCHEDULERS, load_config
from tricklab.errors import ConfigError
from tricklab.training import train
from tricklab.training.optim import build_scheduler, lr_factor, warmup_steps

ARGS = {"cosine_with_restarts": {"num_cycles": 2}, "polynomial": {"power": 2.0, "lr_end": 1e-7},
        "inverse_sqrt": {"timescale": 5}}


def optimizer() -> torch.optim.Optimizer:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 5e-3}])


def lrs(sched, steps: int) -> list[tuple[float, float]]:
    """The two groups' LRs before the first step and after each of `steps` steps."""
    out = [tuple(sched.get_last_lr())]
    for _ in range(steps):
        sched.optimizer.step()
        sched.step()
        out.append(tuple(sched.get_last_lr()))
    return out


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_follows_transformers_step_for_step(name):
    args = ARGS.get(name, {})
    tc = load_config(None, [f"train.scheduler={name}", "train.warmup_steps=4"]).train
    tc.scheduler_args = args
    ours = lrs(build_scheduler(optimizer(), tc, 30), 30)
    ref = lrs(get_scheduler(name, optimizer(), num_warmup_steps=4, num_training_steps=30,
                            scheduler_specific_kwargs=args), 30)
    assert ours == ref                                    # the same floats, step for step
    if name not in ("constant",):
        assert ours[0][0] == 0.0 and ours[4][0] == pytest.approx(1e-3)   # warm-up from 0 to the peak at step 4


def test_warmup_steps_override_the_ratio():
    tc = load_config(None, ["train.warmup_ratio=0.1"]).train
    assert warmup_steps(tc, 100) == 10
    tc.warmup_steps = 7
    assert warmup_steps(tc, 100) == 7


def test_more_factors_compose_by_multiplication():
    """The hook a later LR factor (e.g. Adam without bias correction) plugs into."""
    tc = load_config(None, ["train.scheduler=cosine", "train.warmup_steps=3"]).train
    plain = lrs(build_scheduler(optimizer(), tc, 20), 20)
    scaled = lrs(build_scheduler(optimizer(), tc, 20, factors=[lambda s: 0.5 ** (s % 3)]), 20)
    for s, (p, q) in enumerate(zip(plain, scaled)):
        assert q == pytest.approx(tuple(x * 0.5 ** (s % 3) for x in p))
    assert build_scheduler(optimizer(), tc, 20).state_dict()["lr_lambdas"] == [None, None]   # loads weights_only


def test_schedule_errors_are_config_errors_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"train.scheduler: 'cosine_with_restart' is not valid; did you mean "
                                          r"'cosine_with_restarts'\?"):
        load_config(None, ["train.scheduler=cosine_with_restart"])
    with pytest.raises(ConfigError, match=r"train.warmup_steps: must be at least 0"):
        load_config(None, ["train.warmup_steps=-1"])
    tc = load_config(None, ["train.scheduler=constant_with_warmup", "train.scheduler_args={power: 2}"]).train
    with pytest.raises(ConfigError, match=r"constant_with_warmup takes no arguments"):
        lr_factor(tc, 10)
    cfg = load_config(None, ["train.scheduler=polynomial", "train.scheduler_args={powr: 2}"])
    # the scheduler is checked before the data: this data folder does not even exist
    with pytest.raises(ConfigError, match=r"train.scheduler_args for polynomial: .*powr"):
        train(cfg, tmp_path / "no-data", out=tmp_path / "run", progress=False)


def test_the_logged_lr_is_the_schedule(tiny_model, thuc_dir, tmp_path):
    """The loop's logged `lr` after optimizer step s is the peak LR x the schedule's factor at s."""
    cfg = tiny_cfg(tiny_model, "train.scheduler=cosine_with_restarts", "train.scheduler_args={num_cycles: 2}",
                   "train.warmup_steps=3", "train.max_steps=10", "train.log_every=1", "train.checkpoint=false")
    train(cfg, thuc_dir, out=tmp_path / "run", progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    got = {r["step"]: r["lr"] for r in log if "lr" in r}
    f = lr_factor(cfg.train, 10)
    assert got == pytest.approx({s: 2e-3 * f(s) for s in range(1, 11)}, rel=1e-9)
    assert got[3] == pytest.approx(2e-3) and got[5] < got[4] and got[10] == pytest.approx(0.0, abs=1e-12)
