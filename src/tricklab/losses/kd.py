from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import LOSSES
from ..types import Batch, Output, TrainContext
from .base import Loss
from .functional import kd_kl


@LOSSES.register("kd")
class KnowledgeDistillation(Loss):
    """Knowledge distillation (Hinton et al. 2015, arXiv:1503.02531):
    alpha·T²·KL(teacher_T ‖ student_T) + (1 - alpha)·hard, with hard = CE on the labels by default,
    or SupCon (`hard: supcon`, or `hard: {name: supcon, temperature: 0.1}`) for the SCL-project recipe
    alpha·KD + (1 - alpha)·SCL.

    The teacher is either `teacher: <run folder>` (a trained tricklab run; its logits are computed on
    the fly from batch.inputs under no_grad, same tokenizer assumed) or the data's soft-label column
    batch.extra["soft_labels"] with `soft_labels: probs` or `soft_labels: logits`.
    Shapes: out.logits (B, C), batch.labels (B,) long, soft labels (B, C) -> scalar.
    """

    tasks = ("single_label",)

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0, teacher: str | None = None,
                 soft_labels: str | None = None, hard: str | dict[str, Any] = "ce"):
        super().__init__()
        if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ConfigError(f"loss kd: alpha must be in [0, 1] (weight of the distillation term), got {alpha!r}")
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ConfigError(f"loss kd: temperature must be > 0 (1-4 is usual), got {temperature!r}")
        if (teacher is None) == (soft_labels is None):
            raise ConfigError("loss kd: give exactly one of teacher: <run folder> or soft_labels: probs|logits "
                              f"(got teacher={teacher!r}, soft_labels={soft_labels!r})")
        if soft_labels not in (None, "probs", "logits"):
            raise ConfigError(f"loss kd: soft_labels must be 'probs' or 'logits' (what the column holds), got {soft_labels!r}")
        self.alpha, self.T = float(alpha), float(temperature)
        self.teacher_dir, self.soft_labels = teacher, soft_labels
        self._teacher: list[torch.nn.Module] = []       # a list: not a submodule, so never trained or saved
        spec = {"name": hard} if isinstance(hard, str) else dict(hard)
        name = spec.pop("name", None)
        if name is None or name == "kd":
            raise ConfigError(f"loss kd: hard must name another loss (ce, supcon, focal, ...), got {hard!r}")
        self.hard_name = name
        self.hard = LOSSES.build(name, **spec)

    def setup(self, ctx: TrainContext) -> None:
        self.hard.setup(ctx)
        if self.teacher_dir is None:
            return
        from ..model import load_model  # late import: losses stay importable without the model stack

        d = Path(self.teacher_dir).expanduser()
        folder = d / "model" if (d / "model").is_dir() else d
        teacher, _, meta = load_model(folder)
        if meta.get("num_labels") != ctx.num_labels:
            raise ConfigError(f"loss kd: teacher {d} has {meta.get('num_labels')} labels but this run has "
                              f"{ctx.num_labels}; fix: distil from a teacher trained on the same label set")
        if meta.get("labels", {}).get("names") not in (None, ctx.label_names):
            raise ConfigError(f"loss kd: teacher {d} labels {meta['labels']['names']} differ from this run's "
                              f"{ctx.label_names}; fix: use the same class list")
        teacher.requires_grad_(False).eval()
        self._teacher = [teacher.to(ctx.device) if ctx.device is not None else teacher]

    def teacher_log_probs(self, batch: Batch, n: int) -> Tensor:
        """The teacher's log-probabilities at temperature T for the first n rows: (n, C)."""
        if self._teacher:
            t = self._teacher[0]
            inputs = {k: v[:n] for k, v in batch.inputs.items()}
            if next(t.parameters()).device != inputs["input_ids"].device:
                t.to(inputs["input_ids"].device)
            with torch.no_grad():
                return (t(**inputs).logits.float() / self.T).log_softmax(-1)
        soft = batch.extra.get("soft_labels")
        if soft is None:
            raise ConfigError("loss kd: soft_labels is set but the batch has no soft labels; fix: give the data "
                              "a soft-label column (one probability or logit per class), or use teacher: <run>")
        soft = soft[:n].float()
        base = soft.clamp(min=1e-12).log() if self.soft_labels == "probs" else soft
        return (base / self.T).log_softmax(-1)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        V = max(int(batch.views), 1)
        n = out.logits.shape[0] // V
        t = self.teacher_log_probs(batch, n).repeat(V, 1)                # (V*n, C): one teacher pass per example
        if t.shape != out.logits.shape:
            raise ConfigError(f"loss kd: teacher gives {t.shape[-1]} classes but the model {out.logits.shape[-1]}")
        kd = kd_kl(out.logits, t, self.T)
        if self.alpha == 1.0:
            return kd
        return self.alpha * kd + (1 - self.alpha) * self.hard(out, batch)
