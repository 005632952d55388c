"""Shared fixtures: a tiny random BERT (hidden 32, 2 layers) with a vocabulary written here, and
small synthetic datasets whose labels are learnable from their characters. No network."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRICKLAB_CACHE"] = tempfile.mkdtemp(prefix="tricklab-test-cache-")  # per-host and token caches, not the user's
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="tricklab-test-hfmod-"))  # remote code, per worker
if os.environ.get("PYTEST_XDIST_WORKER"):          # `make test` runs one worker per core: one thread each, so that
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # workers (and their subprocesses) do not fight over the cores
    import torch

    torch.set_num_threads(1)



def pytest_collection_modifyitems(config, items):
    """Integration tests (the packaged models, minutes each) first: pytest-xdist hands tests out in this order, so
    the long ones start at once on different workers and the short ones fill in around them, instead of one worker
    finishing a long test alone at the end."""
    longest = ("test_demo_command", "test_m3e_small_learns", "test_smollm2_with_lora")    # 240, 150, 105 s here

    def rank(item: Any) -> tuple[bool, int]:
        first = next((i for i, name in enumerate(longest) if item.name.startswith(name)), len(longest))
        return item.get_closest_marker("integration") is None, first

    items.sort(key=rank)                           # stable: otherwise in collection order


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = {"sports": "球赛队员冠军胜负", "finance": "股市银行利率基金", "game": "玩家游戏版本电竞"}
NOISE = "的了在是我有和人这中大为上个国"
LATIN = "abcdefghijklmnopqrstuvwxyz"


def make_tiny_model(path: Path, vocab_extra: str = "") -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    chars = sorted(set("".join(CLASSES.values()) + NOISE + LATIN + "0123456789，。！" + vocab_extra))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars)}
    tok = BertTokenizer(vocab=vocab, do_lower_case=False)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test whose run sets train.threads must not leave the worker on more threads than the one it was given."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")


def make_text(rng: random.Random, label: str) -> str:
    n = rng.randint(4, 12)
    return "".join(rng.choice(CLASSES[label]) if rng.random() < 0.6 else rng.choice(NOISE) for _ in range(n))


def write_thucnews(folder: Path, n_train: int = 120, n_dev: int = 30, seed: int = 0) -> Path:
    """THUCNews layout: text<TAB>id lines and a class.txt without a trailing newline."""
    rng = random.Random(seed)
    names = list(CLASSES)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_dev)):
        lines = []
        for i in range(n):
            y = i % len(names)
            lines.append(f"{make_text(rng, names[y])}\t{y}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "class.txt").write_text("\n".join(names), encoding="utf-8")
    return folder


@pytest.fixture
def thuc_dir(tmp_path) -> Path:
    return write_thucnews(tmp_path / "thuc")


def tiny_cfg(model: Path, *sets: str):
    from tricklab.config import load_config

    base = [f"model.name={model}", "train.epochs=2", "train.batch_size=16", "train.lr=2e-3", "train.precision=fp32",
            "data.max_length=24", "train.log_every=2", "train.warmup_ratio=0.0"]
    return load_config(None, base + list(sets))
