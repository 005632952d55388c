"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""
from __future__ import annotations


class TrickLabError(Exception):
    """Base class: the message is the whole story (what, where, and how to fix it)."""


class ConfigError(TrickLabError):
    """A bad configuration key or value."""


INFO = ("how it was read: ",)       # lines of a DataError that explain the problems rather than being one


def _info(line: str) -> bool:
    return line.startswith(INFO) or " row(s) above are invalid; fix them, or " in line    # (data/invalid.py hint)


class DataError(TrickLabError):
    """Bad input data: file, line, value and the fix are in the message."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:20]
        more = sum(1 for p in self.problems[20:] if not _info(p))   # problems, not the lines explaining them
        msg = "\n".join(shown) + (f"\n... and {more} more problem{'s' * (more != 1)}" if more > 0 else "")
        super().__init__(msg)
