"""Training: the loop in named steps (setup -> optimizer steps with the tricks' hooks -> evaluate-and-keep-best
-> finish), checkpoints for --resume, optimizer groups and schedule.
May import: evaluation, model, data, losses, tricks, and the ground floor (config, registry, types, errors)."""
from __future__ import annotations

from .loop import train
from .setup import Run, State, setup
from .step import accumulate_gradients, build_losses, forward_backward, optimizer_step

__all__ = ["Run", "State", "accumulate_gradients", "build_losses", "forward_backward", "optimizer_step", "setup",
           "train"]
