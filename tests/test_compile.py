"""train.compile: auto | true | false, torch.compile (inductor) of the encoder (model/runtime.py, training/setup.py)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_cfg
from tricklab.config import load_config
from tricklab.errors import ConfigError
from tricklab.model import runtime


def test_compile_values_are_checked():
    assert load_config(None, []).train.compile == "auto"
    assert load_config(None, ["train.compile=true"]).train.compile == "true"
    with pytest.raises(ConfigError, match=r"train.compile: 'ture' is not valid; did you mean 'true'\?"):
        load_config(None, ["train.compile=ture"])


def test_auto_and_false_do_not_compile():
    assert runtime.resolve_compile("auto", "cpu") is False
    assert runtime.resolve_compile("auto", "cuda") is False
    assert runtime.resolve_compile("false", "cpu") is False


def test_true_without_a_cxx_compiler_stops_before_the_data(monkeypatch, tiny_model, tmp_path):
    from tricklab.training import train

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"train.compile=true: .*no C\+\+ compiler.*--set train.compile=false"):
        train(tiny_cfg(tiny_model, "train.compile=true"), tmp_path / "no_such_data", out=tmp_path / "r",
              progress=False)


def inductor_works() -> bool:
    if runtime.cxx_compiler() is None:
        return False
    try:
        return bool(torch.compile(lambda x: x * 2 + 1)(torch.ones(3)).eq(3).all())
    except Exception:  # noqa: BLE001  (any inductor failure: this machine cannot compile)
        return False


def first_loss(out) -> float:
    recs = [json.loads(ln) for ln in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return next(r["loss"] for r in recs if "loss" in r)


def test_compiled_step_matches_eager(monkeypatch, tiny_model, thuc_dir, tmp_path, capsys):
    if not inductor_works():
        pytest.skip("torch.compile (inductor) cannot compile on this machine (no C++ compiler or a failing toolchain)")
    import torch._inductor.config as inductor_config

    from tricklab.training import train

    monkeypatch.setattr(inductor_config, "fallback_random", True)   # dropout draws the same numbers as eager
    sets = ("train.max_steps=2", "train.log_every=1", "train.checkpoint=false", "train.eval_batch_size=64")
    eager = train(tiny_cfg(tiny_model, *sets, "train.compile=false"), thuc_dir, out=tmp_path / "eager", progress=False)
    capsys.readouterr()
    compiled = train(tiny_cfg(tiny_model, *sets, "train.compile=true"), thuc_dir, out=tmp_path / "compiled",
                     progress=False)
    assert "compile: the encoder runs under torch.compile" in capsys.readouterr().out
    assert first_loss(tmp_path / "compiled") == pytest.approx(first_loss(tmp_path / "eager"), rel=1e-4)
    # the saved model has the plain parameter names (it loads for the final evaluation) and the same predictions
    assert compiled["dev"]["accuracy"] == pytest.approx(eager["dev"]["accuracy"], abs=0.05)
