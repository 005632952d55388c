"""model/README.md: a Hugging Face model card built from the run folder (metadata parsed back with huggingface_hub,
numbers equal to metrics.json); base model and licence lookup; `tricklab push` up to the upload call (no
network: HfApi is replaced by a recorder)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import write_thucnews
from tricklab.cli import main as cli_main
from tricklab.model.resolve import base_model_card

TINY = ["--set", "train.batch_size=16", "--set", "train.lr=2e-3", "--set", "train.precision=fp32",
        "--set", "data.max_length=24", "--set", "train.warmup_ratio=0", "--quiet"]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("card")
    data = write_thucnews(tmp / "headlines", n_train=60, n_dev=15)
    out = tmp / "run"
    assert cli_main(["train", "--data", str(data), "--out", str(out), "--model", str(tiny_model), "--set",
                     "model.head=cnn", "--trick", "ema:decay=0.9", "--set", "train.scheduler=cosine",
                     "--set", "train.max_steps=4", *TINY, "--set", "train.lr=1e-4"]) == 0   # auto: BertAdam's steps
    return out


def test_model_card_metadata_and_numbers(run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(run / "model" / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    d = card.data
    assert d.pipeline_tag == "text-classification" and d.language == ["zh"] and d.datasets == ["headlines"]
    assert d.metrics == ["accuracy", "f1"] and d.library_name == "transformers" and "ema" in d.tags
    assert d.base_model is None and d.license is None                 # a local folder: unknown, and said so
    got = {e.metric_name: e.metric_value for e in d.eval_results}
    assert got == {"accuracy": round(metrics["test"]["accuracy"], 4), "macro_f1": round(metrics["test"]["macro_f1"], 4)}
    assert {e.dataset_split for e in d.eval_results} == {"test"}
    text = card.text
    assert "| tricks | `ema` (decay 0.9) |" in text and "`cosine`" in text and "head `cnn`" in text
    assert "| optimizer | AdamW with BertAdam's steps (no bias correction), lr 0.0001," in text   # as resolved (auto)
    for name, v in metrics["test"]["per_class"].items():
        assert f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |" in text
    assert f"T = {metrics['test']['temperature']:.4f}" in text
    assert f"| test | {metrics['test']['n']} | {metrics['test']['accuracy']:.4f} |" in text
    assert "trust_remote_code=True" in text and "licence is not known" in text
    assert "```bash\ntricklab train --data " in text and "--trick ema:decay=0.9" in text   # the command as typed


def test_optimizer_row_from_the_run_record_else_the_config():
    from tricklab.evaluation.model_card import optimizer

    bert = "AdamW with BertAdam's steps (no bias correction)"
    assert optimizer({"adam_bias_correction": "auto"}, {"optimizer": bert}) == bert
    assert optimizer({"adam_bias_correction": "false"}, {"optimizer": "AdamW"}) == "AdamW"
    assert [optimizer({"adam_bias_correction": v}, {}) for v in (False, "false", True, "true", "auto")] == \
        [bert, bert, "AdamW", "AdamW", "AdamW"]      # runs from before the record: an old bool, or the string


def test_base_model_and_licence(tmp_path):
    m3e = base_model_card("m3e-small")
    assert m3e["base_model"] == "moka-ai/m3e-small" and m3e["license"] == "other" and "non-commercial" in m3e["license_note"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", m3e["license_name"])   # the Hub wants an id here
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [zh]\n---\n# an encoder\n")
    assert base_model_card(str(folder)) == {"license": "apache-2.0"}   # a local folder has no hub id
    assert base_model_card("someone/some-encoder")["base_model"] == "someone/some-encoder"


class Recorder:
    """Stands in for huggingface_hub.HfApi: records the calls, sends nothing."""
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, **kw):
        Recorder.calls.append(("create_repo", kw, self.token))
        return f"https://huggingface.co/{kw['repo_id']}"

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        Recorder.calls.append(("upload_folder", kw, sorted(p.name for p in folder.iterdir())))


def test_push_uploads_the_model_folder_with_its_card(run, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    Recorder.calls = []
    (run / "model" / "README.md").unlink()                             # written again from the run folder
    # as an older tricklab saved a cnn-head folder: the encoder's config with labels (a random head in transformers)
    from transformers import AutoConfig

    enc = json.loads((run / "model" / "config.json").read_text())["encoder"]
    old = AutoConfig.for_model(enc.pop("model_type"), **enc).to_dict() | {"id2label": {"0": "sports"}}
    (run / "model" / "config.json").write_text(json.dumps(old))
    (run / "model" / "modeling_tricklab.py").unlink()
    assert cli_main(["push", "--run", str(run), "--repo", "me/tiny-cnn", "--private", "--token", "hf_x"]) == 0
    (c_name, create, token), (u_name, upload, files) = Recorder.calls
    assert c_name == "create_repo" and create == {"repo_id": "me/tiny-cnn", "private": True, "exist_ok": True,
                                                  "repo_type": "model"} and token == "hf_x"
    assert u_name == "upload_folder" and upload["folder_path"] == str(run / "model") and upload["repo_id"] == "me/tiny-cnn"
    assert {"README.md", "config.json", "model.safetensors", "modeling_tricklab.py", "tricklab.json",
            "tokenizer.json"} <= set(files)
    assert yaml.safe_load((run / "model" / "README.md").read_text().split("---")[1])["pipeline_tag"] == "text-classification"
    assert json.loads((run / "model" / "config.json").read_text())["model_type"] == "tricklab"   # upgraded first
    out = capsys.readouterr().out
    assert "rewritten so that transformers loads the trained head" in out and "pushed" in out


def test_push_errors_are_one_line(run, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    assert cli_main(["push", "--run", str(run), "--repo", "not a repo id"]) == 2
    assert "not a valid repo id" in capsys.readouterr().err
    assert cli_main(["push", "--run", str(tmp_path), "--repo", "me/x"]) == 2
    assert "is not a finished tricklab model folder" in capsys.readouterr().err

    class Offline(Recorder):
        def create_repo(self, **kw):
            raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    assert cli_main(["push", "--run", str(run), "--repo", "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: push to me/x: ConnectionError: no network; fix:") and "Traceback" not in err


def test_script_counts_and_language():
    from tricklab.evaluation.model_card import detect_language, script_counts

    # letters only, by script; digits, spaces and punctuation are not counted; 200 characters a text at most
    assert script_counts(["球赛 abc, 12!", "ひらカタ 한국"]) == {"zh": 2, "ja": 4, "ko": 2, "en": 3}
    assert script_counts(["a" * 500]) == {"zh": 0, "ja": 0, "ko": 0, "en": 200}
    assert script_counts(["球"] * 2000 + ["a"] * 10) == {"zh": 2000, "ja": 0, "ko": 0, "en": 0}   # first 2,000 texts
    assert detect_language(["球赛冠军"] * 3 + ["the match"] * 1) == ["zh", "en"]   # 12 Han, 8 Latin: both >= 30%
    assert detect_language(["球赛冠军"] * 9 + ["ab"]) == ["zh"]
    assert detect_language(["漢字とかな"]) == ["ja"] and detect_language(["12 34"]) == []
