"""End to end on a tiny random BERT: train -> run folder -> evaluate -> predict; every task; pairs;
resume after SIGKILL; two processes; CLI errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_cfg, write_thucnews
from tricklab.cli import main as cli_main
from tricklab.inference import Predictor
from tricklab.training import train

ROOT = Path(__file__).resolve().parents[1]


def read_log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_single_label_end_to_end(tiny_model, thuc_dir, tmp_path, capsys):
    run = tmp_path / "run"
    m = train(tiny_cfg(tiny_model, "train.epochs=4", "train.eval_every=5"), thuc_dir, out=run, progress=False)
    assert m["accuracy"] > 0.6, m  # 3 learnable classes; chance is 0.33
    recipe = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("recipe: ")]
    assert len(recipe) == 1 and f"{tiny_model}, pooler pooling, linear head | length 24 | batch 16 | lr 2e-3, AdamW steps (auto)" in recipe[0]
    assert "| 4 epochs = 32 steps | best dev accuracy (every 5 steps) kept" in recipe[0], recipe
    assert 0 <= m["macro_f1"] <= 1 and set(m["per_class"]) == {"sports", "finance", "game"}
    for f in ("config.yaml", "log.jsonl", "metrics.json", "confusion_matrix.png", "model/model.safetensors",
              "model/tricklab.json", "model/config.json", "model/tokenizer.json"):
        assert (run / f).is_file(), f
    log = read_log(run)
    assert any("loss/ce" in r for r in log) and any("dev/accuracy" in r for r in log)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"] and saved["evaluated_on"] == "test"
    # evaluate and predict through the CLI
    assert cli_main(["evaluate", "--run", str(run), "--data", str(thuc_dir / "test.txt")]) == 0
    ev = json.loads((run / "eval_test.json").read_text())
    assert ev["accuracy"] == pytest.approx(m["accuracy"], abs=1e-9)
    capsys.readouterr()
    inp = tmp_path / "in.txt"
    inp.write_text("球赛冠军队员\n股市银行基金利率\n")
    assert cli_main(["predict", "--run", str(run), str(inp), "--top-k", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["球赛冠军队员", "股市银行基金利率"]
    assert all(len(x["top_k"]) == 2 and x["label"] == x["top_k"][0][0] for x in lines)
    api = Predictor.from_run(run).predict(["球赛冠军队员", "股市银行基金利率"], top_k=2)
    assert [a["label"] for a in api] == [x["label"] for x in lines]
    assert api[0]["score"] == pytest.approx(lines[0]["score"], abs=1e-6)


def test_recipe_line_names_every_choice():
    from types import SimpleNamespace

    from tricklab.config import load_config
    from tricklab.training.loop import num, recipe_line

    def line(*sets, steps=90, metric="macro_f1"):
        return recipe_line(SimpleNamespace(cfg=load_config(None, list(sets)), total_steps=steps, metric=metric,
                                           raw_model=SimpleNamespace(encoder=None)))

    assert line("train.warmup_steps=7", "train.lr=3e-5", "model.pooling=mean", "model.head=cnn",
                "train.scheduler=cosine", "data.max_length=64") == (
        "recipe: m3e-small, mean pooling, cnn head | length 64 | batch 32 | lr 3e-5, BertAdam steps (auto: no bias "
        "correction), cosine schedule, warm-up 7 steps | 3 epochs = 90 steps | best dev macro_f1 (every epoch) kept")
    assert "| batch 32 | lr 5e-5, AdamW steps, linear schedule, warm-up 10% | max_steps 12 | best dev accuracy" in \
        line("train.adam_bias_correction=true", "train.max_steps=12", "train.warmup_ratio=0.1", steps=12, metric="accuracy")
    assert "| lr 2e-4, AdamW steps (auto), linear schedule, warm-up 5% | 1 epoch = 5 steps |" in \
        line("train.lr=2e-4", "train.epochs=1", steps=5)             # auto above 1e-4: AdamW's steps
    assert "| 0.1 epochs = 1 step |" in line("train.epochs=0.1", steps=1)
    assert "| batch 16 x 4 accumulation | lr 5e-5 (head 1e-3), AdamW steps (auto), " in \
        line("train.batch_size=16", "train.grad_accum=4", "train.head_lr=1e-3")   # auto: the head's lr counts
    assert line("train.strategy=setfit", "model.pooling=mean", "train.batch_size=16", "train.epochs=1", steps=40) == (
        "recipe: SetFit on m3e-small, mean pooling | length 128 | batch 16 pairs | lr 5e-5, AdamW steps (auto), linear "
        "schedule, warm-up 5% | 1 epoch = 40 steps | then a logistic-regression head; dev evaluated once at the end")
    assert [num(x) for x in (5e-5, 1e-4, 3.5e-5, 2e-3, 0.05, 1.0, 0)] == ["5e-5", "1e-4", "3.5e-5", "2e-3", "0.05", "1", "0"]


def test_predict_preserves_input_order(tiny_model, thuc_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(tiny_model, "train.epochs=1"), thuc_dir, out=run, progress=False)
    p = Predictor.from_run(run, batch_size=2)
    texts = ["球", "股市银行基金利率玩家游戏", "赛冠", "玩家游戏版本"]
    together = p.predict(texts, top_k=3)
    one_by_one = [p.predict([t], top_k=3)[0] for t in texts]
    for a, b in zip(together, one_by_one):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


@pytest.mark.parametrize("head", ["cnn", "rnn", "rcnn", "dpcnn"])
def test_sequence_heads_train(tiny_model, thuc_dir, tmp_path, head):
    m = train(tiny_cfg(tiny_model, f"model.head={head}", "train.epochs=1"), thuc_dir, out=tmp_path / head, progress=False)
    assert 0 <= m["accuracy"] <= 1


def test_multi_label_task(tiny_model, tmp_path):
    import random

    from conftest import make_text

    rng = random.Random(1)
    lines = []
    for i in range(90):
        labs = [["sports"], ["finance"], ["sports", "game"]][i % 3]
        lines.append("|".join(labs) + "\t" + "".join(make_text(rng, lab) for lab in labs))
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "train.tsv").write_text("\n".join(f"{t.split(chr(9))[1]}\t{t.split(chr(9))[0]}" for t in lines))
    m = train(tiny_cfg(tiny_model, "train.epochs=3"), tmp_path / "ml", out=tmp_path / "run", progress=False)
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(m) and m["evaluated_on"] == "dev"
    out = Predictor.from_run(tmp_path / "run").predict(["球赛冠军"], top_k=2)[0]
    assert set(out) == {"labels", "scores", "top_k"}
    assert any("loss/bce" in r for r in read_log(tmp_path / "run"))


def test_regression_pairs(tiny_model, tmp_path):
    import random

    rng = random.Random(2)
    rows = []
    for i in range(80):
        a = "".join(rng.choice("球赛队员股市银行") for _ in range(5))
        b = "".join(rng.choice("球赛队员股市银行") for _ in range(5))
        rows.append(f"{a}\t{b}\t{len(set(a) & set(b)) / 2.5:.2f}")
    (tmp_path / "sts.tsv").write_text("\n".join(rows))
    m = train(tiny_cfg(tiny_model, "task=regression", "train.epochs=2"), tmp_path / "sts.tsv", out=tmp_path / "run",
              progress=False)
    assert {"mse", "pearson", "spearman"} <= set(m)
    p = Predictor.from_run(tmp_path / "run")
    assert p.meta["data"]["pair"] and isinstance(p.predict([("球赛", "队员")])[0]["score"], float)
    assert any("loss/mse" in r for r in read_log(tmp_path / "run"))


def test_lowercase_auto_detection(tiny_model):
    from transformers import AutoTokenizer

    from tricklab.data import needs_lowercase

    assert needs_lowercase(AutoTokenizer.from_pretrained(str(tiny_model)))  # vocab holds a-z only


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tricklab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, **kw)


def tiny_args(model: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--set", "train.batch_size=8", "--set", "train.lr=2e-3", "--set", "train.precision=fp32",
            "--set", "data.max_length=24", "--set", "train.log_every=1", "--set", "train.warmup_ratio=0", "--quiet", *extra]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_model, tmp_path):
    data = write_thucnews(tmp_path / "d", n_train=80, n_dev=20)
    # a schedule with warm-up and restarts: the resumed run must continue it exactly (scheduler state_dict)
    common = tiny_args(tiny_model, "--set", "train.epochs=3", "--set", "train.eval_every=4",
                       "--set", "train.scheduler=cosine_with_restarts", "--set", "train.scheduler_args={num_cycles: 2}",
                       "--set", "train.warmup_steps=4")
    ref = _cli("train", "--data", str(data), "--out", str(tmp_path / "ref"), *common)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    # the same run, killed with SIGKILL once a checkpoint past the first epoch exists, then resumed
    run = tmp_path / "run"
    for _ in range(3):       # the kill must land between steps 12 and 30: a stalled machine may miss it, so retry
        shutil.rmtree(run, ignore_errors=True)
        p = _cli("train", "--data", str(data), "--out", str(run), *common)
        deadline = time.time() + 300
        while time.time() < deadline:
            latest = run / "checkpoints" / "latest"
            if latest.exists() and int(latest.read_text().split("-")[1]) >= 12:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = int((run / "checkpoints" / "latest").read_text().split("-")[1])
        if killed_at < 30:
            break
    assert killed_at < 30, "the run finished before it could be killed, 3 times"
    r = _cli("train", "--data", str(data), "--out", str(run), "--resume", "--quiet")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    ref_log = {x["step"]: x for x in read_log(tmp_path / "ref") if "loss" in x}
    run_log = {x["step"]: x for x in read_log(run) if "loss" in x}  # resumed steps overwrite replayed ones
    assert max(run_log) == max(ref_log) == 30  # 80 examples / batch 8 x 3 epochs
    for step in range(killed_at + 1, 31):
        assert run_log[step]["loss"] == pytest.approx(ref_log[step]["loss"], rel=1e-4, abs=1e-6), step
        assert run_log[step]["lr"] == ref_log[step]["lr"], step
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["accuracy"] == pytest.approx(a["accuracy"]) and b["steps"] == 30


def test_two_processes_with_accelerate_launch(tiny_model, tmp_path):
    data = write_thucnews(tmp_path / "d", n_train=96, n_dev=24)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # `--multi_gpu` selects accelerate's torchrun launcher; with no GPU the processes use gloo on the CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tricklab.cli", "train", "--data", str(data),
           "--out", str(tmp_path / "run"), *tiny_args(tiny_model, "--set", "train.epochs=8", "--set", "train.batch_size=16",
                                                    "--set", "train.lr=3e-3")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout + r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 48 and m["accuracy"] > 0.6  # 96 examples / global batch 16 = 6 steps per epoch
    losses = [x["loss"] for x in read_log(tmp_path / "run") if "loss" in x]
    assert sum(losses[-6:]) / 6 < 0.8 * sum(losses[:6]) / 6  # the shared model learned


@pytest.mark.parametrize("files,expected", [
    ({"train.txt": "好\t0\n坏\t3\n", "class.txt": "a\nb"}, "train.txt line 2: label id 3 is out of range"),
    ({"train.txt": "好\t0\n坏\t1\n", "dev.txt": "中\t0\t1\n"}, "dev.txt line 1: expected 2 tab-separated columns"),
])
def test_cli_data_errors_exit_2_without_traceback(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    p = _cli("train", "--data", str(tmp_path), "--model", "/nonexistent/model", "--out", str(tmp_path / "r"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_cli_config_error_exit_2(tmp_path):
    p = _cli("train", "--data", str(tmp_path), "--set", "train.bach_size=3")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "did you mean 'train.batch_size'" in err and "Traceback" not in err


def test_soft_label_column_feeds_distillation(tiny_model, tmp_path):
    import random

    from conftest import make_text

    rng = random.Random(3)
    names = ["sports", "finance", "game"]
    lines = ["text\tlabel\tsoft"]
    for i in range(60):
        y = i % 3
        soft = [0.1, 0.1, 0.1]
        soft[y] = 0.8
        lines.append(f"{make_text(rng, names[y])}\t{names[y]}\t{json.dumps(soft)}")
    (tmp_path / "train.tsv").write_text("\n".join(lines))
    m = train(tiny_cfg(tiny_model, "train.epochs=1", "data.soft_label_column=soft", "loss.name=kd",
                       "loss.soft_labels=probs"), tmp_path / "train.tsv",
              out=tmp_path / "run", progress=False)
    assert 0 <= m["accuracy"] <= 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(lines[:3] + [lines[3].rsplit("\t", 1)[0] + "\t[0.5, 0.5]"]))
    from tricklab.config import load_config
    from tricklab.data import load_data
    from tricklab.errors import DataError

    with pytest.raises(DataError, match=r"bad.tsv line 4: soft labels '\[0.5, 0.5\]' must be 3 finite numbers"):
        load_data(load_config(None, ["data.soft_label_column=soft"]), bad)


def test_metric_must_belong_to_the_task(tiny_model, thuc_dir, tmp_path):
    from tricklab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.metric='pearson' is not a single_label metric"):
        train(tiny_cfg(tiny_model, "train.metric=pearson"), thuc_dir, out=tmp_path / "r", progress=False)


def test_max_length_beyond_the_encoders_positions_stops_before_training(tiny_model, thuc_dir, tmp_path, capsys):
    """The tiny encoder has 64 positions: a longer max_length is one line with the long-text fix (not a shape error
    from the first forward pass), and the folder is no half-made run that refuses the next try."""
    out = tmp_path / "r"
    args = ["train", "--data", str(thuc_dir), "--model", str(tiny_model), "--out", str(out), "--set",
            "train.precision=fp32", "--set", "train.max_steps=2", "--quiet"]
    assert cli_main([*args, "--set", "data.max_length=65"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.max_length=65" in err and "reads at most 64 tokens" in err
    assert "--set data.max_length=64" in err and "data.truncation=chunk" in err
    assert cli_main([*args, "--set", "data.max_length=64"]) == 0       # at the limit: trains, in the same folder
    capsys.readouterr()
    assert cli_main([*args, "--overwrite", "--set", "data.max_length=65"]) == 2     # a refused --overwrite ...
    assert (out / "metrics.json").is_file() and (out / "model" / "tricklab.json").is_file()   # ... keeps the old run


def test_position_limit_is_the_position_table_of_the_encoder():
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    from tricklab.training.setup import position_limit

    small = dict(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    bert = BertModel(BertConfig(max_position_embeddings=40, **small))
    roberta = RobertaModel(RobertaConfig(max_position_embeddings=42, pad_token_id=1, **small))
    assert position_limit(SimpleNamespace(encoder=bert)) == 40
    assert position_limit(SimpleNamespace(encoder=roberta)) == 40    # positions start after padding_idx 1
    assert position_limit(SimpleNamespace(encoder=SimpleNamespace(embeddings=SimpleNamespace()))) is None  # relative


def test_reading_notes_name_unknown_tokens_and_latin_text_for_the_chinese_default(tiny_model):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from tricklab.config import load_config
    from tricklab.training.setup import reading_notes

    tok = AutoTokenizer.from_pretrained(str(tiny_model))

    def notes(texts, model="m3e-small", pair=False):
        enc = _Enc([tok(t, truncation=True, max_length=128)["input_ids"] for t in texts])
        bundle = SimpleNamespace(train=SimpleNamespace(rows=[SimpleNamespace(text=t) for t in texts]), is_pair=pair)
        return reading_notes(load_config(None, [f"model.name={model}"]), bundle, enc, tok)

    assert notes(["球赛队员冠军", "股市银行利率"]) == ([], [])                  # in the vocabulary, Han script
    texts = ["球赛队员冠军", "我们今天去看电影吧", "苹果香蕉葡萄"]
    n, w = notes(texts, model=str(tiny_model))
    chars = "".join(texts)                              # one token per character; [CLS]/[SEP] not counted
    share = sum(c not in tok.get_vocab() for c in chars) / len(chars)
    assert 0.5 < share < 0.7 and n == [] and len(w) == 1 and "--model" in w[0]
    assert w[0].startswith(f"{share:.0%} of the train tokens are [UNK]")     # a warning: announce adds `warning: `
    n, _ = notes(["the match was won", "stocks fell today"])      # (whole words are [UNK] to the tiny vocabulary)
    assert n == ["the text is in Latin script, and m3e-small (the default) is a Chinese encoder that reads Latin "
                 "words as word pieces; for English: --model minilm-en (packaged), or any English encoder"]
    assert notes(["the match was won"], model=str(tiny_model))[0] == []     # another model: no language advice
    assert notes(["球赛的match在Python的requests库里"])[0] == []             # Chinese with English terms: no advice
    cut, _ = notes(["球赛" * 80, "股市" * 80, "玩家", "银行"])                 # 2 of 4 reach max_length (128)
    assert len(cut) == 1 and cut[0].startswith("50% of the train texts reach data.max_length (128 tokens)")
    assert "head_tail / chunk" in cut[0] and "head_tail" not in notes(["球赛" * 80, "玩家"], pair=True)[0][0]
    assert notes(["球赛" * 80] + ["玩家"] * 10) == ([], [])                   # 1 of 11: under a tenth, no note
    # evenly spaced rows, not the first 2,000: a file sorted long-first is not all long
    assert notes(["球赛" * 80] * 2000 + ["玩家"] * 8000)[0][0].startswith("20% of the train texts")
    # the language check samples the same way: 1,000 Chinese rows first, then 9,000 English ones read as English
    assert notes(["球赛冠军"] * 1000 + ["the match was won"] * 9000)[0][0].startswith("the text is in Latin script")
    assert notes(["the match was won"] * 5000 + ["球赛冠军"] * 5000)[0] == []      # half Han: not Latin-only


class _Enc:
    """Token ids per row, as Encoded holds them."""

    def __init__(self, ids):
        self.input_ids = ids

    def __len__(self):
        return len(self.input_ids)


def test_reading_notes_and_warnings_reach_the_run(tiny_model, tmp_path, capsys):
    data = write_thucnews(tmp_path / "d", n_train=24, n_dev=6)
    with open(data / "train.txt", "a", encoding="utf-8") as f:
        f.write("".join(f"苹果香蕉葡萄橘子{i}\t0\n" for i in range(24)))        # half the rows: unknown characters
    train(tiny_cfg(tiny_model, "train.max_steps=1", "data.max_length=8"), data, out=tmp_path / "r", progress=False)
    out = capsys.readouterr().out
    assert "note: " in out and "of the train texts reach data.max_length (8 tokens)" in out
    assert "warning: " in out and "of the train tokens are [UNK] for this tokenizer" in out
    assert "note: warning" not in out


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_accelerate_setups_are_refused_before_training(tmp_path, monkeypatch, kind):
    """Weights are saved from rank 0's whole model: under FSDP or DeepSpeed that would save a shard, so such an
    accelerate config stops at once, naming the fix."""
    from accelerate.utils import DistributedType

    import importlib

    from tricklab.config import Config
    from tricklab.errors import ConfigError

    setup = importlib.import_module("tricklab.training.setup")

    class Sharded:
        def __init__(self, **kw):
            self.distributed_type = DistributedType[kind]

    monkeypatch.setattr(setup, "Accelerator", Sharded)
    with pytest.raises(ConfigError, match=f"accelerate is configured for {kind}; tricklab trains data-parallel"):
        setup.make_accelerator(Config(), tmp_path, [])
    monkeypatch.setattr(Sharded, "__init__", lambda self, **kw: setattr(self, "distributed_type",
                                                                        DistributedType.MULTI_CPU))
    assert setup.make_accelerator(Config(), tmp_path, [])[0].distributed_type == DistributedType.MULTI_CPU
