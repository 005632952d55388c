"""`tricklab generate`: decode a continuation with our own loops and show what each step saw."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .decoding import Step, beam_search, greedy, sample, sequence_logprob

_SAMPLING_ONLY = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": None}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `generate` subcommand; it runs `run(args)`."""
    p = subparsers.add_parser("generate", help="continue a prompt with greedy, beam or sampling decoding",
                              description="Continue a prompt with our own decoding loop over a causal LM "
                                          "and print the continuation and its log-probability.")
    p.add_argument("--model", required=True,
                   help="folder with a transformers causal LM and tokenizer, a folder with a .gguf file, "
                        "a .gguf file, or the packaged alias smollm2-135m (local files only: no hub ids)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--strategy", choices=["greedy", "beam", "sample"], default="greedy")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=None, help="beam strategy only (default 4)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam strategy only")
    p.add_argument("--temperature", type=float, default=1.0, help="sample strategy only")
    p.add_argument("--top-k", type=int, default=0, help="sample strategy only; 0 keeps all tokens")
    p.add_argument("--top-p", type=float, default=1.0, help="sample strategy only; 1 keeps all tokens")
    p.add_argument("--seed", type=int, default=None, help="sample strategy only")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram-size", type=int, default=0)
    p.add_argument("--explain", type=int, default=0, metavar="K",
                   help="print, per step, the K most likely candidate tokens")
    p.add_argument("--gguf-file", default=None, metavar="NAME", help="the .gguf file inside --model")
    p.set_defaults(func=run)
    return p


def load_model(path: str, gguf_file: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder, a .gguf file or a packaged alias (smollm2-135m); ConfigError with
    the fix otherwise."""
    from ..model.resolve import ALIASES, resolve_model

    if path in ALIASES:
        path = resolve_model(path)
    folder = Path(path).expanduser()
    if folder.is_file() and folder.suffix == ".gguf" and gguf_file is None:
        folder, gguf_file = folder.parent, folder.name
    if not folder.is_dir():
        raise ConfigError(f"--model {path}: no such folder; pass a folder holding a causal LM "
                          "(config.json + weights + tokenizer) or a .gguf file")
    if gguf_file is None and not (folder / "config.json").is_file():
        found = sorted(f.name for f in folder.glob("*.gguf"))
        if len(found) != 1:
            raise ConfigError(f"--model {path}: " + (f"holds several .gguf files ({', '.join(found)}); "
                              "pick one with --gguf-file NAME" if found else "has no config.json and no "
                              ".gguf file; pass a folder saved with save_pretrained or a .gguf file"))
        gguf_file = found[0]
    if gguf_file is not None:
        if not (folder / gguf_file).is_file():
            raise ConfigError(f"--gguf-file {gguf_file}: not found in {folder}; pass the name of a .gguf "
                              "file in that folder")
        if importlib.util.find_spec("gguf") is None:
            raise ConfigError(f"--gguf-file {gguf_file}: loading GGUF needs the gguf package; "
                              "run: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {path}: cannot load a causal LM and its tokenizer ({reason}); "
                          "pass a folder saved with save_pretrained, or a supported .gguf file") from None
    return model.eval(), tokenizer


def _check_options(args: argparse.Namespace) -> None:
    if not args.prompt:
        raise ConfigError("--prompt is empty; pass the text to continue, e.g. --prompt 'Once upon a time'")
    if args.explain < 0:
        raise ConfigError(f"--explain {args.explain}: must be >= 0 (the number of candidates to show)")
    if args.strategy != "sample":
        for name, default in _SAMPLING_ONLY.items():
            if getattr(args, name) != default:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(args, name)}: applies to --strategy sample only, "
                                  f"not {args.strategy}; drop it or add --strategy sample")
    if args.strategy != "beam" and (args.num_beams is not None or args.length_penalty != 1.0):
        raise ConfigError(f"--num-beams/--length-penalty apply to --strategy beam only, not {args.strategy}; "
                          "drop them or add --strategy beam")


def print_explain(steps: list[Step], tokenizer: Any) -> None:
    """Per step, a table of the candidate tokens (first batch row) with their probabilities."""
    for step in steps:
        chosen = step.chosen[0]
        beam = bool(step.candidates[0]) and step.candidates[0][0].beam is not None
        verb = "best candidate" if beam else "chose"
        print(f"\nstep {step.index}: {verb} {tokenizer.decode([chosen])!r} (id {chosen})")
        print("  rank  token                 id      prob" + ("  beam     score" if beam else ""))
        for rank, c in enumerate(step.candidates[0], 1):
            line = f"  {rank:>4}  {tokenizer.decode([c.token_id])!r:<20} {c.token_id:>6}  {c.prob:8.4f}"
            print(line + (f"  {c.beam:>4}  {c.score:8.3f}" if beam else ""))
    print()


def run(args: argparse.Namespace) -> int:
    """Generate, print the continuation and its log-probability under the model; return 0."""
    _check_options(args)
    model, tokenizer = load_model(args.model, args.gguf_file)
    enc = tokenizer(args.prompt, return_tensors="pt")
    ids, prompt_len = enc["input_ids"], enc["input_ids"].shape[1]
    steps: list[Step] | None = [] if args.explain else None
    common = dict(max_new_tokens=args.max_new_tokens, attention_mask=enc.get("attention_mask"),
                  repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                  explain=steps, explain_k=args.explain)
    if args.strategy == "greedy":
        out = greedy(model, ids, **common)
    elif args.strategy == "beam":
        out = beam_search(model, ids, num_beams=args.num_beams or 4, length_penalty=args.length_penalty, **common)
    else:
        out = sample(model, ids, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                     seed=args.seed, **common)
    eos = model.generation_config.eos_token_id
    logprob = float(sequence_logprob(model, out, prompt_len, eos_token_id=eos)[0])
    if steps:
        print_explain(steps, tokenizer)
    n_new = out.shape[1] - prompt_len
    print(tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True))
    per_token = f", {logprob / n_new:.4f} per token" if n_new else ""
    print(f"log-probability: {logprob:.4f} over {n_new} new tokens{per_token}")
    return 0
