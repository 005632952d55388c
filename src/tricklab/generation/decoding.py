"""Decoding loops over any transformers causal LM: its forward pass plus its KV cache.

Each strategy returns prompt + continuation as a LongTensor, token for token what
`model.generate` returns with the same settings; rows that stop early are padded with
pad_token_id. eos_token_id / pad_token_id default to the model's generation_config, as in
generate; pass eos_token_id=[] to never stop early. Prompts in a batch are LEFT padded.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import ConfigError
from . import processors as proc


@dataclass
class Candidate:
    """One candidate next token: probability after the processors; beams add parent and score."""

    token_id: int
    prob: float
    beam: int | None = None
    score: float | None = None  # beam search: cumulative log-probability of the extended beam


@dataclass
class Step:
    """What one decoding step saw: per batch row, the chosen token and the best candidates."""

    index: int
    chosen: list[int]  # beam search: the best candidate's token
    candidates: list[list[Candidate]]


class _Forward:
    """Runs the model one step at a time, keeping the KV cache, mask and position ids."""

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor):
        self.model = model
        self.positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        # like generate: an all-ones mask is dropped (plain causal attention)
        self.mask = None if bool(attention_mask.all()) else attention_mask
        self.past = None
        params = inspect.signature(model.forward).parameters
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers renamed the KV cache argument and output `past_key_values` -> `cache` (the old name warns
        # and goes in 5.40); models whose forward takes `cache` get the new name, older ones the old
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        """Feed new_ids (the prompt first, then one token per row); return last logits, float32."""
        if self.past is not None:
            self.positions = self.positions[:, -1:] + 1
            if self.mask is not None:
                self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=-1)
        out = self.model(input_ids=new_ids, attention_mask=self.mask, position_ids=self.positions,
                         use_cache=True, **{self.cache_arg: self.past}, **self.extra)
        self.past = getattr(out, self.cache_arg)
        return out.logits[:, -1, :].float()

    def reorder(self, rows: torch.Tensor) -> None:
        self.past.reorder_cache(rows)


def _setup(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id):
    """Validate inputs; resolve eos (list) and pad like generate does; return (mask, eos, pad)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ConfigError("input_ids: expected a non-empty [batch, length] LongTensor")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 0")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ConfigError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                          f"{tuple(input_ids.shape)}; pass the mask the tokenizer returned")
    gen_config = getattr(model, "generation_config", None)
    if eos_token_id is None:
        eos_token_id = getattr(gen_config, "eos_token_id", None)
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if pad_token_id is None:
        pad_token_id = getattr(gen_config, "pad_token_id", None)
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    return attention_mask.to(input_ids.device).long(), eos, int(pad_token_id)


def _padding_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the number of left-padding positions (what the repetition penalty skips)."""
    return (mask != 0).int().argmax(dim=1)


def _top(probs: torch.Tensor, k: int) -> list[list[Candidate]]:
    values, tokens = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [[Candidate(int(t), float(p)) for t, p in zip(tr, vr)] for tr, vr in zip(tokens, values)]


@torch.no_grad()
def _token_by_token(model, input_ids, max_new_tokens, attention_mask, eos_token_id, pad_token_id,
                    pick: Callable[[torch.Tensor], torch.Tensor], options: dict,
                    explain: list[Step] | None, explain_k: int) -> torch.Tensor:
    """The loop shared by greedy and sampling: process scores, pick one token per row, repeat."""
    mask, eos, pad = _setup(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)
    eos_t = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
    forward = _Forward(model, mask)
    options = dict(options, skip=_padding_lengths(mask))
    ids, new = input_ids, input_ids
    running = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    for step in range(max_new_tokens):
        scores = proc.process(forward(new), ids, **options)
        token = pick(scores)
        if eos:
            token = torch.where(running, token, pad)
        if explain is not None:
            explain.append(Step(step, token.tolist(), _top(scores.softmax(-1), explain_k)))
        ids = torch.cat([ids, token[:, None]], dim=-1)
        running &= ~torch.isin(token, eos_t)
        if not running.any():
            break
        new = token[:, None]
    return ids


def greedy(model, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None,
           eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
           repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
           explain: list[Step] | None = None, explain_k: int = 5) -> torch.Tensor:
    """Pick the most likely token at every step. Pass a list as `explain` to record each step."""
    options = dict(repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    return _token_by_token(model, input_ids, max_new_tokens, attention_mask, eos_token_id, pad_token_id,
                           lambda s: s.argmax(dim=-1), options, explain, explain_k)


def sample(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
           attention_mask: torch.Tensor | None = None, eos_token_id: int | Sequence[int] | None = None,
           pad_token_id: int | None = None, no_repeat_ngram_size: int = 0,
           explain: list[Step] | None = None, explain_k: int = 5) -> torch.Tensor:
    """Draw each token from the processed distribution; `seed` makes the draws reproducible
    (same stream as `torch.manual_seed(seed)` before generate(do_sample=True) on CPU)."""
    if seed is None:
        generator = None
    else:
        generator = torch.Generator(device=input_ids.device)
        generator.manual_seed(seed)
    options = dict(repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                   temperature=temperature, top_k=top_k, top_p=top_p)

    def draw(scores: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)

    return _token_by_token(model, input_ids, max_new_tokens, attention_mask, eos_token_id, pad_token_id,
                           draw, options, explain, explain_k)


@torch.no_grad()
def sequence_logprob(model, ids: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor | None = None,
                     eos_token_id: int | Sequence[int] | None = None) -> torch.Tensor:
    """Per row, the summed log-probability of ids[:, prompt_len:] given what precedes it.

    With eos_token_id, tokens after a row's first EOS (padding) are not counted.
    """
    if not 1 <= prompt_len <= ids.shape[1]:
        raise ConfigError(f"prompt_len={prompt_len}: must be between 1 and the sequence length {ids.shape[1]}")
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    logp = logits[:, prompt_len - 1 : -1].log_softmax(-1)
    cont = ids[:, prompt_len:]
    token_logp = logp.gather(-1, cont[..., None]).squeeze(-1) * mask[:, prompt_len:]
    if eos_token_id is not None:
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        is_eos = torch.isin(cont, torch.tensor(eos, dtype=torch.long, device=ids.device)).long()
        after_eos = (is_eos.cumsum(-1) - is_eos) > 0
        token_logp = token_logp.masked_fill(after_eos, 0.0)
    return token_logp.sum(-1)


def _gather_beams(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, j], ...] for a [batch, beams, ...] tensor and a [batch, n] index."""
    index = index.view(*index.shape, *[1] * (x.dim() - 2)).expand(*index.shape, *x.shape[2:])
    return x.gather(1, index)


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, max_new_tokens: int, num_beams: int,
                length_penalty: float = 1.0, no_repeat_ngram_size: int = 0, early_stopping: bool | str = False,
                attention_mask: torch.Tensor | None = None, eos_token_id: int | Sequence[int] | None = None,
                pad_token_id: int | None = None, repetition_penalty: float = 1.0,
                explain: list[Step] | None = None, explain_k: int = 5) -> torch.Tensor:
    """Keep the num_beams best partial sequences; return each row's best finished one.

    Follows transformers 5 exactly: a finished hypothesis scores sum(log p) / new_tokens**length_penalty
    (generated length, EOS included, not total length); early_stopping=True stops a row once it has
    num_beams finished hypotheses; False stops when the best running beam, scored at its current
    length, can no longer beat the worst finished one; "never" scores it at the maximum length when
    length_penalty > 0.
    """
    mask, eos, pad = _setup(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams={num_beams!r}: must be an integer >= 1")
    if max_new_tokens == 0:
        return input_ids.clone()
    batch, prompt_len = input_ids.shape
    beams, max_len, dev = num_beams, prompt_len + max_new_tokens, input_ids.device
    n_cand = max(2, 1 + len(eos)) * beams  # enough candidates that `beams` of them can keep running
    eos_t = torch.tensor(eos, dtype=torch.long, device=dev)
    forward = _Forward(model, mask.repeat_interleave(beams, dim=0))
    row_offset = torch.arange(batch, device=dev)[:, None] * beams
    skip = _padding_lengths(mask).repeat_interleave(beams)

    running = torch.full((batch, beams, max_len), pad, dtype=torch.long, device=dev)
    running[:, :, :prompt_len] = input_ids[:, None, :]
    running_scores = torch.zeros(batch, beams, device=dev)
    running_scores[:, 1:] = -1e9  # at first all beams are equal: expand only beam 0
    done = running.clone()  # finished hypotheses, best first; `is_done` marks the real ones
    done_scores = torch.full((batch, beams), -1e9, device=dev)
    is_done = torch.zeros(batch, beams, dtype=torch.bool, device=dev)
    done_len = torch.zeros(batch, beams, dtype=torch.long, device=dev)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=dev)
    in_top_beams = torch.arange(n_cand, device=dev) < beams
    new = running[:, :, :prompt_len].reshape(batch * beams, prompt_len)

    for cur in range(prompt_len, max_len):
        logp = forward(new).log_softmax(dim=-1)
        vocab = logp.shape[-1]
        logp = proc.process(logp, running[:, :, :cur].reshape(batch * beams, cur),
                            repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                            skip=skip)
        total = (logp.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, -1)
        cand_scores, flat = total.topk(n_cand, dim=-1)
        cand_beam, cand_token = flat // vocab, flat % vocab
        cand = _gather_beams(running, cand_beam)
        cand[:, :, cur] = cand_token
        hits_stop = torch.isin(cand_token, eos_t) | (cur + 1 >= max_len)

        # the best `beams` candidates that did not stop keep running
        live_scores = cand_scores + hits_stop.float() * -1e9
        keep = live_scores.topk(beams, dim=-1).indices
        running, running_scores = _gather_beams(cand, keep), live_scores.gather(1, keep)
        parents = cand_beam.gather(1, keep)

        # stopped candidates among the top `beams` join the finished pool if they beat it
        n_new = cur + 1 - prompt_len
        just_done = hits_stop & in_top_beams
        fin_scores = cand_scores / n_new**length_penalty
        fin_scores = fin_scores + (is_done.all(-1, keepdim=True) & (early_stopping is True)).float() * -1e9
        fin_scores = fin_scores + (~improvable).float() * -1e9
        fin_scores = fin_scores + (~just_done).float() * -1e9
        pool_scores = torch.cat([done_scores, fin_scores], dim=1)
        best = pool_scores.topk(beams, dim=-1).indices
        done = _gather_beams(torch.cat([done, cand], dim=1), best)
        done_scores = pool_scores.gather(1, best)
        is_done = torch.cat([is_done, just_done], dim=1).gather(1, best)
        done_len = torch.cat([done_len, torch.full_like(cand_token, n_new)], dim=1).gather(1, best)

        if explain is not None:
            probs = logp.exp().view(batch, -1).gather(1, flat)
            explain.append(Step(n_new - 1, cand_token[:, 0].tolist(), [
                [Candidate(int(t), float(p), int(b), float(s)) for t, p, b, s in zip(*row)][:explain_k]
                for row in zip(cand_token, probs, cand_beam, cand_scores)]))

        forward.reorder((parents + row_offset).view(-1))
        new = running[:, :, cur].reshape(-1, 1)

        # can a running beam still beat the worst finished hypothesis?
        hypothetical_len = max_new_tokens if early_stopping == "never" and length_penalty > 0 else n_new
        best_running = running_scores[:, :1] / hypothetical_len**length_penalty
        worst_done = torch.where(is_done, done_scores.min(dim=1, keepdim=True).values, -1e9)
        improvable = improvable & (best_running > worst_done).any(dim=-1, keepdim=True)
        if not improvable.any() or (early_stopping is True and is_done.all()) or hits_stop.all():
            break

    return done[:, 0, : prompt_len + int(done_len[:, 0].max())]
