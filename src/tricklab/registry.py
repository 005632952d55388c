"""Name -> class registries with did-you-mean errors, so configs stay plain data."""
from __future__ import annotations

import difflib
import inspect
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
        self.check_params(name, kwargs)
        try:
            return cls(**kwargs)
        except TypeError as e:  # e.g. a parameter missing
            raise ConfigError(f"{self.kind} {name!r}: {e}") from None

    def params(self, name: str) -> list[str] | None:
        """The keyword parameters of an entry's constructor (None when it takes **kwargs)."""
        cls = self.get_or_fail(name)
        if getattr(cls.__init__, "__qualname__", "") in ("Module.__init__", "object.__init__"):
            return []                     # no constructor of its own: no parameters
        sig = inspect.signature(cls)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check_params(self, name: str, kwargs: dict[str, Any]) -> None:
        """Unknown parameter names fail like unknown config keys: with a did-you-mean and the list."""
        known = self.params(name)
        if known is None:
            return
        for key in kwargs:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                raise ConfigError(f"{self.kind} {name!r}: unknown parameter {key!r}"
                                  + (f"; did you mean {hint[0]!r}?" if hint else "")
                                  + f" (parameters: {', '.join(known) or 'none'})")


POOLINGS = Registry("pooling")
HEADS = Registry("head")
LOSSES = Registry("loss")
TRICKS = Registry("trick")
