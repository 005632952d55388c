from __future__ import annotations

from .batching import Encoded, collate, encode, eval_batches, needs_lowercase, train_batches
from .dataset import DataBundle, Split, load_data, locate
from .labels import LabelMap
from .readers import Row, read_rows

__all__ = ["DataBundle", "Encoded", "LabelMap", "Row", "Split", "collate", "encode", "eval_batches",
           "load_data", "locate", "needs_lowercase", "read_rows", "train_batches"]
