"""Every run's model/ folder loads in transformers with its trained head and answers what tricklab's Predictor
answers (raw softmax / sigmoid / value, before the temperature), or transformers refuses it clearly; it never
loads a random head."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tricklab.inference import Predictor
from tricklab.model import build_classifier, load_model, save_model
from tricklab.registry import HEADS, POOLINGS

NAMES = ["sports", "finance", "game"]
TEXTS = ["球赛冠军", "股市A利率基金B银行", "玩家游戏版本电竞玩家", "的"]   # capitals: the run lower-cases them
SEQUENCE_HEADS = sorted(h for h in HEADS if HEADS[h].sequence)


def meta(task: str, pooling: str, head: str, lowercase: bool = True) -> dict:
    names = NAMES if task != "regression" else ["score"]
    return {"task": task, "num_labels": len(names), "labels": {"task": task, "names": names, "from_ids": False},
            "precision": "fp32",
            "model": {"pooling": pooling, "head": head, "head_args": {}, "dropout": 0.1, "backbone": "tiny"},
            "data": {"max_length": 16, "lowercase": lowercase, "pair": False}}


def saved(tiny_model: Path, folder: Path, pooling: str, head: str, task: str = "single_label") -> Path:
    torch.manual_seed(1)
    n = 1 if task == "regression" else len(NAMES)
    m, tok, _ = build_classifier(str(tiny_model), n, pooling, head, {}, 0.1)
    with torch.no_grad():                      # a head far from its initialisation: a random one cannot match it
        for p in m.classifier.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save_model(m.eval(), tok, folder, meta(task, pooling, head))
    return folder


def tricklab_logits(folder: Path) -> torch.Tensor:
    """(N, C) Predictor logits, one text at a time as the pipeline runs them (an LSTM's batched and single-row
    kernels differ by ~1e-5)."""
    m, tok, mt = load_model(folder)
    p = Predictor(m, tok, mt, device="cpu", precision="fp32")
    return torch.cat([torch.tensor(p.logits([t])) for t in TEXTS])


# linear with every pooling; the sequence heads read the token states and never the pooling (Classifier.pool is
# None for them), each with another pooling name to show that any is fine
CASES = [(p, "linear") for p in sorted(POOLINGS)] + [(p, h) for p, h in zip(["pooler", "cls", "last4_mean", "max"],
                                                                              SEQUENCE_HEADS)]


@pytest.mark.parametrize("pooling,head", CASES)
def test_pipeline_equals_predictor_for_every_head_and_pooling(tiny_model, tmp_path, pooling, head):
    from transformers import pipeline

    folder = saved(tiny_model, tmp_path / "model", pooling, head)
    cfg = json.loads((folder / "config.json").read_text())
    if pooling == "pooler" and head == "linear":       # the one standard transformers class
        assert cfg["architectures"] == ["BertForSequenceClassification"] and "auto_map" not in cfg
    else:
        assert cfg["model_type"] == "tricklab" and cfg["architectures"] == ["TrickLabForSequenceClassification"]
        assert (folder / "modeling_tricklab.py").is_file()
    clf = pipeline("text-classification", model=str(folder), device="cpu", trust_remote_code=True)
    ours = tricklab_logits(folder).softmax(-1)                                   # (N, C) raw softmax
    for row, answer in zip(ours, clf(TEXTS, top_k=None)):
        got = {d["label"]: d["score"] for d in answer}
        assert [got[n] for n in NAMES] == pytest.approx(row.tolist(), abs=1e-5)


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_auto_model_logits_equal_predictor_for_other_tasks(tiny_model, tmp_path, task):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = saved(tiny_model, tmp_path / "model", "mean", "rcnn", task)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        lg = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in TEXTS])
    torch.testing.assert_close(lg, tricklab_logits(folder), atol=1e-5, rtol=1e-4)
    assert model.config.problem_type == {"multi_label": "multi_label_classification", "regression": "regression"}[task]


REFUSALS = r"""
import importlib.abc, sys
from transformers import pipeline
folder = sys.argv[1]
try:
    pipeline("text-classification", model=folder, device="cpu")
    print("LOADED without trust_remote_code")
except ValueError as e:
    print("\nREFUSED:", " ".join(str(e).split()))

class NoTricklab(importlib.abc.MetaPathFinder):   # as on a machine where tricklab is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "tricklab" or name.startswith("tricklab."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTricklab())
try:
    pipeline("text-classification", model=folder, device="cpu", trust_remote_code=True)
    print("LOADED without tricklab")
except ImportError as e:
    print("\nREFUSED:", " ".join(str(e).split()))
"""


def test_without_trust_remote_code_or_tricklab_transformers_refuses(tiny_model, tmp_path):
    folder = saved(tiny_model, tmp_path / "model", "mean", "cnn")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    r = subprocess.run([sys.executable, "-c", REFUSALS, str(folder)], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=300)
    lines = [x for x in r.stdout.splitlines() if x.startswith(("REFUSED", "LOADED"))]
    assert len(lines) == 2, r.stdout + r.stderr[-2000:]
    assert lines[0].startswith("REFUSED") and "trust_remote_code=True" in lines[0]
    assert lines[1].startswith("REFUSED") and "pip install tricklab" in lines[1]


@pytest.mark.parametrize("lowercase", [True, False])
def test_saved_tokenizer_lowercases_exactly_when_the_run_does(tiny_model, tmp_path, lowercase):
    """transformers gets the tokens tricklab feeds the model: capitals lower-cased (the tiny vocabulary has
    lower-case letters only, as bert-base-chinese's), at most data.max_length tokens."""
    from transformers import AutoTokenizer

    m, tok, _ = build_classifier(str(tiny_model), 3, "mean", "linear", {}, 0.1)
    save_model(m, tok, tmp_path / "model", meta("single_label", "mean", "linear", lowercase=lowercase))
    saved_tok = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    assert saved_tok.tokenize("球A赛b") == (["球", "a", "赛", "b"] if lowercase else ["球", "[UNK]", "赛", "b"])
    assert saved_tok.model_max_length == 16
