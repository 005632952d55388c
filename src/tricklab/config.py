"""Typed configuration: YAML + `--set a.b=c` overrides -> dataclasses, with errors naming the key.

Precedence: dataclass defaults < YAML file < --set overrides < explicit CLI flags (--model, ...).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError

TASKS = ("auto", "single_label", "multi_label", "regression")
SAMPLERS = ("shuffle", "balanced")
# transformers.get_scheduler names (training/optim.py)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
STRATEGIES = ("finetune", "setfit")


@dataclass
class DataConfig:
    max_length: int = 128          # tokens per example (pairs: both texts together)
    lowercase: str = "auto"        # auto: lower-case only when the tokenizer's vocabulary lacks capitals
    format: str = "auto"           # auto | thucnews | tsv | csv | jsonl | json | parquet | arrow | xlsx (auto: from
                                   # the extension, under .gz/.bz2/.zst; Parquet/Arrow also from the file's bytes)
    encoding: str = "utf-8"        # text files' encoding: utf-8 (a BOM is dropped) | gb18030 (GBK, Excel's CSV on
                                   # Chinese Windows) | big5 | shift_jis | cp1252 | ... (Python's codec names)
    sheet: Union[str, int, None] = None  # Excel workbooks: the sheet to read, a name or 0-based index; default: the
                                   # first visible sheet whose header names a text column
    header: str = "auto"           # auto | true | false (auto: first row names known columns)
    delimiter: str | None = None   # tab | space | comma | a character; default: tab (.txt/.tsv), comma (.csv)
    text_column: Union[str, int, None] = None    # name (with a header) or 0-based index
    text_b_column: Union[str, int, None] = None  # second text of a sentence pair
    label_column: Union[str, int, list, None] = None   # name (with a header) or 0-based index; default: a known
                                   # name, else (CSV, TSV, Excel; multi-label) the 0/1 columns, one per class;
                                   # a list of names or indices: those 0/1 columns (any format)
    soft_label_column: Union[str, int, None] = None  # per-class probabilities/logits for `kd` (JSON list or spaces)
    label_type: str = "auto"       # auto | id | name: how single-label values are read
    label_sep: str = "|"           # multi-label separator (a JSON list also works)
    label_map: dict = field(default_factory=dict)  # raw label -> the class it stands for, in every file read
                                   # (train, dev, test, evaluate): {0: negative, 1: positive}, {負面: 负面, 正: 正面};
                                   # several labels to one merges them; multi-label: each label of a row
    dev_ratio: float = 0.1         # held out from train when there is no dev file (stratified by class: single-label)
    test_ratio: float = 0.0        # held out from train as test when there is no test file; 0: none
                                   # (the final scores are then on dev, which also picked the checkpoint)
    on_invalid: str = "error"      # error | skip: a row with a problem of its own (empty text, unknown label, wrong
                                   # column count, NaN target, ...) stops the run, or is dropped and listed in
                                   # OUT/skipped_rows.tsv; file-level problems always stop
    max_train_samples: int = 0     # 0: all
    max_train_per_class: int = 0   # > 0: a stratified sample of this many train rows per class (single-label; seeded
                                   # by train.seed; classes with fewer keep all), for few-shot experiments
    sampler: str = "shuffle"       # shuffle: every train row once per epoch | balanced: rows drawn with replacement,
                                   # every class equally likely (single-label; see data/balance.py)
    # texts longer than max_length (see data/truncation.py):
    truncation: str = "head"       # head | tail | head_tail | chunk (tail, head_tail, chunk: single texts only)
    head_ratio: float = 0.25       # head_tail: share of the token budget kept from the start; the rest comes from
                                   # the end (0.25 at max_length 512: 128 + 382 tokens, Sun et al. 2019)
    stride: Union[int, None] = None  # chunk: tokens shared by consecutive windows; default: a quarter of a window
    chunk_agg: str = "mean"        # chunk: a document's logits = mean | max of its windows' logits
    chunk_train: bool = True       # chunk: train on every window (with its document's label), as prediction sees
                                   # them; false: on the first window only (head), faster, no window label noise
    max_chunks: int = 8            # chunk: windows per document at most (later tokens are dropped)
    cache: str = "auto"            # token cache (data/cache.py): auto ($TRICKLAB_CACHE, else ~/.cache/tricklab) |
                                   # off (tokenise in memory every run) | a folder


@dataclass
class ModelConfig:
    name: str = "m3e-small"        # local folder, hub id, or alias (m3e-small, minilm-en)
    pooling: str = "pooler"        # pooler | cls | mean | max | last4_concat | last4_mean | last (the last real
                                   # token, for decoder LMs)
    head: str = "linear"           # linear | cnn | rnn | rcnn | dpcnn
    head_args: dict = field(default_factory=dict)   # the head's own settings, e.g. rnn: {hidden: 256, layers: 2}
    dropout: float = 0.1           # before the head
    prior_bias_init: str = "auto"  # auto | true | false: start the output biases at the train label priors
                                   # (multi-label log-odds log(p/(1-p)), single-label log p; Lin et al. 2017) so
                                   # training does not spend its first steps learning the priors; auto: multi-label
    lora: str = "auto"             # auto | false: a decoder LM backbone trains LoRA adapters (trick lora, its
                                   # defaults) unless the tricks name lora already; false: every weight trains


@dataclass
class TrainConfig:
    epochs: float = 3              # passes over train (a fraction stops part-way)
    batch_size: int = 32           # global batch (split across processes)
    eval_batch_size: int = 256     # dev/test batches (no gradients)
    lr: float = 5e-5               # peak learning rate of the encoder
    head_lr: float = 0.0           # 0: same as lr
    weight_decay: float = 0.01     # AdamW's decoupled weight decay (not on biases and LayerNorm weights)
    scheduler: str = "linear"      # linear | cosine | cosine_with_restarts | polynomial | constant |
                                   # constant_with_warmup | inverse_sqrt (transformers.get_scheduler)
    scheduler_args: dict = field(default_factory=dict)  # its extra arguments, e.g. {num_cycles: 2}, {power: 2}
    warmup_ratio: float = 0.05     # share of the optimizer steps spent warming up
    warmup_steps: int = 0          # > 0: this many warm-up steps instead of warmup_ratio
    max_grad_norm: float = 1.0     # 0: no clipping
    grad_accum: int = 1            # micro-batches per optimizer step (batch_size is the step's whole batch)
    precision: str = "auto"        # auto (bf16 where measured fast) | bf16 | fp16 | fp32
    compile: str = "auto"          # auto | true | false: torch.compile (inductor) of the encoder; auto: off (on this
                                   # project's CPUs it measured slower, compile time included: RESULTS §1)
    seed: int = 42                 # weights of the head, data order, dropout, held-out splits
    eval_every: int = 0            # optimizer steps between dev evaluations; 0: once per epoch
    metric: str = "auto"           # dev metric that picks the best checkpoint; auto: accuracy | micro_f1 | pearson
                                   # by task; single-label: macro_f1, weighted_f1, loss, f1_positive; multi-label:
                                   # macro_f1, micro_precision, micro_recall, subset_accuracy; regression: spearman, mse
    patience: int = 0              # early stopping after this many evaluations without gain; 0: off
    group_by_length: bool = True   # batches of similar length: less padding
    threads: int = 0               # torch CPU threads; 0: torch's default
    max_steps: int = 0             # stop after this many optimizer steps; 0: epochs decide
    log_every: int = 20            # optimizer steps between training-loss lines in log.jsonl
    checkpoint: bool = True        # write a resumable checkpoint at every dev evaluation (weights + optimizer state:
                                   # about 3x the model's size each, e.g. 288 MB for a 24M-parameter model)
    keep_checkpoints: int = 1      # how many of the latest checkpoints stay on disk
    adam_bias_correction: str = "auto"  # auto | true | false. false: BertAdam's steps, (1-b1^t)/sqrt(1-b2^t) x AdamW's
                                   # (6.5x at step 10); true: AdamW's. auto: false when the encoder fine-tunes
                                   # (strategy finetune, no adapters) at lr and head_lr <= 1e-4, else true (README
                                   # "Optimizer"; benchmarks/RESULTS.md §16)
    strategy: str = "finetune"     # finetune: the loss on the head's logits | setfit: contrastive pairs tune the
                                   # encoder, then a logistic-regression head on its frozen embeddings (training/setfit.py)
    setfit_iterations: int = 20    # setfit: pairs per train row and epoch: this many positive + this many negative
    setfit_head_c: float = 1.0     # setfit: inverse L2 strength of the logistic-regression head (scikit-learn's C)
    setfit_head_steps: int = 300   # setfit: L-BFGS iterations at most for the head


@dataclass
class CalibrationConfig:
    """Fitted on dev with the best model after training; stored in the model meta (see calibration.py,
    thresholds.py)."""
    thresholds: bool = True        # multi_label: tune a threshold per label for F1 (false: 0.5 everywhere)
    min_support: int = 5           # labels with fewer dev positives use one global threshold (tuned for micro-F1)
    temperature: bool = True       # single_label: temperature scaling of the probabilities (dev NLL)


@dataclass
class TrackingConfig:
    """Experiment tracking through Accelerate's trackers (training/tracking.py); log.jsonl is always written."""
    report_to: str = "none"        # none | tensorboard | wandb | mlflow (comma-separated for several)
    project: str = "tricklab"      # wandb project / mlflow experiment
    group: str = ""                # runs that belong together (compare: the grid); wandb group, mlflow tag
    run_name: str = ""             # default: the run folder's name (compare: <variant>/seed<k>)


@dataclass
class Config:
    task: str = "auto"             # auto (from the labels) | single_label | multi_label | regression
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plugins: list = field(default_factory=list)      # modules that register losses/tricks/heads/poolings
    loss: Any = None               # name or {name: ..., params}; None: the task's default
    aux_losses: list = field(default_factory=list)   # [{name: supcon, weight: 0.2, ...}]
    tricks: list = field(default_factory=list)       # [{name: rdrop, alpha: 4}, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        from .runfiles import atomic_write

        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if type(value) in args:  # an exact match wins (1 stays an int in Union[str, int])
            return value
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, path)
                except ConfigError:
                    continue
        raise ConfigError(f"config {path}: {value!r} is not one of {', '.join(getattr(a, '__name__', str(a)) for a in args)}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config {path}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config {path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config {path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config {path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config {path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, bool):  # YAML reads `true` as a bool; string options accept it
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"config {path}: expected a string, got {value!r}")
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        if not isinstance(value, base):
            raise ConfigError(f"config {path}: expected a {base.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a plain dict; unknown keys fail with their path and a hint."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(f"unknown config key {full!r}" + (f"; did you mean {(path + '.' if path else '') + hint[0]!r}?" if hint else "")
                              + f" (keys here: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], full)
    cfg = cls(**kwargs)
    if cls is Config:
        validate(cfg)
    return cfg


def check_encoding(name: str, what: str) -> str:
    """A text encoding that files can be read in by line: a line break is b"\\n" and no character holds that byte, and
    no state carries over from one line to the next (ASCII-compatible: UTF-8, GB18030/GBK, Big5, Shift_JIS,
    EUC-*, Windows-125x, ISO-8859-*, KOI8-*); its Python codec name. ConfigError with the fix otherwise (UTF-16/32,
    UTF-7, ISO-2022, HZ, EBCDIC, and codecs that are not text encodings, such as base64)."""
    import codecs

    try:
        info = codecs.lookup(name)
        ok = getattr(info, "_is_text_encoding", True) and "a\nb".encode(info.name) == b"a\nb"
    except (LookupError, TypeError, UnicodeError, ValueError):
        raise ConfigError(f"{what}: unknown text encoding {name!r}; fix: a Python codec name such as utf-8, gb18030, "
                          f"big5, shift_jis, cp1252") from None
    codec = info.name
    if not ok or codec.startswith(("utf-16", "utf-32", "utf-7", "iso2022", "hz")):
        raise ConfigError(f"{what}: {name} cannot be read by line (a line break is not one byte of its own there, or "
                          f"lines depend on earlier ones); fix: convert the file to UTF-8, e.g. `iconv -f "
                          f"{codec.upper()} -t UTF-8 FILE > FILE.utf8`")
    return codec


def _check_flag_columns(flags: Any) -> None:
    """data.label_column as a list: the 0/1 label columns, one per class (multi-label)."""
    if isinstance(flags, list) and (len(flags) < 2 or len(set(map(str, flags))) < len(flags) or not all(
            isinstance(c, str) or isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in flags)):
        raise ConfigError(f"config data.label_column: {flags!r}: a list names the 0/1 label columns (one per class, "
                          f"multi-label): two or more distinct column names or 0-based indices; fix: e.g. "
                          f"--set 'data.label_column=[toxic, obscene, insult]', or one name for a label column (names "
                          f"YAML reads as true/false/null, such as yes, no, on, off, need quotes: '[\"yes\", \"no\"]')")


def validate(cfg: Config) -> None:
    def choice(path: str, value: str, options: tuple[str, ...]) -> None:
        if value not in options:
            hint = difflib.get_close_matches(value, options, n=1)
            raise ConfigError(f"config {path}: {value!r} is not valid" + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" (choose from: {', '.join(options)})")

    choice("task", cfg.task, TASKS)
    choice("train.precision", cfg.train.precision, ("auto", "bf16", "fp16", "fp32"))
    choice("train.compile", cfg.train.compile, ("auto", "true", "false"))
    choice("data.lowercase", cfg.data.lowercase, ("auto", "true", "false"))
    choice("data.format", cfg.data.format, ("auto", "thucnews", "tsv", "csv", "jsonl", "txt", "json", "parquet", "arrow",
                                           "xlsx"))
    choice("data.header", cfg.data.header, ("auto", "true", "false"))
    choice("data.label_type", cfg.data.label_type, ("auto", "id", "name"))
    choice("data.truncation", cfg.data.truncation, ("head", "tail", "head_tail", "chunk"))
    choice("data.chunk_agg", cfg.data.chunk_agg, ("mean", "max"))
    choice("data.sampler", cfg.data.sampler, SAMPLERS)
    choice("data.on_invalid", cfg.data.on_invalid, ("error", "skip"))
    _check_flag_columns(cfg.data.label_column)
    choice("model.prior_bias_init", cfg.model.prior_bias_init, ("auto", "true", "false"))
    choice("train.adam_bias_correction", cfg.train.adam_bias_correction, ("auto", "true", "false"))
    choice("model.lora", cfg.model.lora, ("auto", "false"))
    choice("train.scheduler", cfg.train.scheduler, SCHEDULERS)
    choice("train.strategy", cfg.train.strategy, STRATEGIES)
    if cfg.train.strategy == "setfit":
        validate_setfit(cfg)
    if cfg.data.max_train_per_class < 0:
        raise ConfigError(f"config data.max_train_per_class: must be at least 0 (0: every train row), got "
                          f"{cfg.data.max_train_per_class}")
    if cfg.data.max_train_per_class and cfg.task in ("multi_label", "regression"):
        raise ConfigError(f"config data.max_train_per_class: a per-class sample is for single_label tasks, not "
                          f"{cfg.task}; fix: --set data.max_train_samples=N instead")
    if cfg.data.max_train_per_class and cfg.data.max_train_samples:
        raise ConfigError(f"config data.max_train_per_class={cfg.data.max_train_per_class} and data.max_train_samples="
                          f"{cfg.data.max_train_samples} together: a plain random cut after the per-class draw would "
                          f"undo its balance; fix: set one of them (the other to 0)")
    for tracker in tracker_names(cfg.tracking.report_to):
        choice("tracking.report_to", tracker, TRACKERS)
        if tracker == "none":
            raise ConfigError(f"config tracking.report_to: 'none' cannot be combined with trackers, got "
                              f"{cfg.tracking.report_to!r}")
    if cfg.train.warmup_steps < 0:
        raise ConfigError(f"config train.warmup_steps: must be at least 0 (0: use train.warmup_ratio), got "
                          f"{cfg.train.warmup_steps}")
    cfg.data.encoding = check_encoding(cfg.data.encoding, "config data.encoding")    # its codec name: utf8 is utf-8
    bad = [(k, v) for k, v in cfg.data.label_map.items() if isinstance(k, (dict, list)) or not isinstance(
        v, (str, int, float)) or isinstance(v, bool) or not str(v).strip()]
    if bad:
        raise ConfigError(f"config data.label_map: {bad[0][0]!r}: {bad[0][1]!r}: expected a label and the class name "
                          f"it stands for, e.g. {{0: negative, 1: positive}}")
    if not all(isinstance(p, str) and p.strip() for p in cfg.plugins):
        raise ConfigError(f"config plugins: expected a list of module names (e.g. [my_pkg.my_tricks]), got "
                          f"{cfg.plugins!r}")
    if cfg.task == "regression" and cfg.model.prior_bias_init == "true":
        raise ConfigError("config model.prior_bias_init: true is for classification tasks, not regression; "
                          "fix: --set model.prior_bias_init=auto")
    if not 0 <= cfg.data.head_ratio <= 1:
        raise ConfigError(f"config data.head_ratio: must be in [0, 1] (share of the tokens kept from the start; "
                          f"0.25 keeps 128 + 382 of 512), got {cfg.data.head_ratio}")
    if not 0 <= cfg.data.test_ratio < 1:
        raise ConfigError(f"config data.test_ratio: must be in [0, 1) (the share of train held out as test when there "
                          f"is no test file; 0: none), got {cfg.data.test_ratio}")
    if cfg.data.max_chunks < 1:
        raise ConfigError(f"config data.max_chunks: must be at least 1 (windows per document), got {cfg.data.max_chunks}")
    if cfg.data.stride is not None and not 0 <= cfg.data.stride < cfg.data.max_length - 2:
        raise ConfigError(f"config data.stride: tokens shared by consecutive windows must be in 0..{cfg.data.max_length - 3} "
                          f"(less than data.max_length={cfg.data.max_length} minus the special tokens), got "
                          f"{cfg.data.stride}; fix: --set data.stride={max(0, cfg.data.max_length // 4)}")
    for path, v, lo in (("data.max_length", cfg.data.max_length, 2), ("train.batch_size", cfg.train.batch_size, 1),
                        ("train.grad_accum", cfg.train.grad_accum, 1), ("train.eval_batch_size", cfg.train.eval_batch_size, 1)):
        if v < lo:
            raise ConfigError(f"config {path}: must be at least {lo}, got {v}")
    if cfg.train.keep_checkpoints < 1:
        raise ConfigError(f"config train.keep_checkpoints: must be at least 1 (the latest checkpoints kept; "
                          f"train.checkpoint=false writes none), got {cfg.train.keep_checkpoints}")
    if cfg.train.log_every < 1:
        raise ConfigError(f"config train.log_every: must be at least 1, got {cfg.train.log_every}")
    if cfg.train.epochs <= 0 and cfg.train.max_steps <= 0:
        raise ConfigError(f"config train.epochs: must be positive (or set train.max_steps), got {cfg.train.epochs}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"config train.lr: must be positive, got {cfg.train.lr}")
    if not 0 <= cfg.train.warmup_ratio < 1:
        raise ConfigError(f"config train.warmup_ratio: must be in [0, 1), got {cfg.train.warmup_ratio}")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"config model.dropout: must be in [0, 1), got {cfg.model.dropout}")
    if cfg.calibration.min_support < 1:
        raise ConfigError(f"config calibration.min_support: must be at least 1 (dev positives a label needs for a "
                          f"threshold of its own), got {cfg.calibration.min_support}")
    for key in ("aux_losses", "tricks"):
        for i, item in enumerate(getattr(cfg, key)):
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError(f"config {key}[{i}]: expected a mapping with a 'name', got {item!r}")


def validate_setfit(cfg: Config) -> None:
    """train.strategy=setfit: single-label, a linear head (the logistic regression), whole texts, no other loss or
    trick than LoRA (the pairs then train the adapters: a decoder backbone gets them by default)."""
    tc = cfg.train
    if cfg.task in ("multi_label", "regression"):
        raise ConfigError(f"config train.strategy=setfit: for single_label classification only, not {cfg.task}; "
                          f"fix: --set train.strategy=finetune")
    if cfg.model.head != "linear":
        raise ConfigError(f"config train.strategy=setfit fits a logistic-regression head: model.head must be linear, "
                          f"got {cfg.model.head!r}; fix: --set model.head=linear")
    if cfg.data.sampler != "shuffle" or cfg.model.prior_bias_init == "true":
        key, value = (("data.sampler", cfg.data.sampler) if cfg.data.sampler != "shuffle"
                      else ("model.prior_bias_init", "true"))
        raise ConfigError(f"config train.strategy=setfit draws its own balanced pairs and fits the head afterwards, so "
                          f"{key}={value} would not be used; fix: drop it or --set train.strategy=finetune")
    if cfg.data.truncation == "chunk":
        raise ConfigError("config train.strategy=setfit pairs whole texts and fits its head on one embedding per text, "
                          "so data.truncation=chunk (windows) does not apply; fix: --set data.truncation=head_tail "
                          "(or head), or --set train.strategy=finetune")
    tricks = [t for t in cfg.tricks if t.get("name") != "lora"]
    used = [k for k, v in (("loss", cfg.loss), ("aux_losses", cfg.aux_losses), ("tricks", tricks)) if v]
    if used:
        raise ConfigError(f"config train.strategy=setfit trains with its own contrastive loss, so {', '.join(used)} "
                          f"would not be used (LoRA excepted); fix: remove {', '.join(used)} or --set "
                          f"train.strategy=finetune")
    for path, v, lo in (("train.setfit_iterations", tc.setfit_iterations, 1),
                        ("train.setfit_head_steps", tc.setfit_head_steps, 1)):
        if v < lo:
            raise ConfigError(f"config {path}: must be at least {lo}, got {v}")
    if tc.setfit_head_c <= 0:
        raise ConfigError(f"config train.setfit_head_c: must be positive (inverse L2 strength), got {tc.setfit_head_c}")


def tracker_names(report_to: str) -> list[str]:
    """'tensorboard,wandb' -> ['tensorboard', 'wandb']; 'none' or '' -> []."""
    names = [t.strip() for t in str(report_to).split(",") if t.strip()]
    return [] if names in ([], ["none"]) else names


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], c) with c read as YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr=3e-5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_float(raw):
        value = float(raw)
    return key.strip().split("."), value


def _looks_float(s: str) -> bool:  # YAML 1.1 reads "3e-5" as a string
    try:
        float(s)
        return True
    except ValueError:
        return False


def deep_set(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is not a section")
    d[keys[-1]] = value


def read_yaml_mapping(path: str | Path, what: str, fix: str, entries: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); errors start with `what` and the path."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p}: file not found; fix: {fix}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {p}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p}: expected a mapping of {entries} at the top level")
    return data


def load_config(path: str | Path | None = None, sets: list[str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """YAML file (optional) + `--set` strings + flat {"a.b": value} overrides -> Config."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, "config file", "give the path of a YAML file (see configs/)", "keys")
    for item in sets or []:
        keys, value = parse_set(item)
        deep_set(data, keys, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            deep_set(data, key.split("."), value)
    return from_dict(Config, data)


def _field_comments(cls: type) -> dict[str, list[str]]:
    """A config dataclass's fields -> the comment lines written beside them in this file (continuation lines too)."""
    import inspect
    import re

    out: dict[str, list[str]] = {}
    last = None
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):       # an install without the .py sources: values without comments
        return out
    for line in source.splitlines():
        m = re.match(r"    (\w+): [^#]*?(?:#\s?(.*))?$", line)
        if m and not line.lstrip().startswith("#"):
            last = m.group(1)
            out[last] = [m.group(2).strip()] if m.group(2) else []
        elif last and re.match(r"\s{20,}#", line):
            out[last].append(line.strip()[1:].strip())
        else:
            last = None
    return out


def annotated_yaml(cfg: Config) -> str:
    """The config as YAML, every key with the comment it has in config.py and, where it differs, its default
    (`tricklab config`). yaml.safe_load of the text gives cfg.to_dict()."""
    default = Config().to_dict()

    def scalar(v: Any) -> str:
        for uni in (True, False):      # allow_unicode writes U+0085 raw, which YAML reads as a line break
            text = yaml.safe_dump(v, default_flow_style=True, allow_unicode=uni, width=10**6, sort_keys=False)
            text = text.strip().removesuffix("\n...")
            if yaml.safe_load(text) == v:
                break
        return text

    def block(cls: type, values: dict[str, Any], defaults: dict[str, Any], indent: str) -> list[str]:
        comments = _field_comments(cls)
        lines = []
        for f in dataclasses.fields(cls):
            v = values[f.name]
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                lines += ["", f"{indent}{f.name}:"] + block(f.default_factory, v, defaults[f.name], indent + "  ")
                continue
            note = list(comments.get(f.name, [])) or [""]
            if v != defaults[f.name]:
                note[-1] = f"{note[-1]} (default: {scalar(defaults[f.name])})".lstrip()
            if not indent and lines and lines[-1].startswith(" "):
                lines.append("")                       # after a section
            head = f"{indent}{f.name}: {scalar(v)}"
            pad = " " * max(1, 34 - len(head))
            lines.append(head + (f"{pad}# {note[0]}" if note[0] else ""))
            lines += [" " * (len(head) + len(pad)) + f"# {n}" for n in note[1:]]
        return lines

    return "\n".join(block(Config, cfg.to_dict(), default, "")).lstrip("\n") + "\n"
