"""Losses, one per file, registered by name. Importing this package registers them all."""
from __future__ import annotations

from . import bce, ce, dice, focal, kd, mse, mse_corr, supcon  # noqa: F401  (registration)
from .base import Loss
from .functional import dice_loss, focal_loss, kd_kl, mse_corr_loss, pearson, rdrop_kl, supcon_loss

DEFAULT_LOSS = {"single_label": "ce", "multi_label": "bce", "regression": "mse"}

__all__ = ["Loss", "DEFAULT_LOSS", "dice_loss", "focal_loss", "kd_kl", "mse_corr_loss", "pearson", "rdrop_kl",
           "supcon_loss"]
