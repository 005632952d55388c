"""Experiment tracking: the scalars the loop writes to log.jsonl (each loss term, lr, throughput, dev metrics,
the final metrics) also go to Accelerate's trackers (`accelerate.tracking`: TensorBoard, Weights & Biases,
MLflow) when `tracking.report_to` names them, with the resolved config as hyperparameters.

Where they go: TensorBoard writes event files to <run>/tensorboard/ (so `tensorboard --logdir` on a compare
folder shows every run of the grid, named <variant>/seed<k>/tensorboard); wandb and MLflow get one run per
training run named `tracking.run_name` (default: the run folder's name) in project / experiment
`tracking.project`, grouped by `tracking.group` (wandb group, MLflow tag `group`); compare sets the group to the
grid folder's name and the run name to <variant>/seed<k>.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config, TrackingConfig, tracker_names
from ..errors import ConfigError

TB_DIR = "tensorboard"


def _available(name: str) -> bool:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}[name]()


def check_trackers(tracking: TrackingConfig) -> list[str]:
    """The trackers asked for; a ConfigError (before anything trains) when a tracker's package is missing."""
    names = tracker_names(tracking.report_to)
    for n in names:
        if not _available(n):
            raise ConfigError(f"tracking.report_to={n}: the {n} package is not installed; fix: pip install "
                              f"'tricklab[{n}]' (or --report-to none)")
    return names


def accelerator_trackers(tracking: TrackingConfig, out: Path) -> dict[str, Any]:
    """Accelerator(**this): `log_with` (TensorBoard as a tracker object writing to <run>/tensorboard; the others
    by name) and the project folder."""
    names = tracker_names(tracking.report_to)
    if not names:
        return {}
    from accelerate.tracking import TensorBoardTracker

    log_with: list[Any] = [TensorBoardTracker(TB_DIR, str(out)) if n == "tensorboard" else n for n in names]
    return {"log_with": log_with, "project_dir": str(out)}


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The resolved config as flat scalars ('train.lr': 5e-05, 'tricks': '[{"name": "ema", ...}]'): what every
    tracker accepts as hyperparameters."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("head_args", "scheduler_args"):
                out |= flat(v, key + ".")
            elif isinstance(v, (bool, int, float, str)):
                out[key] = v
            else:
                out[key] = json.dumps(v, ensure_ascii=False, default=str)
        return out

    return flat(cfg.to_dict())


def start_tracking(accelerator: Any, cfg: Config, out: Path) -> None:
    """One tracker run for this training run, with the config as its hyperparameters (main process only)."""
    if not accelerator.log_with:
        return
    tr = cfg.tracking
    name = tr.run_name or Path(out).resolve().name
    init = {"wandb": {"name": name, "dir": str(out), **({"group": tr.group} if tr.group else {})},
            "mlflow": {"run_name": name, **({"tags": {"group": tr.group}} if tr.group else {})}}
    accelerator.init_trackers(tr.project, config=hyperparameters(cfg), init_kwargs=init)


def log_scalars(accelerator: Any, record: dict[str, Any]) -> None:
    """A log.jsonl record -> the trackers, at its optimizer step (numbers only)."""
    if accelerator.log_with:
        values = {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        accelerator.log(values, step=int(record["step"]))
