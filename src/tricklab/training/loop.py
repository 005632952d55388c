"""The training loop, on Accelerate (one process, or DDP via `accelerate launch` / `torchrun`), in named steps:

    run = setup(...)                      # training/setup.py: data, model, losses, tricks, optimizer, --resume
    fit(run):                             # epochs of optimizer steps
        train_step(run, micro-batches)    #   training/step.py: forward/backward with the tricks' hooks, update
        evaluate_and_keep_best(run)       #   dev metric under the tricks' eval weights; save the best model
        save_resume_checkpoint(run)       #   raw weights, optimizer, schedule, trick states
    finish(...)                           # evaluation/final.py: best model on dev/test, calibration, reports

Every trick plugs in through the hooks of tricks/base.py; nothing here knows any trick by name.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TextIO

from tqdm.auto import tqdm

from ..config import Config
from ..data import collate
from ..data.invalid import SKIPPED_FILE, skipped_note, write_skipped
from ..evaluation.final import finish
from ..evaluation.metrics import compute_metrics, is_better
from ..evaluation.model_card import detect_language, write_model_card
from ..model import save_model
from ..model.adapters import frozen_base_keys
from ..model.runtime import all_logits
from ..runfiles import RunLock, atomic_write, writable
from .checkpoint import remove, replace_dir, resume_weights, save_checkpoint
from .provenance import note_resume, write_run_json
from .setfit import fit_setfit, setfit_note
from .setup import Run, bias_correction, run_config, setup
from .step import accumulate_gradients, optimizer_step
from .tracking import log_scalars, start_tracking


def train(cfg: Config | None, data: Any = None, dev: Any = None, test: Any = None, out: str | Path = "runs/run",
          resume: bool = False, progress: bool = True,
          force: bool = False, overwrite: bool = False, command: str | None = None,
          on_evaluate: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, keep the best dev checkpoint in out/model, evaluate it, write its model card (model/README.md;
    `command`: the command line shown there); returns the metrics dict.

    data (and dev, test): a file or folder, `hf:NAME[:CONFIG]`, a `datasets` folder, or in-memory data: a
    datasets.Dataset/DatasetDict, a pandas DataFrame, a list of dicts or (text, label) tuples (data/sources.py),
    read with the same checks as files (a problem names the row index and column).

    resume: continue the run in `out` from its last checkpoint with its own config.yaml (`cfg` is ignored) and,
    when `data` is None, its recorded data files (run.json); other data or versions are refused unless `force`.
    overwrite: replace the run in `out` (without it, a folder holding a run is refused).
    on_evaluate(step, dev_metrics): called after every dev evaluation (`tricklab tune` reports to its pruner there);
    an exception it raises stops the run and propagates (the run folder keeps its last checkpoint).

    The run folder is locked for the run's life (runfiles.RunLock): a second process writing it is refused."""
    out = Path(out)
    run_config(cfg, out, resume, overwrite)            # a folder that must not be touched is refused before the lock
    main_rank = os.environ.get("RANK", "0") == "0"     # under torchrun/accelerate launch, rank 0 holds the lock
    with RunLock(out) if main_rank else contextlib.nullcontext():
        return train_locked(cfg, data, dev, test, out, resume, progress, force, overwrite, command, on_evaluate)


def train_locked(cfg: Config | None, data: str | Path | None, dev: str | Path | None, test: str | Path | None,
                 out: Path, resume: bool, progress: bool, force: bool, overwrite: bool, command: str | None,
                 on_evaluate: Callable[[int, dict[str, Any]], None] | None) -> dict[str, Any]:
    run = setup(cfg, data, dev, test, out, resume, force=force, overwrite=overwrite)
    run.on_evaluate = on_evaluate
    announce(run)
    start_tracking(run.accelerator, run.cfg, run.out)
    writable(run.out / "log.jsonl", run.out)           # appended to: never through a link out of the run
    with open(run.out / "log.jsonl", "a", encoding="utf-8") if run.main else contextlib.nullcontext() as log:
        (fit_few_shot if run.cfg.train.strategy == "setfit" else fit)(run, log, progress)
    acc = run.accelerator
    acc.wait_for_everyone()
    st = run.state
    figures = {"best_step": st.best_step, "best_dev": {run.metric: st.best},
               "train_samples_per_s": st.samples / max(st.train_seconds, 1e-9), "train_seconds": st.train_seconds,
               "steps": st.step, "trainable_parameters": sum(p.numel() for p in run.trainable)}
    result = finish(run.out, run.bundle, run.enc.dev, run.enc.test, run.cfg.train.eval_batch_size, run.device,
                    run.precision, figures, run.main, run.cfg.calibration) if run.main else {}
    if run.main:
        with open(run.out / "log.jsonl", "a", encoding="utf-8") as log:
            record(run, log, final_record(result, st.step))
        write_model_card(run.out, command, detect_language([r.text for r in run.bundle.train.rows[:2000]]),
                         dataset_names(run.data_record["args"]["data"]))   # resolved: --resume may omit --data
    acc.wait_for_everyone()
    acc.end_training()
    return result


def dataset_name(data: str | Path) -> str:
    """The data's name for the model card: its folder's name (a folder, or a train.* file in one), else the file's;
    for `hf:NAME[:CONFIG]` the hub id NAME."""
    if str(data).startswith("hf:"):
        return str(data)[3:].split(":")[0]
    p = Path(data).resolve()
    stem = p.name.split(".")[0]
    return p.name if p.is_dir() else p.parent.name if stem == "train" else stem


def dataset_names(data: str | None) -> list[str]:
    """[the name] for the card; none for in-memory data."""
    return [] if data is None or data.startswith("<in-memory") else [dataset_name(data)]


# what a run writes in its folder (finish: evaluation/final.py; model/ and checkpoints/ are folders)
RUN_OUTPUTS = ("config.yaml", "run.json", "log.jsonl", "metrics.json", "predictions.npz", "bad_cases.tsv",
               "confusion_matrix.png", "reliability.png", "skipped_rows.tsv", "model", "model.tmp", "checkpoints")


def announce(run: Run) -> None:
    """Write the resolved config; print the notes and one line of what is about to happen."""
    if not run.main:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:       # refused before training, not after it: no write through a link out of the run
        writable(run.out / name, run.out)
    run.cfg.save(run.out / "config.yaml")
    if run.forced is None:
        write_run_json(run.out, run.data_record)
    else:
        note_resume(run.out, run.data_record, run.forced)
        if run.forced:
            run.notes.append("--force: resuming despite: " + "; ".join(run.forced))
        dropped = truncate_log(run.out / "log.jsonl", run.state.step)
        if dropped:
            run.notes.append(f"log.jsonl: {dropped} record(s) past step {run.state.step} dropped (they are logged "
                             f"again from the checkpoint)")
    if run.bundle.skipped is not None:
        write_skipped(run.out / SKIPPED_FILE, run.bundle.skipped)
        run.notes.append(skipped_note(run.bundle.skipped, run.out / SKIPPED_FILE))
    if run.cfg.train.strategy == "setfit":
        run.notes.append(setfit_note(run, len(run.enc.train)))
    elif run.cfg.train.checkpoint:
        run.notes.append(checkpoint_note(run))
    for n in run.notes:
        tqdm.write(f"note: {n}")
    for w in run.warnings:
        tqdm.write(f"warning: {w}")
    tqdm.write(recipe_line(run))
    b, lm = run.bundle, run.bundle.label_map
    tqdm.write(f"train {len(b.train)} | dev {len(b.dev)}" + (f" | test {len(b.test)}" if b.test else "")
               + f" | {lm.num_labels} {'labels' if b.task != 'regression' else 'output'} | precision {run.precision}"
               + f" | {run.total_steps} steps | {run.world} process(es) on {run.device.type}")


def recipe_line(run: Run) -> str:
    """The recipe this run trains with, whether it came from the defaults, a config file or --set (README
    "Default recipe")."""
    m, d, t = run.cfg.model, run.cfg.data, run.cfg.train
    warm = f"{t.warmup_steps} steps" if t.warmup_steps > 0 else f"{t.warmup_ratio:.0%}"
    auto = "auto: " if t.adam_bias_correction == "auto" else ""
    steps = (f"AdamW steps{' (auto)' * bool(auto)}" if bias_correction(t, run.raw_model)
             else f"BertAdam steps ({auto}no bias correction)")
    lr = f"lr {num(t.lr)}" + (f" (head {num(t.head_lr)})" if t.head_lr else "")
    batch = f"batch {t.batch_size}" + (f" x {t.grad_accum} accumulation" if t.grad_accum > 1 else "")
    span = (f"max_steps {run.total_steps}" if t.max_steps
            else f"{t.epochs:g} epoch{'s' * (t.epochs != 1)} = {run.total_steps} step{'s' * (run.total_steps != 1)}")
    if t.strategy == "setfit":
        return (f"recipe: SetFit on {m.name}, {m.pooling} pooling | length {d.max_length} | {batch} pairs | {lr}, "
                f"{steps}, {t.scheduler} schedule, warm-up {warm} | {span} | then a logistic-regression head; dev "
                f"evaluated once at the end")
    every = f"every {t.eval_every} steps" if t.eval_every else "every epoch"
    return (f"recipe: {m.name}, {m.pooling} pooling, {m.head} head | length {d.max_length} | {batch} | {lr}, {steps}, "
            f"{t.scheduler} schedule, warm-up {warm} | {span} | best dev {run.metric} ({every}) kept")


def num(x: float) -> str:
    """5e-5, 1e-4, 3.5e-5 (as lrs are written), plain below 1e3 and above 1e-2."""
    if x == 0 or 1e-2 <= abs(x) < 1e3:
        return f"{x:g}"
    mant, exp = f"{x:.3e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def truncate_log(path: Path, step: int) -> int:
    """--resume: drop the log records past the checkpoint's step, the final records and lines torn by a kill (the
    resumed run logs those steps again); returns how many were dropped."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and rec.get("step", 0) <= step and not any(k.startswith("final/") for k in rec):
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write(path, "".join(ln + "\n" for ln in keep))
    return dropped


def checkpoint_note(run: Run) -> str:
    """When checkpoints are written, about how big each is (weights + AdamW's two moments per trainable
    parameter, as saved) and how many are kept."""
    tc = run.cfg.train
    base = frozen_base_keys(run.raw_model)          # adapters: the frozen base weights are not saved
    weights = sum(t.numel() * t.element_size() for k, t in run.raw_model.state_dict().items() if k not in base)
    moments = sum(2 * p.numel() * 4 + 750 for p in run.trainable)   # exp_avg, exp_avg_sq (fp32), step; pickle framing
    weights += 30_000                                                 # RNG states, schedule, loop position
    when = f"every {tc.eval_every} steps" if tc.eval_every else "once per epoch"
    what = "adapter and head weights" if base else "weights"
    return (f"checkpoints: at every dev evaluation ({when}) in {run.out / 'checkpoints'}, about "
            f"{(weights + moments) / 1e6:.1f} MB each ({what} + optimizer state), the latest {tc.keep_checkpoints} "
            f"kept (train.keep_checkpoints); --set train.checkpoint=false writes none (no --resume)")


def write_log(log: TextIO | None, rec: dict[str, Any]) -> None:
    if log is not None:
        log.write(json.dumps(rec) + "\n")
        log.flush()


def record(run: Run, log: TextIO | None, rec: dict[str, Any]) -> None:
    """One record of scalars at rec["step"]: to log.jsonl and to the trackers (training/tracking.py)."""
    write_log(log, rec)
    log_scalars(run.accelerator, rec)


def final_record(metrics: dict[str, Any], step: int) -> dict[str, Any]:
    """The finished run's numbers per split ({"test/accuracy": ..., "dev/ece": ...}) and its throughput."""
    rec: dict[str, Any] = {"step": step}
    for split in ("dev", "test"):
        rec |= {f"final/{split}/{k}": v for k, v in metrics.get(split, {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    rec |= {f"final/{k}": metrics[k] for k in ("train_samples_per_s", "train_seconds", "temperature") if k in metrics}
    return rec


def fit(run: Run, log: TextIO | None, progress: bool) -> None:
    """Epochs of optimizer steps from wherever the state stands; dev evaluations every `train.eval_every` steps
    (or once per epoch), early stopping after `train.patience` evaluations without gain."""
    st, tc = run.state, run.cfg.train
    bar = tqdm(total=run.total_steps, initial=st.step, disable=not (run.main and progress), desc="train",
               dynamic_ncols=True)
    running: dict[str, float] = {}
    n_running, n_samples, step_seconds = 0, 0, 0.0      # since the last log record: steps, samples, compute time
    done = st.step >= run.total_steps or bool(tc.patience and st.bad_evals >= tc.patience)
    n_epochs = math.ceil(run.total_steps / run.steps_per_epoch)
    while not done and st.epoch < n_epochs:
        batches = run.epoch_batches(st.epoch)
        run.model.train()
        t0 = time.perf_counter()
        while st.batch < len(batches) and not done:
            group = batches[st.batch: st.batch + tc.grad_accum]
            t_step, samples_before = time.perf_counter(), st.samples
            parts, stepped = train_step(run, group)
            step_seconds += time.perf_counter() - t_step
            n_samples += st.samples - samples_before
            if stepped:
                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + v
                n_running += 1
                bar.update(1)
            done = st.step >= run.total_steps
            if stepped and (st.step % tc.log_every == 0 or done):
                rec = {"step": st.step, "total_steps": run.total_steps, "epoch": st.epoch + 1,
                       "lr": run.scheduler.get_last_lr()[0],
                       "loss": sum(running.values()) / n_running,
                       **{f"loss/{k}": v / n_running for k, v in running.items()},
                       "samples_per_s": n_samples / max(step_seconds, 1e-9)}
                record(run, log, rec)
                bar.set_description(f"train loss {rec['loss']:.4f}", refresh=False)
                running, n_running, n_samples, step_seconds = {}, 0, 0, 0.0
            end_of_epoch = st.batch >= len(batches)
            if (stepped and tc.eval_every and st.step % tc.eval_every == 0) or done or (not tc.eval_every and end_of_epoch):
                st.train_seconds += time.perf_counter() - t0
                epoch = st.epoch + 1
                if end_of_epoch:  # the checkpoint then points at the next epoch's start
                    st.epoch, st.batch = st.epoch + 1, 0
                m = evaluate_and_record(run, log, epoch)
                also = f", macro-F1 {m['macro_f1']:.4f}" if run.metric != "macro_f1" and "macro_f1" in m else ""
                bar.set_postfix_str(f"dev {run.metric} {m[run.metric]:.4f} (best {st.best:.4f}){also}", refresh=False)
                if tc.checkpoint:
                    save_resume_checkpoint(run)
                if run.on_evaluate is not None:
                    run.on_evaluate(st.step, m)
                t0 = time.perf_counter()
                if tc.patience and st.bad_evals >= tc.patience:
                    tqdm.write(f"early stop: no dev {run.metric} gain in {tc.patience} evaluations") if run.main else None
                    done = True
                if end_of_epoch:
                    break
        else:
            st.train_seconds += time.perf_counter() - t0
            st.epoch, st.batch = st.epoch + 1, 0
    bar.close()


def fit_few_shot(run: Run, log: TextIO | None, progress: bool) -> None:
    """train.strategy=setfit (training/setfit.py): the body on sentence pairs, the logistic-regression head, then
    one dev evaluation, which saves the model."""
    fit_setfit(run, lambda rec: record(run, log, rec), progress)
    m = evaluate_and_record(run, log, run.state.epoch)
    if run.on_evaluate is not None:
        run.on_evaluate(run.state.step, m)


def train_step(run: Run, group: list) -> tuple[dict[str, float], bool]:
    """One optimizer step over a group of `train.grad_accum` batches (index arrays): gradients with the tricks'
    hooks, the update, then the tricks' after_step (EMA). Returns (loss terms, stepped): stepped is False when
    the fp16 scaler skipped the update, which then counts as no step (no schedule, no EMA update)."""
    st, tc, b = run.state, run.cfg.train, run.bundle
    micro = [collate(run.enc.train, idx, run.pad_id, b.task, b.label_map.num_labels).to(run.device) for idx in group]
    parts = accumulate_gradients(run.model, micro, run.losses, run.tricks, run.accelerator.backward,
                                 run.accelerator.no_sync if run.world > 1 else None)
    st.samples += sum(len(idx) for idx in group) * run.world
    st.batch += len(group)
    stepped = optimizer_step(run.accelerator, run.optimizer, run.scheduler, run.trainable, tc.max_grad_norm,
                             run.loss_params)
    if stepped:
        st.step += 1
        for t in run.tricks:
            t.after_step(run.model, st.step)
    return parts, stepped


def evaluate_and_record(run: Run, log: TextIO | None, epoch: int) -> dict[str, Any]:
    """evaluate_and_keep_best, and its dev metrics as a log record; returns them."""
    m = evaluate_and_keep_best(run)
    record(run, log, {"step": run.state.step, "total_steps": run.total_steps, "epoch": epoch,
                      **{f"dev/{k}": v for k, v in m.items() if isinstance(v, float)}})
    return m


def evaluate_and_keep_best(run: Run) -> dict[str, Any]:
    """Dev metrics under the tricks' evaluation weights (EMA shadows); when the dev metric improves, those are the
    weights saved in out/model. Returns the dev metrics."""
    st, tc, b = run.state, run.cfg.train, run.bundle
    with contextlib.ExitStack() as stack:
        for t in run.tricks:
            stack.enter_context(t.eval_weights(run.model))
        logits = all_logits(run.raw_model, run.enc.dev, tc.eval_batch_size, run.pad_id, run.device, run.precision,
                            (run.accelerator.process_index, run.world))
        m = compute_metrics(b.task, logits, b.dev.labels, b.label_map.names)
        if is_better(run.metric, m[run.metric], st.best):
            st.best, st.best_step, st.bad_evals = m[run.metric], st.step, 0
            if run.main:
                tmp = run.out / "model.tmp"
                remove(tmp)                             # a leftover (or a planted link) is never written through
                save_model(run.raw_model, run.tokenizer, tmp, run.meta)
                replace_dir(tmp, run.out / "model")
        else:
            st.bad_evals += 1
    return m


def save_resume_checkpoint(run: Run) -> None:
    """The raw (training) weights (with adapters: the trainable ones only, checkpoint.resume_weights), optimizer,
    schedule, loss and trick states, and the loop position."""
    run.accelerator.wait_for_everyone()
    if run.main:
        blobs = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "tricks": [t.state_dict() for t in run.tricks]}
        blobs |= {f"loss{i}": loss.state_dict() for i, (_, loss) in enumerate(run.losses.values()) if loss.state_dict()}
        weights, frozen = resume_weights(run.raw_model, run.base_digest)
        if frozen is not None:                          # adapters: the frozen base weights are left out
            blobs["frozen_base"], run.base_digest = frozen, frozen["sha256"]
        save_checkpoint(run.out / "checkpoints", run.state.step, weights, blobs, asdict(run.state),
                        keep=run.cfg.train.keep_checkpoints)
    run.accelerator.wait_for_everyone()
