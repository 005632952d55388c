"""The values that flow through training: a Batch in, an Output out, and the TrainContext that losses and
tricks see when they are set up."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """One padded batch.

    inputs: what the encoder takes (input_ids, attention_mask, token_type_ids), each (B, T).
    labels: (B,) long for single_label, (B, C) float for multi_label, (B,) float for regression.
    index:  (B,) positions of the examples in their dataset (for soft labels, teachers, resume).
    extra:  optional per-example tensors a loss or trick may need (e.g. "soft_labels" (B, C)).
    views:  how many stacked copies of the examples the batch holds (R-Drop makes 2: rows
            [v*N:(v+1)*N] are view v of the N examples), so view-aware losses can regroup them.
    """

    inputs: dict[str, Tensor]
    labels: Tensor | None
    index: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)
    views: int = 1

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            labels=None if self.labels is None else self.labels.to(device),
            index=self.index.to(device),
            extra={k: v.to(device) for k, v in self.extra.items()},
            views=self.views,
        )

    def __len__(self) -> int:
        return self.index.shape[0]


@dataclass
class Output:
    """logits: (B, C) (C = 1 for regression); pooled: (B, F) features the head classified."""

    logits: Tensor
    pooled: Tensor


@dataclass
class TrainContext:
    """What losses and tricks may know about the run when they are set up."""

    task: str                      # single_label | multi_label | regression
    num_labels: int                # logits width (1 for regression)
    label_names: list[str]
    class_counts: list[int]        # per-class counts in train ([] for regression)
    train_size: int
    total_steps: int               # optimizer steps in the whole run
    device: Any = None
    run_dir: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)  # e.g. train examples, for losses that need them
