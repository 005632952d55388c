"""Old module paths (before the packages by stage), kept importable for one release with a DeprecationWarning:
`import tricklab.train` gives the module `tricklab.training.loop`, and so on. Remove in 0.3."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED = {
    "train": "training.loop", "checkpoint": "training.checkpoint", "optim": "training.optim",
    "runtime": "model.runtime", "context": "types",
    "evaluate": "evaluation.metrics", "calibration": "evaluation.calibration", "thresholds": "evaluation.thresholds",
    "report": "evaluation.reports", "predictions": "evaluation.predictions",
    "compare": "ablation.compare", "leaderboard": "ablation.leaderboard", "stats": "ablation.stats",
    "predict": "inference.predictor", "onnx_backend": "inference.export", "serve": "inference.serve",
    "evaluate_run": "inference.evaluate",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `tricklab.<old>` and loads it as the module that now holds its code."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        pkg, _, old = fullname.partition(".")
        if pkg != __package__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        new = f"{__package__}.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed in tricklab 0.3",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        alias = ModuleType(spec.name, target.__doc__)   # a thin alias: the target keeps its own name and spec
        alias.__getattr__ = lambda name: getattr(target, name)  # type: ignore[method-assign]  (PEP 562)
        alias.__dict__["__all__"] = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])
        return alias

    def exec_module(self, module: ModuleType) -> None:
        pass  # the target module ran when it was imported under its own name


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
