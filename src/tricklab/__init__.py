"""tricklab: fine-tune BERT-family encoders for text classification, with composable training tricks."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _compat

_compat.install()  # old module paths (tricklab.train, tricklab.predict, ...) still import, with a warning

# training: `from tricklab.training import train`
__all__ = ["Config", "load_config", "Predictor", "load_data", "TrickLabError", "__version__"]


def __getattr__(name: str):  # lazy: `import tricklab` stays fast and torch-free until needed
    if name in ("Config", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "Predictor":
        from .inference.predictor import Predictor

        return Predictor
    if name == "load_data":
        from .data import load_data

        return load_data
    if name == "TrickLabError":
        from .errors import TrickLabError

        return TrickLabError
    raise AttributeError(name)
