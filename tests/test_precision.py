"""precision: auto on CPU: chosen by a measured bf16/fp32 matmul speed-up, cached per host (model/runtime.py)."""
from __future__ import annotations

import json

import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.model import runtime


@pytest.fixture
def fake_speeds(monkeypatch, tmp_path):
    """measure_matmul_gflops replaced by given speeds; counts its calls; a fresh cache folder."""
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path))
    state = {"calls": 0, "fp32": 100.0, "bf16": 100.0, "shapes": []}

    def measure(dtype, shape=runtime.MATMUL_SHAPE, repeats=5, other=None):
        assert (dtype, other) == (torch.float32, torch.bfloat16)       # interleaved in one call
        state["calls"] += shape == runtime.PROBE_SHAPE                  # a measurement starts with the probe
        state["shapes"].append(shape)
        return {torch.float32: state["fp32"], torch.bfloat16: state["bf16"]}
    monkeypatch.setattr(runtime, "measure_matmul_gflops", measure)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    return state


@pytest.mark.parametrize("bf16, chosen", [(370.0, "bf16"), (125.0, "bf16"), (124.0, "fp32"), (50.0, "fp32")])
def test_auto_follows_the_measured_speedup(fake_speeds, bf16, chosen):
    fake_speeds["bf16"] = bf16                              # fp32 at 100: the threshold is 1.25x
    notes: list[str] = []
    assert runtime.resolve_precision("auto", "cpu", notes) == chosen
    assert len(notes) == 1 and f"{bf16 / 100:.2f}x" in notes[0] and "measured now" in notes[0]
    # the model-shaped matmul only where the small probe does not already rule bf16 out (emulated bf16 is slow)
    full = [runtime.PROBE_SHAPE, runtime.MATMUL_SHAPE]
    assert fake_speeds["shapes"] == (full if bf16 >= 50.0 else full[:1])


def test_a_slow_probe_skips_the_full_measurement(fake_speeds, tmp_path):
    fake_speeds["bf16"] = 49.0
    assert runtime.resolve_precision("auto", "cpu") == "fp32" and fake_speeds["shapes"] == [runtime.PROBE_SHAPE]
    assert json.loads((tmp_path / "precision.json").read_text())[runtime.host_key()]["shape"] == [64, 768, 768]


def test_measured_once_per_host_and_thread_count(fake_speeds, tmp_path, monkeypatch):
    fake_speeds["bf16"] = 270.0
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    fake_speeds["bf16"] = 10.0                              # a second measurement would now say fp32
    notes: list[str] = []
    assert runtime.resolve_precision("auto", "cpu", notes) == "bf16" and fake_speeds["calls"] == 1
    assert "measured before" in notes[0]
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert cached[runtime.host_key()] == {"fp32_gflops": 100.0, "bf16_gflops": 270.0, "bf16_speedup": 2.7,
                                          "shape": list(runtime.MATMUL_SHAPE)}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)                  # another thread count is another measurement
        assert runtime.resolve_precision("auto", "cpu") == "fp32" and fake_speeds["calls"] == 2
    finally:
        torch.set_num_threads(threads)
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 2


def test_a_broken_cache_is_measured_again(fake_speeds, tmp_path):
    (tmp_path / "precision.json").write_text("{not json")
    fake_speeds["bf16"] = 300.0
    assert runtime.resolve_precision("auto", "cpu") == "bf16" and fake_speeds["calls"] == 1
    (tmp_path / "precision.json").write_text(json.dumps({runtime.host_key(): {"fp32_gflops": 1}}))
    assert runtime.resolve_precision("auto", "cpu") == "bf16" and fake_speeds["calls"] == 2


def test_without_onednn_auto_is_fp32(fake_speeds, monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    fake_speeds["bf16"] = 1000.0
    assert runtime.resolve_precision("auto", "cpu") == "fp32" and fake_speeds["calls"] == 0


def test_explicit_precisions_are_kept_and_fp16_needs_a_gpu(fake_speeds):
    assert runtime.resolve_precision("fp32", "cpu") == "fp32" and runtime.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        runtime.resolve_precision("fp16", "cpu")
    assert fake_speeds["calls"] == 0


def test_the_real_measurement():
    m, k, n = 64, 48, 32
    speeds = runtime.measure_matmul_gflops(torch.float32, (m, k, n), repeats=2, other=torch.bfloat16)
    assert set(speeds) == {torch.float32, torch.bfloat16} and all(v > 0 for v in speeds.values())
    # a matmul at least this fast cannot beat the time a 2*m*k*n-flop product takes; sanity of the units
    assert speeds[torch.float32] < 1e5


def test_training_says_what_auto_chose(tiny_model, thuc_dir, tmp_path, fake_speeds, capsys):
    from tricklab.cli import main
    fake_speeds["bf16"] = 50.0
    assert main(["train", "--data", str(thuc_dir), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                 "--set", "train.max_steps=1", "--set", "data.max_length=16", "--set", "train.checkpoint=false",
                 "--set", "train.precision=auto"]) == 0
    out = capsys.readouterr()
    assert "precision auto: fp32 (bf16 matmuls 0.50x fp32" in out.out + out.err
