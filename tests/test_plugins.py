"""Plugins: --plugin modules (the README's custom trick, run as printed) and `tricklab.plugins` entry points
register losses, tricks, heads or poolings for train, compare (in process and as subprocesses), predict and
transformers; clear errors for missing or broken plugins."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_cfg, write_thucnews
from tricklab import registry
from tricklab.cli import main as cli_main
from tricklab.errors import ConfigError
from tricklab.registry import HEADS, LOSSES, POOLINGS, TRICKS, load_plugins

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.batch_size=16", "--set", "train.lr=2e-3", "--set", "train.precision=fp32",
        "--set", "data.max_length=24", "--set", "train.log_every=1", "--set", "train.warmup_ratio=0", "--quiet"]

HEAD_PLUGIN = '''
import torch
from torch import nn
from tricklab.registry import HEADS


@HEADS.register("mlp2")
class MLP2(nn.Module):
    """pooled (B, P) -> tanh hidden -> logits (B, C)."""
    sequence = False

    def __init__(self, in_dim, num_labels, dropout=0.1, hidden=16):
        super().__init__()
        self.hidden, self.output_layer, self.feature_dim = nn.Linear(in_dim, hidden), nn.Linear(hidden, num_labels), hidden

    def forward(self, x, mask=None):
        h = torch.tanh(self.hidden(x))
        return self.output_layer(h), h
'''


def readme_trick() -> str:
    """The custom-trick example of README.md, as printed there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(\s*# my_tricks\.py.*?)```", text, re.S).group(1)
    return "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines()) + "\n"


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A folder with plugin modules on sys.path (and as the working directory); the registries, the loaded
    plugins and sys.modules are restored afterwards, so no other test sees these names."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_tricks.py").write_text(readme_trick(), encoding="utf-8")
    (folder / "my_heads.py").write_text(HEAD_PLUGIN, encoding="utf-8")
    (folder / "broken_plugin.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    import tricklab.losses  # noqa: F401  (the built-in names register before the snapshot)
    import tricklab.model  # noqa: F401
    import tricklab.tricks  # noqa: F401

    saved = [(r, dict(r)) for r in (LOSSES, TRICKS, HEADS, POOLINGS)]
    loaded = set(registry._loaded)
    yield folder
    for r, snapshot in saved:
        r.clear()
        r.update(snapshot)
    registry._loaded.clear()
    registry._loaded.update(loaded)
    for name in ("my_tricks", "my_heads", "broken_plugin", "ep_plugin"):
        sys.modules.pop(name, None)
    sys.path[:] = [p for p in sys.path if p not in (str(folder), os.getcwd())]


def test_readme_trick_is_short_and_trains_from_the_cli(plugins, tiny_model, tmp_path, capsys):
    assert len(readme_trick().strip().splitlines()) < 30
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    # without the plugin the trick is unknown, with a clear error (exit status 2)
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "no"), "--model", str(tiny_model),
                     "--trick", "confidence_penalty:beta=0.2", *TINY]) == 2
    assert "unknown trick 'confidence_penalty'" in capsys.readouterr().err
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(data), "--out", str(run), "--model", str(tiny_model), "--plugin",
                     "my_tricks", "--trick", "confidence_penalty:beta=0.2", "--set", "train.max_steps=3", *TINY]) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    pens = [r["loss/confidence_penalty"] for r in log if "loss/confidence_penalty" in r]
    # -0.2 x the mean entropy of a 3-way softmax: in [-0.2 ln 3, 0), near the top at the start
    assert len(pens) == 3 and all(-0.2 * 1.0987 <= p < 0 for p in pens) and pens[0] < -0.2
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == ["my_tricks"]
    assert json.loads((run / "model" / "tricklab.json").read_text())["plugins"] == ["my_tricks"]


PREDICT_ELSEWHERE = r"""
import json, sys
import torch
from transformers import pipeline
from tricklab.inference import Predictor
run = sys.argv[1]
p = Predictor.from_run(run, precision="fp32")          # no --plugin: the model meta names it
texts = ["球赛冠军", "股市利率基金"]
probs = torch.tensor(p.logits(texts)).softmax(-1)
clf = pipeline("text-classification", model=run + "/model", trust_remote_code=True, device="cpu")
got = [{d["label"]: d["score"] for d in out} for out in clf(texts, top_k=None)]
print(json.dumps({"head": type(p.model.classifier).__name__, "ours": probs.tolist(),
                  "hf": [[g[n] for n in p.labels] for g in got]}))
"""


def test_a_plugin_head_predicts_in_a_fresh_process_and_in_transformers(plugins, tiny_model, thuc_dir, tmp_path):
    from tricklab.training import train

    run = tmp_path / "run"
    cfg = tiny_cfg(tiny_model, "model.head=mlp2", "model.pooling=mean", "train.max_steps=3", "plugins=[my_heads]")
    train(cfg, thuc_dir, out=run, progress=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    r = subprocess.run([sys.executable, "-c", PREDICT_ELSEWHERE, str(run)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    found = [x for x in r.stdout.splitlines() if x.startswith('{"head"')]
    assert found, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(found[0])
    assert res["head"] == "MLP2"
    for ours, hf in zip(res["ours"], res["hf"]):
        assert hf == pytest.approx(ours, abs=1e-5)


def test_compare_validates_with_plugins_and_its_subprocesses_import_them(plugins, tiny_model, tmp_path, capsys):
    """--jobs 2: every run is a `tricklab train` subprocess given only its variant.yaml, whose `plugins:` brings
    the trick back (the grid's validation ran in this process, after --plugin)."""
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    vf = tmp_path / "v.yaml"
    vf.write_text("cp: {tricks: [{name: confidence_penalty, beta: 0.1}]}\n")
    out = tmp_path / "grid"
    code = cli_main(["compare", "--data", str(data), "--plugin", "my_tricks", "--variants-file", str(vf),
                     "--variants", "baseline,cp", "--seeds", "1", "--out", str(out), "--jobs", "2",
                     "--model", str(tiny_model), "--set", "train.max_steps=2", *TINY])
    assert code == 0, capsys.readouterr()
    assert yaml.safe_load((out / "cp" / "seed1" / "variant.yaml").read_text())["plugins"] == ["my_tricks"]
    log = [json.loads(x) for x in (out / "cp" / "seed1" / "log.jsonl").read_text().splitlines()]
    assert any("loss/confidence_penalty" in r for r in log)


def test_entry_point_plugins_load_without_a_flag(plugins, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "ep_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "ep_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (site / "ep_plugin-0.1.dist-info" / "entry_points.txt").write_text("[tricklab.plugins]\nmine = ep_plugin\n")
    (site / "ep_plugin.py").write_text(
        "from tricklab.registry import POOLINGS\nfrom tricklab.model.pooling import MeanPooling\n"
        "POOLINGS.register('ep_mean')(type('EpMean', (MeanPooling,), {}))\n")
    monkeypatch.syspath_prepend(str(site))
    assert "ep_mean" not in POOLINGS
    assert "ep_plugin" in load_plugins()
    assert "ep_mean" in POOLINGS and load_plugins() == []                 # once per process


def test_plugin_errors_name_the_module(plugins):
    with pytest.raises(ConfigError, match=r"--plugin no_such_plugin: no module named 'no_such_plugin'; fix: give an "
                                          r"importable module"):
        load_plugins(["no_such_plugin"])
    with pytest.raises(ConfigError, match=r"--plugin broken_plugin: importing 'broken_plugin' failed: RuntimeError: boom"):
        load_plugins(["broken_plugin"])
    with pytest.raises(ConfigError, match=r"config plugins: expected a list of module names"):
        from tricklab.config import load_config

        load_config(None, ["plugins=[1]"])
