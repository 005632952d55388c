"""The training loop, on Accelerate (one process, or DDP via `accelerate launch` / `torchrun`).

Every trick plugs in through the hooks of tricks/base.py; nothing here knows any trick by name.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from . import losses as _losses  # noqa: F401  (registration)
from . import tricks as _tricks  # noqa: F401
from .checkpoint import latest_checkpoint, load_checkpoint, replace_dir, save_checkpoint
from .calibration import fit_temperature, plot_reliability
from .config import CalibrationConfig, Config, load_config
from .context import TrainContext
from .data import DataBundle, Encoded, collate, encode, load_data, needs_lowercase, train_batches
from .data.truncation import Truncation
from .errors import ConfigError, TrickLabError
from .evaluate import DEFAULT_METRIC, TASK_METRICS, compute_metrics, compute_run_metrics, is_better, sigmoid
from .losses import DEFAULT_LOSS
from .model import build_classifier, prior_bias, save_model
from .optim import param_groups, warmup_linear
from .predictions import save_predictions
from .registry import LOSSES, TRICKS
from .report import metrics_table, per_class_table, plot_confusion, write_bad_cases
from .runtime import all_logits, resolve_precision
from .thresholds import tune_thresholds
from .tricks import Trick
from .types import Batch


@dataclass
class State:
    epoch: int = 0          # current epoch
    batch: int = 0          # next global batch within the epoch (data position for --resume)
    step: int = 0           # optimizer steps done
    best: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    samples: int = 0
    train_seconds: float = 0.0


def build_losses(cfg: Config, task: str) -> dict[str, tuple[float, torch.nn.Module]]:
    """{log name: (weight, loss module)}: the main loss (weight 1) and weighted auxiliary terms."""
    spec = cfg.loss if cfg.loss is not None else DEFAULT_LOSS[task]
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise ConfigError(f"config loss: expected a name or a mapping with 'name', got {cfg.loss!r}")
    out: dict[str, tuple[float, torch.nn.Module]] = {}
    for i, item in enumerate([spec] + [dict(a) for a in cfg.aux_losses]):
        name = item.pop("name")
        default_weight = getattr(LOSSES.get_or_fail(name), "default_weight", 1.0)
        weight = float(item.pop("weight", default_weight)) if i else 1.0
        loss = LOSSES.build(name, **item)
        if task not in loss.tasks:
            raise ConfigError(f"loss {name!r} is for {'/'.join(loss.tasks)} tasks, not {task}; "
                              f"fix: choose another --loss (default for {task}: {DEFAULT_LOSS[task]})")
        key = name if name not in out else f"{name}_{i}"
        out[key] = (weight, loss)
    return out


def run_meta(cfg: Config, bundle: DataBundle, lowercase: bool, backbone: str) -> dict[str, Any]:
    return {"task": bundle.task, "num_labels": bundle.label_map.num_labels, "labels": bundle.label_map.to_dict(),
            "precision": cfg.train.precision,
            "model": {"pooling": cfg.model.pooling, "head": cfg.model.head, "head_args": cfg.model.head_args,
                      "dropout": cfg.model.dropout, "backbone": backbone},
            "data": {"max_length": cfg.data.max_length, "lowercase": lowercase, "pair": bundle.is_pair,
                     "truncation": Truncation.from_config(cfg.data).to_meta() | {"chunk_train": cfg.data.chunk_train}}}


def forward_backward(model: torch.nn.Module, losses: dict[str, tuple[float, torch.nn.Module]], tricks: list[Trick],
                     backward: Callable[[torch.Tensor], None], batch: Batch, scale: float) -> dict[str, torch.Tensor]:
    """One forward pass, every loss term (weighted) and the tricks' extra terms, one backward of their sum times
    `scale` (1 / micro-batches per step, so accumulated gradients are the mean over the step's micro-batches)."""
    out = model(**batch.inputs)
    parts = {name: w * loss(out, batch) for name, (w, loss) in losses.items()}
    for t in tricks:
        parts |= t.extra_losses(model, batch, out)
    backward(sum(parts.values()) * scale)
    return parts


def accumulate_gradients(model: torch.nn.Module, micro_batches: list[Batch],
                         losses: dict[str, tuple[float, torch.nn.Module]], tricks: list[Trick],
                         backward: Callable[[torch.Tensor], None],
                         no_sync: Callable[[torch.nn.Module], Any] | None = None) -> dict[str, float]:
    """The gradients of one optimizer step: forward + backward of each micro-batch with the tricks' hooks
    (transform_batch before, after_backward after: FGM/PGD add their adversarial passes there). The gradients
    left in .grad are the mean over the micro-batches; `no_sync` (DDP) defers the all-reduce to the last one.
    Returns each loss term averaged over the micro-batches."""
    n = len(micro_batches)
    running: dict[str, float] = {}
    for i, batch in enumerate(micro_batches):
        for t in tricks:
            batch = t.transform_batch(batch)
        fb = partial(forward_backward, model, losses, tricks, backward, batch, 1.0 / n)
        with no_sync(model) if no_sync is not None and i < n - 1 else contextlib.nullcontext():
            parts = fb()
            for t in tricks:
                t.after_backward(model, fb)
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + float(v.detach()) / n
    return running


def optimizer_step(accelerator: Accelerator, optimizer: Any, scheduler: Any, trainable: list[torch.nn.Parameter],
                   max_grad_norm: float, loss_params: list[torch.nn.Parameter]) -> bool:
    """Average the loss modules' gradients across processes (they sit outside DDP), clip, step, zero the
    gradients. Returns False when the fp16 gradient scaler skipped the update (inf/NaN gradients): the
    schedule then does not advance either, as in the transformers Trainer."""
    world = accelerator.num_processes
    if world > 1:
        for p in loss_params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    stepped = not accelerator.optimizer_step_was_skipped
    if stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def train(cfg: Config, data: str | Path, dev: str | Path | None = None, test: str | Path | None = None,
          out: str | Path = "runs/run", resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train, keep the best dev checkpoint in out/model, evaluate it; returns the metrics dict."""
    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise TrickLabError(f"--resume: {out} has no config.yaml: it is not a run folder; fix: give the --out of "
                                f"the run to continue, or drop --resume")
        cfg = load_config(out / "config.yaml")
    elif (out / "checkpoints" / "latest").exists():
        raise TrickLabError(f"{out} already holds a run; fix: add --resume to continue it, or choose another --out")
    tc = cfg.train
    precision = resolve_precision(tc.precision, "cuda" if torch.cuda.is_available() else "cpu")
    AcceleratorState._reset_state()  # one process may train several runs (tests, grids) with other precisions
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision])
    device = accelerator.device
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    if tc.threads:
        torch.set_num_threads(tc.threads)
    set_seed(tc.seed)

    bundle = load_data(cfg, data, dev, test)                       # every data problem, before the model loads
    cfg.task = bundle.task
    lm = bundle.label_map
    model, tok, backbone = build_classifier(cfg.model.name, lm.num_labels, cfg.model.pooling, cfg.model.head,
                                            cfg.model.head_args, cfg.model.dropout)
    lower = cfg.data.lowercase == "true" or (cfg.data.lowercase == "auto" and needs_lowercase(tok))
    notes = list(bundle.notes)
    pbi = cfg.model.prior_bias_init
    if pbi == "true" or (pbi == "auto" and bundle.task == "multi_label"):  # --resume: the checkpoint overwrites it
        model.init_output_bias(prior_bias(bundle.task, bundle.class_counts(), len(bundle.train)))
        notes.append(f"prior_bias_init: output biases start at the train label "
                     f"{'log-odds' if bundle.task == 'multi_label' else 'log-priors'}"
                     + ("; --set model.prior_bias_init=false to disable" if pbi == "auto" else ""))
    if lower and cfg.data.lowercase == "auto":
        notes.append("lowercase: on: this tokenizer keeps capitals but its vocabulary has lower-case Latin letters "
                     "only (capitals would become [UNK]); --set data.lowercase=false to disable")

    trunc = Truncation.from_config(cfg.data)

    def enc(split: Any, t: Truncation = trunc) -> Encoded:
        return encode(tok, [r.text for r in split.rows], [r.text_b for r in split.rows] if bundle.is_pair else None,
                      cfg.data.max_length, lower, split.labels, t)

    # chunk: every window is a training example with its document's label, unless data.chunk_train=false (head)
    train_enc = enc(bundle.train, replace(trunc, policy="head") if trunc.policy == "chunk" and not cfg.data.chunk_train
                    else trunc)
    dev_enc = enc(bundle.dev)
    if bundle.train.soft is not None:
        train_enc.extra["soft_labels"] = train_enc.expand(bundle.train.soft)
    test_enc = enc(bundle.test) if bundle.test is not None else None
    if trunc.policy == "chunk":
        notes.append(f"truncation: chunk: train {len(bundle.train)} texts -> {len(train_enc)} training examples, "
                     f"dev {len(bundle.dev)} -> {len(dev_enc)} windows (logits: {trunc.agg} per text)")
    lengths = train_enc.lengths
    if tc.batch_size < world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch: it must be at least the number "
                          f"of processes ({world})")

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        """This process's batches for one epoch: its slice of every global batch."""
        batches = train_batches(lengths, tc.batch_size, tc.seed, epoch, tc.group_by_length)
        if world > 1:
            batches = [np.array_split(b, world)[rank] for b in batches if len(b) >= world]
        return batches

    batches_per_epoch = len(epoch_batches(0))
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = tc.max_steps or math.ceil(steps_per_epoch * tc.epochs)
    ctx = TrainContext(bundle.task, lm.num_labels, lm.names, bundle.class_counts(), len(bundle.train), total_steps,
                       device, out, {"train": bundle.train, "tokenizer": tok, "feature_dim": model.classifier.feature_dim})

    losses = build_losses(cfg, bundle.task)
    ctx.data |= {"main_loss": next(iter(losses.values()))[1], "loss_modules": [m for _, m in losses.values()]}
    for _, loss in losses.values():
        loss.setup(ctx)
        loss.to(device)
    tricks = [TRICKS.build(t["name"], **{k: v for k, v in t.items() if k != "name"}) for t in cfg.tricks]
    for t in tricks:
        t.setup(model, ctx)
    model.to(device)
    groups = param_groups(model, [m for _, m in losses.values()], tc)
    for t in tricks:
        groups = t.param_groups(model, groups)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "param_names"} for g in groups], lr=tc.lr,
                                  fused=device.type in ("cpu", "cuda"))  # one kernel per step, not one per tensor
    scheduler = warmup_linear(optimizer, int(tc.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    loss_params = [p for _, m in losses.values() for p in m.parameters() if p.requires_grad]
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    st = State()
    ckpt_root = out / "checkpoints"
    if resume and (ck := latest_checkpoint(ckpt_root)) is not None:
        model_state, blobs, saved = load_checkpoint(ck)
        raw_model.load_state_dict(model_state)
        optimizer.load_state_dict(blobs["optimizer"])
        scheduler.load_state_dict(blobs["scheduler"])
        for i, (_, loss) in enumerate(losses.values()):
            if f"loss{i}" in blobs:
                loss.load_state_dict(blobs[f"loss{i}"])
        for t, s in zip(tricks, blobs.get("tricks", [])):
            t.load_state_dict(s)
        st = State(**saved)
        notes.append(f"resume: from {ck.name} (epoch {st.epoch + 1}, step {st.step})")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        for n in notes:
            tqdm.write(f"note: {n}")
        tqdm.write(f"train {len(bundle.train)} | dev {len(bundle.dev)}"
                   + (f" | test {len(bundle.test)}" if bundle.test else "")
                   + f" | {lm.num_labels} {'labels' if bundle.task != 'regression' else 'output'} | precision {precision}"
                   + f" | {total_steps} steps | {world} process(es) on {device.type}")
    log = open(out / "log.jsonl", "a", encoding="utf-8") if main else None
    meta = run_meta(cfg, bundle, lower, backbone)
    metric = DEFAULT_METRIC[bundle.task] if tc.metric == "auto" else tc.metric
    if metric not in TASK_METRICS[bundle.task] or (metric == "f1_positive" and lm.num_labels != 2):
        raise ConfigError(f"train.metric={metric!r} is not a {bundle.task} metric (choose from: "
                          f"{', '.join(TASK_METRICS[bundle.task])}; f1_positive needs 2 classes)")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    def write_log(rec: dict[str, Any]) -> None:
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()

    def evaluate_dev() -> dict[str, Any]:
        logits = all_logits(raw_model, dev_enc, tc.eval_batch_size, pad_id, device, precision, (rank, world))
        return compute_metrics(bundle.task, logits, bundle.dev.labels, lm.names)

    def evaluate_and_keep_best(epoch: int) -> None:
        with contextlib.ExitStack() as stack:
            for t in tricks:
                stack.enter_context(t.eval_weights(model))
            m = evaluate_dev()
            improved = is_better(metric, m[metric], st.best)
            if improved:
                st.best, st.best_step, st.bad_evals = m[metric], st.step, 0
                if main:
                    tmp = out / "model.tmp"
                    save_model(raw_model, tok, tmp, meta)
                    replace_dir(tmp, out / "model")
            else:
                st.bad_evals += 1
        write_log({"step": st.step, "epoch": epoch, **{f"dev/{k}": v for k, v in m.items() if isinstance(v, float)}})
        bar.set_postfix_str(f"dev {metric} {m[metric]:.4f} (best {st.best:.4f})", refresh=False)
        if tc.checkpoint:
            accelerator.wait_for_everyone()
            if main:
                blobs = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "tricks": [t.state_dict() for t in tricks]}
                blobs |= {f"loss{i}": loss.state_dict() for i, (_, loss) in enumerate(losses.values()) if loss.state_dict()}
                save_checkpoint(ckpt_root, st.step, raw_model.state_dict(), blobs, asdict(st))
            accelerator.wait_for_everyone()

    bar = tqdm(total=total_steps, initial=st.step, disable=not (main and progress), desc="train", dynamic_ncols=True)
    running: dict[str, float] = {}
    n_running = 0
    done = st.step >= total_steps or bool(tc.patience and st.bad_evals >= tc.patience)
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    while not done and st.epoch < n_epochs:
        batches = epoch_batches(st.epoch)
        model.train()
        t0 = time.perf_counter()
        while st.batch < len(batches) and not done:
            group = batches[st.batch: st.batch + tc.grad_accum]
            micro = [collate(train_enc, idx, pad_id, bundle.task, lm.num_labels).to(device) for idx in group]
            parts = accumulate_gradients(model, micro, losses, tricks, accelerator.backward,
                                         accelerator.no_sync if world > 1 else None)
            st.samples += sum(len(idx) for idx in group) * world
            st.batch += len(group)
            # False when the fp16 scaler skipped the update (inf gradients): no step, no schedule, no EMA
            stepped = optimizer_step(accelerator, optimizer, scheduler, trainable, tc.max_grad_norm, loss_params)
            if stepped:
                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + v
                st.step += 1
                for t in tricks:
                    t.after_step(model, st.step)
                n_running += 1
                bar.update(1)
            done = st.step >= total_steps
            if stepped and (st.step % tc.log_every == 0 or done):
                rec = {"step": st.step, "epoch": st.epoch + 1, "lr": scheduler.get_last_lr()[0],
                       "loss": sum(running.values()) / n_running,
                       **{f"loss/{k}": v / n_running for k, v in running.items()}}
                write_log(rec)
                bar.set_description(f"train loss {rec['loss']:.4f}", refresh=False)
                running, n_running = {}, 0
            end_of_epoch = st.batch >= len(batches)
            if (stepped and tc.eval_every and st.step % tc.eval_every == 0) or done or (not tc.eval_every and end_of_epoch):
                st.train_seconds += time.perf_counter() - t0
                epoch = st.epoch + 1
                if end_of_epoch:  # the checkpoint then points at the next epoch's start
                    st.epoch, st.batch = st.epoch + 1, 0
                evaluate_and_keep_best(epoch)
                t0 = time.perf_counter()
                if tc.patience and st.bad_evals >= tc.patience:
                    tqdm.write(f"early stop: no dev {metric} gain in {tc.patience} evaluations") if main else None
                    done = True
                if end_of_epoch:
                    break
        else:
            st.train_seconds += time.perf_counter() - t0
            st.epoch, st.batch = st.epoch + 1, 0
    bar.close()
    if log:
        log.close()
    accelerator.wait_for_everyone()
    result = finish(out, bundle, dev_enc, test_enc, tc.eval_batch_size, device, precision, metric, st, main,
                    cfg.calibration) if main else {}
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def finish(out: Path, bundle: DataBundle, dev_enc: Encoded, test_enc: Encoded | None, batch_size: int,
           device: torch.device, precision: str, metric: str, st: State, verbose: bool,
           calib: CalibrationConfig | None = None) -> dict[str, Any]:
    """Reload the best weights; on dev, fit the temperature (single-label) or tune the thresholds (multi-label)
    into the model meta; evaluate dev (and test); write metrics.json, bad_cases.tsv (test, else dev), the
    confusion matrix and the reliability diagram."""
    from .model import load_model
    from .model.classifier import META_FILE

    model, tok, meta = load_model(out / "model")
    model.to(device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    names = bundle.label_map.names
    res: dict[str, Any] = {}
    preds: dict[str, tuple[np.ndarray, list[Any]]] = {}
    for name, e, split in (("dev", dev_enc, bundle.dev), ("test", test_enc, bundle.test)):
        if e is not None:
            preds[name] = (all_logits(model, e, batch_size, pad_id, device, precision), split.labels)
    calib = calib or CalibrationConfig()
    meta = {k: v for k, v in meta.items() if k not in ("temperature", "thresholds")}  # refit on every finish
    if bundle.task == "single_label" and calib.temperature:
        meta["temperature"] = fit_temperature(*preds["dev"])
    if bundle.task == "multi_label" and calib.thresholds:
        meta["thresholds"] = tune_thresholds(sigmoid(preds["dev"][0]), bundle.dev.labels, names, calib.min_support)
    (out / "model" / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    for name, (lg, gold) in preds.items():
        res[name] = compute_run_metrics(bundle.task, lg, gold, names, meta)
    # per-example logits for `tricklab compare`'s paired tests
    save_predictions(out / "predictions.npz", bundle.task, bundle.label_map.num_labels, preds)  # before metrics.json
    final = res.get("test", res["dev"])
    headline = {k: v for k, v in final.items() if k != "confusion_matrix"}
    metrics = {**headline, "evaluated_on": "test" if "test" in res else "dev", "best_step": st.best_step,
               "best_dev": {metric: st.best}, "train_samples_per_s": st.samples / max(st.train_seconds, 1e-9),
               "train_seconds": st.train_seconds, "steps": st.step, **res}
    if "thresholds" in meta:
        metrics["thresholds"] = meta["thresholds"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    ev = metrics["evaluated_on"]
    split = bundle.test if ev == "test" else bundle.dev
    write_bad_cases(out / "bad_cases.tsv", ev, bundle.task, split.rows, split.labels, preds[ev][0], names, meta)
    written = ["model/", "metrics.json", "log.jsonl", "bad_cases.tsv"]
    if "confusion_matrix" in final:
        plot_confusion(final["confusion_matrix"], names, out / "confusion_matrix.png",
                       f"{metrics['evaluated_on']} confusion matrix (acc {final['accuracy']:.4f})")
        written.append("confusion_matrix.png")
    if "temperature" in meta:
        plot_reliability(preds[ev][0], split.labels, meta["temperature"], out / "reliability.png",
                         f"{ev} reliability (temperature fitted on dev)")
        written.append("reliability.png")
    if verbose:
        print(metrics_table({k: v for k, v in res.items()}))
        print(per_class_table(final))
        print(f"run folder: {out}  ({', '.join(written)})")
    return metrics
