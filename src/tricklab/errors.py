"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""
from __future__ import annotations


class TrickLabError(Exception):
    """Base class: the message is the whole story (what, where, and how to fix it)."""


class ConfigError(TrickLabError):
    """A bad configuration key or value."""


INFO = ("how it was read: ",)       # lines of a DataError that explain the problems rather than being one
# ... and that sum them up: how to go on without the bad rows (data/invalid.py, inference/files.py), where reading
# stopped, that nothing valid was left
SUMMARY = (" above are invalid; fix them, or ", ": stopped reading at ", ": no valid record to predict: ")


def _info(line: str) -> bool:
    return line.startswith(INFO) or any(s in line for s in SUMMARY)


class DataError(TrickLabError):
    """Bad input data: file, line, value and the fix are in the message: the first 20 lines, then how many more
    problems there are, then the summing-up lines that came after the first 20 (never hidden)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:20]
        more = sum(1 for p in self.problems[20:] if not _info(p))   # problems, not the lines explaining them
        late = [p for p in self.problems[20:] if _info(p) and not p.startswith(INFO)]
        msg = "\n".join(shown + ([f"... and {more} more problem{'s' * (more != 1)}"] if more > 0 else []) + late)
        super().__init__(msg)
