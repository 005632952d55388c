"""train.strategy=setfit: few-shot classification in SetFit's two stages (Tunstall et al. 2022,
arXiv:2209.11055), on the run's own model, so the run folder is an ordinary one (predict, evaluate, export and
serve read it unchanged):

  1. the body: sentence pairs drawn from the labelled rows as SetFit draws them (data/pairs.py: for every row
     and iteration, one partner of the same label, target 1, and one of another label, target 0), the encoder
     tuned with SetFit's CosineSimilarityLoss (sentence-transformers: MSE between the cosine similarity of the two
     pooled embeddings and the target) through the run's optimizer and schedule (train.lr, warm-up, clipping);
  2. the head: multinomial logistic regression on the frozen embeddings, scikit-learn's LogisticRegression
     objective (summed cross-entropy + ||W||^2 / 2C, bias not penalised, C = train.setfit_head_c) minimised with
     torch.optim.LBFGS (scikit-learn is not a dependency), written into the linear head's weights.

The loop (loop.py) then evaluates on dev once, saves the model and finishes the run as for fine-tuning."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import Encoded, collate, eval_batches
from ..data.pairs import epoch_pair_batches
from ..model.runtime import autocast
from .setup import Run
from .step import optimizer_step


def cosine_similarity_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SetFit's CosineSimilarityLoss: mean over pairs of (cos(u_i, v_i) - target_i)^2, in float32."""
    return F.mse_loss(F.cosine_similarity(u.float(), v.float(), dim=-1), target.float())


@contextlib.contextmanager
def no_head_dropout(model: torch.nn.Module) -> Iterator[None]:
    """The pooled embedding as SetFit sees it: without the dropout in front of the head (the encoder's own
    dropout stays on while training)."""
    p = model.dropout.p
    model.dropout.p = 0.0
    try:
        yield
    finally:
        model.dropout.p = p


def pair_loss(run: Run, pairs: np.ndarray, scale: float) -> float:
    """Forward the pairs' two texts in one batch, the cosine loss, backward of loss * scale; the loss value."""
    n = len(pairs)
    b = collate(run.enc.train, np.concatenate([pairs[:, 0], pairs[:, 1]]), run.pad_id, None).to(run.device)
    out = run.model(**b.inputs)
    emb = out.pooled
    loss = cosine_similarity_loss(emb[:n], emb[n:], torch.as_tensor(pairs[:, 2], device=emb.device))
    # the head's logits enter with weight 0: every parameter is in the graph, as DDP requires (the head is
    # replaced by the logistic regression afterwards)
    run.accelerator.backward((loss + 0.0 * out.logits.float().sum()) * scale)
    return float(loss.detach())


def train_body(run: Run, emit: Callable[[dict[str, Any]], None], bar: tqdm) -> None:
    """Epochs of optimizer steps over pair batches (train.grad_accum batches a step) until run.total_steps."""
    st, tc = run.state, run.cfg.train
    running, n_running, n_pairs, t_log = 0.0, 0, 0, time.perf_counter()
    run.model.train()
    while st.step < run.total_steps:
        batches = epoch_pair_batches(run.enc.train.labels, tc, st.epoch, run.accelerator.process_index, run.world)
        for g in range(0, len(batches), tc.grad_accum):
            group = batches[g:g + tc.grad_accum]
            loss = sum(pair_loss(run, p, 1.0 / len(group)) for p in group) / len(group)
            st.samples += sum(len(p) for p in group) * run.world
            n_pairs += sum(len(p) for p in group) * run.world
            if not optimizer_step(run.accelerator, run.optimizer, run.scheduler, run.trainable, tc.max_grad_norm, []):
                continue                                  # fp16: a skipped update is no step
            st.step += 1
            running, n_running = running + loss, n_running + 1
            bar.update(1)
            if st.step % tc.log_every == 0 or st.step >= run.total_steps:
                mean = running / n_running
                emit({"step": st.step, "total_steps": run.total_steps, "epoch": st.epoch + 1,
                      "lr": run.scheduler.get_last_lr()[0], "loss": mean, "loss/cosine": mean,
                      "samples_per_s": n_pairs / max(time.perf_counter() - t_log, 1e-9)})
                bar.set_description(f"setfit body loss {mean:.4f}", refresh=False)
                running, n_running, n_pairs, t_log = 0.0, 0, 0, time.perf_counter()
            if st.step >= run.total_steps:
                break
        st.epoch += 1


@torch.no_grad()
def embeddings(model: torch.nn.Module, enc: Encoded, batch_size: int, pad_id: int, device: torch.device,
               precision: str) -> np.ndarray:
    """(N, P) float64 pooled embeddings of every row, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with autocast(device.type, precision):
            for idx in eval_batches(enc.lengths, batch_size):
                pooled = model(**collate(enc, idx, pad_id, None).to(device).inputs).pooled.double().cpu().numpy()
                if out is None:
                    out = np.zeros((len(enc), pooled.shape[1]))
                out[idx] = pooled
    finally:
        model.train(was_training)
    assert out is not None
    return out


def logistic_regression(X: np.ndarray, y: np.ndarray, num_classes: int, C: float = 1.0, max_iter: int = 300
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(W (num_classes, P), b (num_classes,)) minimising sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C) (scikit-learn's
    multinomial LogisticRegression(C) objective), by L-BFGS with a strong-Wolfe line search, in float64."""
    W, b, _ = fit_logistic_regression(X, y, num_classes, C, max_iter)
    return W, b


def fit_logistic_regression(X: np.ndarray, y: np.ndarray, num_classes: int, C: float, max_iter: int
                            ) -> tuple[np.ndarray, np.ndarray, float]:
    """logistic_regression, and the largest gradient entry at the solution (scikit-learn's convergence test:
    below 1e-4 it has converged). At most max_iter iterations and 20 x max_iter objective evaluations (torch's
    default, 1.25 x, would stop the line searches well before max_iter)."""
    Xt, yt = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(np.asarray(y), dtype=torch.long)
    W = torch.zeros(num_classes, Xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=20 * max_iter, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(Xt @ W.T + b, yt, reduction="sum") + (W * W).sum() / (2 * C)
        loss.backward()
        return loss

    opt.step(closure)
    closure()
    grad = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    return W.detach().numpy(), b.detach().numpy(), grad


def fit_head(run: Run) -> None:
    """The logistic regression on the tuned encoder's train embeddings, written into the linear head; a warning
    when L-BFGS stopped before the gradient fell under scikit-learn's tolerance (1e-4)."""
    tc = run.cfg.train
    X = embeddings(run.raw_model, run.enc.train, tc.eval_batch_size, run.pad_id, run.device, run.precision)
    W, b, grad = fit_logistic_regression(X, np.asarray(run.enc.train.labels), run.bundle.label_map.num_labels,
                                         tc.setfit_head_c, tc.setfit_head_steps)
    if grad > 1e-4 and run.main:
        tqdm.write(f"warning: setfit head: the logistic regression stopped after train.setfit_head_steps="
                   f"{tc.setfit_head_steps} iterations with a gradient of {grad:.1e} (converged: under 1e-4); fix: "
                   f"--set train.setfit_head_steps={4 * tc.setfit_head_steps}")
    layer = run.raw_model.classifier.output_layer
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(W, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(b, dtype=layer.bias.dtype))


def fit_setfit(run: Run, emit: Callable[[dict[str, Any]], None], progress: bool) -> None:
    """Stage 1 (the body on pairs) and stage 2 (the head); the time of both counts as training time."""
    t0 = time.perf_counter()
    bar = tqdm(total=run.total_steps, initial=run.state.step, disable=not (run.main and progress), desc="setfit body",
               dynamic_ncols=True)
    with no_head_dropout(run.raw_model):
        train_body(run, emit, bar)
    bar.close()
    fit_head(run)
    run.state.train_seconds += time.perf_counter() - t0


def setfit_note(run: Run, n_rows: int) -> str:
    tc = run.cfg.train
    unused = [k for k, v in (("train.eval_every", tc.eval_every), ("train.patience", tc.patience)) if v]
    return (f"setfit: {2 * n_rows * tc.setfit_iterations} pairs an epoch ({tc.setfit_iterations} positive + "
            f"{tc.setfit_iterations} negative per train row), {tc.batch_size} pairs a step, cosine-similarity loss "
            f"on the encoder; then a logistic-regression head (C={tc.setfit_head_c}) on its embeddings; one dev "
            f"evaluation at the end" + (f" ({', '.join(unused)} not used)" if unused else "")
            + "; no resume checkpoints (--resume starts the run again)")
