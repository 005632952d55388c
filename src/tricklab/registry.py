"""Name -> class registries with did-you-mean errors, so configs stay plain data."""
from __future__ import annotations

import difflib
from typing import Any, Callable

from .errors import ConfigError


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def get_or_fail(self, name: str) -> Any:
        if name not in self:
            hint = difflib.get_close_matches(name, list(self), n=1)
            raise ConfigError(
                f"unknown {self.kind} {name!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (choose from: {', '.join(sorted(self))})"
            )
        return self[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        cls = self.get_or_fail(name)
        try:
            return cls(**kwargs)
        except TypeError as e:  # wrong parameter names for this entry
            raise ConfigError(f"{self.kind} {name!r}: {e}") from None


POOLINGS = Registry("pooling")
HEADS = Registry("head")
LOSSES = Registry("loss")
TRICKS = Registry("trick")
