"""Everything a run needs before its first step, built in order: the Accelerator, the data (every problem
reported before the model loads), the model, the tokenised splits, the losses and tricks, the optimizer and
schedule, and the state restored from the last checkpoint on --resume. The result is one `Run`."""
from __future__ import annotations

import importlib.util
import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from .. import losses as _losses  # noqa: F401  (registration)
from .. import tricks as _tricks  # noqa: F401
from ..config import Config, TrainConfig, load_config, validate_setfit
from ..data import DataBundle, Encoded, load_data, needs_lowercase, train_batches
from ..data.balance import balanced_weights, check_sampler, coverage_warnings, imbalance_note
from ..data.cache import Tokens, source_tokens
from ..data.pairs import epoch_pair_batches
from ..data.sources import cache_digest, rows_digest
from ..data.truncation import Truncation
from ..errors import ConfigError, TrickLabError
from ..evaluation.metrics import DEFAULT_METRIC, TASK_METRICS
from ..evaluation.model_card import script_counts
from ..model import build_classifier, decoder_backbone, prior_bias
from ..model.adapters import has_adapters
from ..model.runtime import compile_encoder, resolve_compile, resolve_precision
from ..registry import TRICKS, load_plugins
from ..runfiles import LOCK_FILE
from ..tricks import Trick
from ..types import TrainContext
from .checkpoint import latest_checkpoint, load_checkpoint, load_resume_weights
from .optim import adam_without_bias_correction, build_scheduler, lr_factor, param_groups, warmup_steps
from .provenance import check_resume, data_record, resume_args
from .step import Losses, build_losses, check_specs
from .tracking import accelerator_trackers, check_trackers


@dataclass
class State:
    """What --resume restores besides the weights and optimizer: where the loop stands."""
    epoch: int = 0          # current epoch
    batch: int = 0          # next global batch within the epoch (data position for --resume)
    step: int = 0           # optimizer steps done
    best: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    samples: int = 0
    train_seconds: float = 0.0


@dataclass
class Splits:
    """The tokenised splits: train rows (chunk windows with data.truncation=chunk), dev and test documents."""
    train: Encoded
    dev: Encoded
    test: Encoded | None


@dataclass
class Run:
    cfg: Config
    out: Path
    accelerator: Accelerator
    precision: str                       # fp32 | bf16 | fp16, resolved for this machine
    bundle: DataBundle
    tokenizer: Any
    meta: dict[str, Any]                 # saved with the model (model/tricklab.json)
    enc: Splits
    model: torch.nn.Module               # prepared by Accelerate (DDP-wrapped with several processes)
    raw_model: torch.nn.Module
    losses: Losses
    tricks: list[Trick]
    optimizer: Any
    scheduler: Any
    total_steps: int
    steps_per_epoch: int
    metric: str                          # the dev metric that picks the best checkpoint
    state: State = field(default_factory=State)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # printed as `warning:` before training
    data_record: dict[str, Any] = field(default_factory=dict)   # run.json's data files (provenance.py)
    sample_weights: np.ndarray | None = None   # (N,) data.sampler=balanced: draw probabilities of the train rows
    forced: list[str] | None = None      # --resume: the differences forced past (None: a fresh run)
    on_evaluate: Callable[[int, dict[str, Any]], None] | None = None   # after each dev evaluation (tune's pruner)
    base_digest: str | None = None       # with adapters: SHA-256 of the frozen base weights (checkpoint.py)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def loss_params(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of loss modules (e.g. a SupCon projection head): they sit outside DDP."""
        return [p for _, m in self.losses.values() for p in m.parameters() if p.requires_grad]

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This process's batches for one epoch: its slice of every global batch."""
        tc = self.cfg.train
        return process_batches(self.enc.train.lengths, tc, epoch, self.accelerator.process_index, self.world,
                               self.sample_weights)


def process_batches(lengths: np.ndarray, tc: TrainConfig, epoch: int, rank: int, world: int,
                    weights: np.ndarray | None = None) -> list[np.ndarray]:
    batches = train_batches(lengths, tc.batch_size, tc.seed, epoch, tc.group_by_length, weights)
    if world > 1:
        batches = [np.array_split(b, world)[rank] for b in batches if len(b) >= world]
    return batches


def run_meta(cfg: Config, bundle: DataBundle, lowercase: bool, backbone: str) -> dict[str, Any]:
    return {"task": bundle.task, "num_labels": bundle.label_map.num_labels, "labels": bundle.label_map.to_dict(),
            "precision": cfg.train.precision, "plugins": list(cfg.plugins),   # imported again by load_model
            "model": {"pooling": cfg.model.pooling, "head": cfg.model.head, "head_args": cfg.model.head_args,
                      "dropout": cfg.model.dropout, "backbone": backbone},
            "data": {"max_length": cfg.data.max_length, "lowercase": lowercase, "pair": bundle.is_pair,
                     "truncation": Truncation.from_config(cfg.data).to_meta() | {"chunk_train": cfg.data.chunk_train},
                     "columns": trained_columns(bundle)},     # predict's default text column(s)
            "data_config": asdict(cfg.data)}   # how the run read its files: `evaluate --bundle` reads the same way


def trained_columns(bundle: DataBundle) -> dict[str, str]:
    """The named columns train read its text(s) from ({"text": "Review Text"}); none for positions or records."""
    roles = ((bundle.columns or {}).get("train") or {}).get("roles", {})
    return {role: r["column"] for role, r in roles.items() if role in ("text", "text_b") and r.get("column")}


RUN_MARKERS = ("config.yaml", "run.json", "metrics.json", "checkpoints")


def is_run_folder(out: Path) -> bool:
    return any((out / m).exists() for m in RUN_MARKERS)


def run_config(cfg: Config | None, out: Path, resume: bool, overwrite: bool = False) -> Config:
    """The config of the run: the run folder's own on --resume. A fresh run refuses a folder that holds a run unless
    `overwrite`, and `overwrite` refuses a folder that is not a run's (it would delete it)."""
    if resume:
        if not (out / "config.yaml").is_file():
            raise TrickLabError(f"--resume: {out} has no config.yaml: it is not a run folder; fix: give the --out of "
                                f"the run to continue, or drop --resume")
        return load_config(out / "config.yaml")
    if cfg is None:
        raise ConfigError("train: a config is needed unless resuming (fix: pass a Config, or resume=True)")
    if is_run_folder(out) and not overwrite:
        raise TrickLabError(f"{out} already holds a run; fix: --resume to continue it, --overwrite to replace it, or "
                            f"choose another --out")
    if overwrite and out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not is_run_folder(out):
        raise TrickLabError(f"--overwrite: {out} is not a run folder (no {', '.join(RUN_MARKERS)}); it is left as it "
                            f"is; fix: choose another --out")
    return cfg


def clear_run_folder(out: Path) -> None:
    """--overwrite: remove the previous run (run_config checked that `out` is a run folder); the lock file stays, as
    this process holds it."""
    import shutil

    if out.is_dir():
        for p in out.iterdir():
            if p.name == LOCK_FILE:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def make_accelerator(cfg: Config, out: Path, notes: list[str]) -> tuple[Accelerator, str]:
    """The Accelerator with the run's precision (auto: measured, see model/runtime.py) and trackers."""
    tc = cfg.train
    if tc.threads:                                     # before measuring: the speeds depend on the thread count
        torch.set_num_threads(tc.threads)
    precision = resolve_precision(tc.precision, "cuda" if torch.cuda.is_available() else "cpu", notes)
    # one process may train several runs (tests, grids) with other precisions; accelerate has no public reset
    # (pyproject caps accelerate below 2; tests/test_dependencies.py checks that this method exists)
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
                              **accelerator_trackers(cfg.tracking, out))
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"):   # weights are saved from rank 0's whole model
        raise ConfigError(f"accelerate is configured for {kind}; tricklab trains data-parallel (DDP) only; fix: "
                          f"`accelerate config` with multi-GPU/multi-CPU (or run torchrun)")
    set_seed(tc.seed)
    return accelerator, precision


def build_model(cfg: Config, bundle: DataBundle, notes: list[str]) -> tuple[torch.nn.Module, Any, bool, str]:
    """(model, tokenizer, lowercase, backbone path); output biases at the label priors when asked."""
    lm = bundle.label_map
    decoder_notes(cfg, notes)
    model, tok, backbone = build_classifier(cfg.model.name, lm.num_labels, cfg.model.pooling, cfg.model.head,
                                            cfg.model.head_args, cfg.model.dropout)
    check_max_length(cfg, model, bundle.is_pair)
    lower = cfg.data.lowercase == "true" or (cfg.data.lowercase == "auto" and needs_lowercase(tok))
    pbi = cfg.model.prior_bias_init
    if pbi == "true" or (pbi == "auto" and bundle.task == "multi_label"):  # --resume: the checkpoint overwrites it
        model.init_output_bias(prior_bias(bundle.task, bundle.class_counts(), len(bundle.train)))
        notes.append(f"prior_bias_init: output biases start at the train label "
                     f"{'log-odds' if bundle.task == 'multi_label' else 'log-priors'}"
                     + ("; --set model.prior_bias_init=false to disable" if pbi == "auto" else ""))
    if lower and cfg.data.lowercase == "auto":
        notes.append("lowercase: on: this tokenizer keeps capitals but its vocabulary has lower-case Latin letters "
                     "only (capitals would become [UNK]); --set data.lowercase=false to disable")
    return model, tok, lower, backbone


def position_limit(model: torch.nn.Module) -> int | None:
    """How many tokens the encoder can read: the rows of its absolute position-embedding table (BERT 512; the
    RoBERTa family numbers positions after padding_idx, so 514 rows hold 512 tokens); None when it has no such
    table (relative or rotary positions: DeBERTa-v3, decoder LMs), where no length is out of range."""
    pe = getattr(getattr(getattr(model, "encoder", None), "embeddings", None), "position_embeddings", None)
    if not isinstance(pe, torch.nn.Embedding):
        return None
    return pe.num_embeddings - (pe.padding_idx + 1 if pe.padding_idx is not None else 0)


def check_max_length(cfg: Config, model: torch.nn.Module, pair: bool) -> None:
    """data.max_length beyond the encoder's positions would fail in the first forward pass (a shape error deep in
    transformers): refused before training, with the long-text settings."""
    _refuse_beyond(cfg, position_limit(model), pair)


def _refuse_beyond(cfg: Config, limit: int | None, pair: bool) -> None:
    if limit is not None and cfg.data.max_length > limit:
        raise ConfigError(f"data.max_length={cfg.data.max_length}: {cfg.model.name} reads at most {limit} tokens (its "
                          f"position embeddings); fix: --set data.max_length={limit}" + (
                              "" if pair else ", and for longer texts --set data.truncation=chunk (windows of "
                              "max_length over the whole text) or head_tail (README: Long texts)"))


def check_max_length_early(cfg: Config, pair: bool = False, limits: dict[str, int | None] | None = None) -> None:
    """check_max_length from the model's config alone, for grids that check every variant before the first run
    trains (compare, tune). `limits` keeps each model's limit across the variants of one grid."""
    limits = {} if limits is None else limits
    if cfg.model.name not in limits:
        limits[cfg.model.name] = declared_position_limit(cfg.model.name)
    _refuse_beyond(cfg, limits[cfg.model.name], pair)


def declared_position_limit(name: str) -> int | None:
    """position_limit of the encoder its config builds, on the meta device (no weights read); None also for a
    model whose config cannot be read here: that is left to the run, which reports it."""
    from transformers import AutoConfig, AutoModel

    from ..model.resolve import pretrained_args, resolve_model

    try:
        where, kw = pretrained_args(resolve_model(name))
        conf = AutoConfig.from_pretrained(where, **kw)
        with torch.device("meta"):
            encoder = AutoModel.from_config(conf)
    except Exception:                # noqa: BLE001 - any failure here is the run's to report, with its context
        return None
    return position_limit(SimpleNamespace(encoder=encoder))


def decoder_notes(cfg: Config, notes: list[str]) -> None:
    """A decoder LM backbone: the default pooling (pooler, which decoders lack) becomes `last`; LoRA adapters
    (trick lora) unless the tricks name it already or model.lora is false (then a note that every weight trains)."""
    kind = decoder_backbone(cfg.model.name)
    if kind is None:
        return
    if cfg.model.pooling == "pooler":
        cfg.model.pooling = "last"
        notes.append(f"model.pooling: last: {kind} is a decoder LM (no pooler layer); the last real token's state, "
                     f"which has read the whole text, is classified")
    if any(t.get("name") == "lora" for t in cfg.tricks):
        return
    if cfg.model.lora == "auto" and importlib.util.find_spec("peft") is not None:
        cfg.tricks.append({"name": "lora"})
        notes.append(f"model.lora: auto: {kind} is a decoder LM: LoRA adapters (r 8, alpha 16, every linear layer) "
                     f"train, the body stays frozen; adapters usually want a higher lr than full fine-tuning (1e-3 "
                     f"in benchmarks/RESULTS.md section 12; train.lr is {cfg.train.lr:g}); --trick lora:r=...,"
                     f"alpha=... to choose, --set model.lora=false to train every weight")
    else:
        why = "model.lora is false" if cfg.model.lora == "false" else "peft is not installed (pip install 'tricklab[peft]')"
        notes.append(f"{kind} is a decoder LM and every one of its weights trains ({why}); --trick lora trains "
                     f"low-rank adapters only (faster, a small run folder)")


def reading_notes(cfg: Config, bundle: DataBundle, train_enc: Encoded, tok: Any) -> tuple[list[str], list[str]]:
    """(notes, warnings) on whether the encoder reads this text, from up to 2,000 evenly spaced train rows: the
    share of [UNK] tokens (a warning over 5%), Latin-script text fed to the Chinese default, and the share of
    texts that reach data.max_length (cut). Each names what to set instead."""
    notes, warnings = [], []
    unk = getattr(tok, "unk_token_id", None)
    special = list(set(getattr(tok, "all_special_ids", [])) - {unk})
    n = k = full = 0
    picks = _spaced(len(train_enc))
    for i in picks:
        ids = np.asarray(train_enc.input_ids[int(i)])
        real = ids[~np.isin(ids, special)] if special else ids
        n, k = n + real.size, k + int((real == unk).sum()) if unk is not None else k
        full += ids.size >= cfg.data.max_length
    if n and k / n > 0.05:
        warnings.append(f"{k / n:.0%} of the train tokens are {tok.unk_token} for this tokenizer: the model reads them "
                        f"all as one unknown token (emoji, rare symbols, or a language its vocabulary lacks); if "
                        f"the text's language is not covered, pass an encoder that covers it (--model minilm-en for "
                        f"English, or any transformers model name or folder)")
    rows = bundle.train.rows
    if cfg.model.name == "m3e-small" and _latin_only([rows[int(i)].text for i in _spaced(len(rows))]):
        notes.append("the text is in Latin script, and m3e-small (the default) is a Chinese encoder that reads Latin "
                     "words as word pieces; for English: --model minilm-en (packaged), or any English encoder")
    if len(picks) and full / len(picks) >= 0.1 and cfg.data.truncation != "chunk":
        more = ("" if bundle.is_pair else ", or data.truncation=head_tail / chunk (README: Long texts)")
        notes.append(f"{full / len(picks):.0%} of the train texts reach data.max_length ({cfg.data.max_length} "
                     f"tokens) and longer ones are cut (data.truncation={cfg.data.truncation}); to read more of them: "
                     f"--set data.max_length=N (time grows with it){more}")
    return notes, warnings


def _spaced(n: int, k: int = 2000) -> Any:
    """Up to k evenly spaced indices of 0..n-1 (a file sorted by length, class or language is sampled whole)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).astype(int)) if n else []


def _latin_only(texts: list[str]) -> bool:
    """Mostly Latin letters and (almost) no Han: English-like text, not Chinese with English terms in it."""
    counts = script_counts(texts)
    latin, han = counts["en"], counts["zh"]
    return latin > 0 and latin >= 0.5 * (latin + han) and han < 0.05 * (latin + han)


def trainable_note(model: torch.nn.Module) -> list[str]:
    """How many parameters train, when some are frozen (lora, freeze)."""
    total = sum(p.numel() for p in model.parameters())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return [] if n == total else [f"trainable parameters: {n:,} of {total:,} ({100 * n / max(total, 1):.2f}%)"]


def encode_splits(cfg: Config, bundle: DataBundle, tok: Any, lower: bool, notes: list[str]) -> Splits:
    """Each split's token ids: its rows of its source, tokenised once per source and kept in the token cache
    (data/cache.py: memory-mapped, shared by every run on the same data, tokenizer and settings)."""
    trunc = Truncation.from_config(cfg.data)
    sources: dict[tuple[str, Truncation], Tokens] = {}
    hows: dict[str, list[str]] = {}     # "tokens from the cache DIR" -> the sources it was said of

    def enc(split: Any, t: Truncation = trunc) -> Encoded:
        whole = split.origin in bundle.raw       # else (a hand-made bundle): the split's own rows
        key = (split.origin if whole else f"{split.name} split", t)
        if key not in sources:
            rows = bundle.raw[split.origin] if whole else split.rows
            digest = cache_digest(bundle.digests.get(key[0], {})) or rows_digest(rows)
            sources[key], how = source_tokens(rows, digest, cfg.data, tok, lower, t, bundle.is_pair)
            hows.setdefault(how, []).append(f"{key[0]} ({len(rows)} rows)")
        return sources[key].select(split.index if whole else None, split.labels, t.agg)

    # chunk: every window is a training example with its document's label, unless data.chunk_train=false (head)
    train = enc(bundle.train, replace(trunc, policy="head") if trunc.policy == "chunk" and not cfg.data.chunk_train
                else trunc)
    if bundle.train.soft is not None:
        train.extra["soft_labels"] = train.expand(bundle.train.soft)
    splits = Splits(train, enc(bundle.dev), enc(bundle.test) if bundle.test is not None else None)
    notes.append("data: " + "; ".join(f"{', '.join(names)}: {how}" for how, names in hows.items()))
    if trunc.policy == "chunk":
        notes.append(f"truncation: chunk: train {len(bundle.train)} texts -> {len(train)} training examples, "
                     f"dev {len(bundle.dev)} -> {len(splits.dev)} windows (logits: {trunc.agg} per text)")
    return splits


def balance_notes(cfg: Config, bundle: DataBundle) -> list[str]:
    """Single-label: the imbalance note (data/balance.py) and a warning when two balancing remedies are stacked."""
    if bundle.task != "single_label":
        return []
    notes = [imbalance_note(bundle.class_counts(), bundle.label_map.names, cfg.data.sampler)]
    loss = cfg.loss if isinstance(cfg.loss, dict) else {}
    if cfg.data.sampler == "balanced" and "balanced" in (loss.get("class_weights"), loss.get("alpha")):
        notes.append(f"data.sampler=balanced with {loss['name']} balanced weights corrects the class prior twice "
                     f"(rare classes over-predicted); fix: keep one of them")
    return [n for n in notes if n]


def dev_metric(cfg: Config, bundle: DataBundle) -> str:
    metric = DEFAULT_METRIC[bundle.task] if cfg.train.metric == "auto" else cfg.train.metric
    if metric not in TASK_METRICS[bundle.task] or (metric == "f1_positive" and bundle.label_map.num_labels != 2):
        raise ConfigError(f"train.metric={metric!r} is not a {bundle.task} metric (choose from: "
                          f"{', '.join(TASK_METRICS[bundle.task])}; f1_positive needs 2 classes)")
    return metric


def check_config(cfg: Config) -> None:
    """What a config alone can get wrong, before any data or model loads (train, and `tricklab config`)."""
    from ..registry import HEADS, POOLINGS

    load_plugins(cfg.plugins)                                      # plugin losses, tricks, heads, poolings
    check_specs(cfg)                                               # loss/trick names and parameters: did-you-mean
    HEADS.get_or_fail(cfg.model.head)
    POOLINGS.get_or_fail(cfg.model.pooling)
    lr_factor(cfg.train, 100)                                      # train.scheduler_args problems, before the data
    check_trackers(cfg.tracking)


def setup(cfg: Config | None, data: Any, dev: Any, test: Any, out: Path,
          resume: bool, force: bool = False, overwrite: bool = False) -> Run:
    """Build the run, in order; every data and config problem is raised before any step. On --resume, `data` may
    be None (the run's recorded files) and differing data or versions are refused unless `force` (provenance.py)."""
    cfg = run_config(cfg, out, resume, overwrite)
    check_config(cfg)
    compiled = resolve_compile(cfg.train.compile, "cuda" if torch.cuda.is_available() else "cpu")  # e.g. no compiler
    forced, saved = None, None
    if resume:
        data, dev, test, saved = resume_args(out, data, dev, test)
    elif data is None:
        raise ConfigError("train: --data is required (a folder with train/dev/test files, or a training file); "
                          "--resume continues a run without it")
    record = data_record(data, dev, test)          # files: hashed now; other data: from its rows once read
    if resume and record["files"]:
        forced = check_resume(out, saved, record, force)
    tc = cfg.train
    precision_notes: list[str] = []
    accelerator, precision = make_accelerator(cfg, out, precision_notes)
    bundle = load_data(cfg, data, dev, test)                       # every data problem, before the model loads
    if not record["files"]:
        record = data_record(data, dev, test, bundle)
        if resume:
            forced = check_resume(out, saved, record, force)
    record["columns"] = bundle.columns                             # how each file's columns were chosen (run.json)
    cfg.task = bundle.task
    if tc.strategy == "setfit":
        validate_setfit(cfg)                                       # the detected task may not be single_label
    metric = dev_metric(cfg, bundle)
    check_sampler(cfg.data.sampler, bundle.task)
    if tc.batch_size < accelerator.num_processes:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch: it must be at least the number "
                          f"of processes ({accelerator.num_processes})")
    notes = precision_notes + list(bundle.notes) + balance_notes(cfg, bundle)
    model, tok, lower, backbone = build_model(cfg, bundle, notes)
    enc = encode_splits(cfg, bundle, tok, lower, notes)
    reading, reading_warnings = reading_notes(cfg, bundle, enc.train, tok)
    notes += reading
    if overwrite and not resume:     # only now: data, model and settings are checked, so a refused run keeps the old
        if accelerator.is_main_process:
            clear_run_folder(out)
        accelerator.wait_for_everyone()
    weights = balanced_weights(enc.train.labels, bundle.label_map.num_labels) if cfg.data.sampler == "balanced" else None
    if tc.strategy == "setfit":   # batches of sentence pairs (training/setfit.py)
        n_batches = len(epoch_pair_batches(enc.train.labels, tc, 0, accelerator.process_index,
                                           accelerator.num_processes))
    else:
        n_batches = len(process_batches(enc.train.lengths, tc, 0, accelerator.process_index,
                                        accelerator.num_processes, weights))
    steps_per_epoch = math.ceil(n_batches / tc.grad_accum)
    total_steps = tc.max_steps or math.ceil(steps_per_epoch * tc.epochs)
    if tc.scheduler == "constant" and warmup_steps(tc, total_steps) > 0:
        notes.append("scheduler: constant has no warm-up, so train.warmup_ratio / warmup_steps are ignored; "
                     "--set train.scheduler=constant_with_warmup to warm up")
    losses, tricks = setup_losses_and_tricks(cfg, bundle, model, tok, accelerator.device, out, total_steps)
    notes += trainable_note(model)
    if compiled:                     # after the tricks' model changes (LoRA), so the adapted encoder is compiled
        compile_encoder(model, notes)
    optimizer, scheduler = build_optimizer(cfg, model, losses, tricks, accelerator.device, total_steps)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    meta = run_meta(cfg, bundle, lower, backbone) | {"optimizer": optimizer_name(tc, model)}   # the model card's
    run = Run(cfg, out, accelerator, precision, bundle, tok, meta, enc, prepared,
              accelerator.unwrap_model(prepared), losses, tricks, optimizer, scheduler, total_steps, steps_per_epoch,
              metric, notes=notes, data_record=record, forced=forced, sample_weights=weights,
              warnings=coverage_warnings(bundle.class_counts(), bundle.label_map.names, len(bundle.train),
                                         bundle.train.source) + reading_warnings)   # regression: the train size only
    if resume:
        restore(run)
    return run


def setup_losses_and_tricks(cfg: Config, bundle: DataBundle, model: torch.nn.Module, tok: Any, device: torch.device,
                            out: Path, total_steps: int) -> tuple[Losses, list[Trick]]:
    """Losses and tricks, each set up with what it may know about the run (types.TrainContext)."""
    lm = bundle.label_map
    ctx = TrainContext(bundle.task, lm.num_labels, lm.names, bundle.class_counts(), len(bundle.train), total_steps,
                       device, out, {"train": bundle.train, "tokenizer": tok, "feature_dim": model.classifier.feature_dim})
    losses = build_losses(cfg, bundle.task)
    ctx.data |= {"main_loss": next(iter(losses.values()))[1], "loss_modules": [m for _, m in losses.values()]}
    for _, loss in losses.values():
        loss.setup(ctx)
        loss.to(device)
    tricks = [TRICKS.build(t["name"], **{k: v for k, v in t.items() if k != "name"}) for t in cfg.tricks]
    for t in tricks:                   # model changes first (LoRA), so every setup sees the adapted model
        t.adapt_model(model, ctx)
    for t in tricks:
        t.setup(model, ctx)
    return losses, tricks


def build_optimizer(cfg: Config, model: torch.nn.Module, losses: Losses, tricks: list[Trick], device: torch.device,
                    total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the parameter groups (the tricks may rewrite them: LLRD) and the schedule (train.scheduler)."""
    tc = cfg.train
    model.to(device)
    groups = param_groups(model, [m for _, m in losses.values()], tc)
    for t in tricks:
        groups = t.param_groups(model, groups)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "param_names"} for g in groups], lr=tc.lr,
                                  fused=device.type in ("cpu", "cuda"))  # one kernel per step, not one per tensor
    factors = [] if bias_correction(tc, model) else [adam_without_bias_correction()]
    return optimizer, build_scheduler(optimizer, tc, total_steps, factors)


BERTADAM_MAX_LR = 1e-4   # auto: BertAdam's steps up to this lr (head_lr too); measured: RESULTS §16


def bias_correction(tc: TrainConfig, model: torch.nn.Module) -> bool:
    """train.adam_bias_correction resolved. auto takes BertAdam's uncorrected steps (False) when the encoder fine-tunes
    without adapters at lr (and head_lr) <= 1e-4, where they measured better than AdamW's (RESULTS §16: at 5e-5 on
    THUCNews, its long-tailed split, ChnSentiCorp and a 2,000-headline slice, at 1e-4 on that slice), and AdamW's
    (True) otherwise: at lr 2e-4 the uncorrected early steps (up to 6.5x) were worse and unstable across seeds,
    and adapters (LoRA) and SetFit were not measured with them."""
    if tc.adam_bias_correction != "auto":
        return tc.adam_bias_correction == "true"
    return (tc.strategy != "finetune" or max(tc.lr, tc.head_lr) > BERTADAM_MAX_LR
            or has_adapters(model.encoder))


def optimizer_name(tc: TrainConfig, model: torch.nn.Module) -> str:
    return "AdamW" if bias_correction(tc, model) else "AdamW with BertAdam's steps (no bias correction)"


def restore(run: Run) -> None:
    """--resume: weights, optimizer, schedule, loss and trick states and the loop position from the last checkpoint."""
    ck = latest_checkpoint(run.out / "checkpoints")
    if ck is None:
        run.notes.append(f"resume: no checkpoint in {run.out / 'checkpoints'} (the run stopped before its first dev "
                         f"evaluation, or train.checkpoint=false): starting again from step 0")
        return
    model_state, blobs, saved = load_checkpoint(ck)
    run.base_digest = load_resume_weights(run.raw_model, model_state, blobs.get("frozen_base"), ck)
    run.optimizer.load_state_dict(blobs["optimizer"])
    run.scheduler.load_state_dict(blobs["scheduler"])
    for i, (_, loss) in enumerate(run.losses.values()):
        if f"loss{i}" in blobs:
            loss.load_state_dict(blobs[f"loss{i}"])
    for t, s in zip(run.tricks, blobs.get("tricks", [])):
        t.load_state_dict(s)
    run.state = State(**saved)
    run.notes.append(f"resume: from {ck.name} (epoch {run.state.epoch + 1}, step {run.state.step})")
