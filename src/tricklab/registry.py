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


# ---------------------------------------------------------------- plugins

PLUGIN_GROUP = "tricklab.plugins"
_loaded: set[str] = set()


def load_plugins(modules: list[str] | tuple[str, ...] | None = None, entry_points: bool = True) -> list[str]:
    """Import user modules that register losses, tricks, heads or poolings (`--plugin my_pkg.my_tricks`: a module
    on sys.path or in the current folder), and every installed package's entry point in the group
    `tricklab.plugins` (importlib.metadata; `[project.entry-points."tricklab.plugins"] name = "my_pkg.my_tricks"`).
    Each module is imported once per process. Returns the modules imported by this call. A module that cannot
    be found or that fails while importing is a ConfigError naming it."""
    import importlib
    import importlib.metadata
    import os
    import sys

    todo = [(f"--plugin {m}", str(m)) for m in modules or []]
    if todo and os.getcwd() not in sys.path:  # a plugin file in the current folder, as `python -m` would find it
        sys.path.append(os.getcwd())
    if entry_points:
        todo += [(f"entry point {ep.name!r} ({PLUGIN_GROUP})", ep.value.split(":")[0].strip())
                 for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]
    done = []
    for what, module in todo:
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):  # the plugin itself, not a package it needs
                raise ConfigError(f"{what}: no module named {module!r}; fix: give an importable module (a package "
                                  f"installed in this environment, or a .py file's folder on PYTHONPATH)") from None
            raise ConfigError(f"{what}: importing {module!r} failed: {e}") from None
        except ConfigError:
            raise
        except Exception as e:  # the plugin's own bug: say where, not a bare traceback
            raise ConfigError(f"{what}: importing {module!r} failed: {type(e).__name__}: {e}") from None
        _loaded.add(module)
        done.append(module)
    return done
