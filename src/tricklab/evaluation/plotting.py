"""matplotlib is optional (`pip install 'tricklab[plots]'`; `make demo` and `make test` install it): without it,
training, evaluation and reports run as usual and skip their PNG files, with one note per process."""
from __future__ import annotations

import sys
from typing import Any

_noted = False


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None (after a one-line note) when it is not installed."""
    global _noted
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _noted:
            print("note: plots skipped (confusion_matrix.png, reliability.png, ablation.png): matplotlib is not "
                  "installed; pip install 'tricklab[plots]' to get them", file=sys.stderr)
            _noted = True
        return None
    return plt
