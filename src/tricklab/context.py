"""What losses and tricks may know about the run when they are set up."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainContext:
    task: str                      # single_label | multi_label | regression
    num_labels: int                # logits width (1 for regression)
    label_names: list[str]
    class_counts: list[int]        # per-class counts in train ([] for regression)
    train_size: int
    total_steps: int               # optimizer steps in the whole run
    device: Any = None
    run_dir: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)  # e.g. train examples, for losses that need them
