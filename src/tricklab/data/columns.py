"""Which column of a delimited file (or a Parquet/Arrow/in-memory table) each role (text, text_b, label, soft_label) reads, and why: a setting, a known
name in the header, or the position. The run prints the choice as a note and keeps it in run.json; a setting that
names no column of the header gets the header's columns and the closest name (difflib, standard library)."""
from __future__ import annotations

import difflib
import json
import shlex
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import DataError


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", " ": "space"}   # data.delimiter names


def column_not_found(path: Path | str, role: str, want: str, header: list[str], table: bool = False,
                     at: str | None = None) -> DataError:
    """data.<role>_column names no column of the header (or, `table`, of a Parquet/Arrow/in-memory table's columns):
    the columns and the closest name (difflib). `at`: where the header is (default: line 1 of `path`)."""
    names = [h.strip() for h in header]
    close = difflib.get_close_matches(want.lower(), [n.lower() for n in names], 1, 0.5)
    best = names[[n.lower() for n in names].index(close[0])] if close else None
    where, whose = (f"{path}", "its columns") if table else (at or f"{path} line 1", "the header's columns")
    return DataError(f"{where}: data.{role}_column={want!r}: column not found; {whose} are: "
                     f"{', '.join(repr(n) for n in names)}" + (f"; did you mean {best!r}?" if best else "")
                     + f"; fix: --set data.{role}_column={best or 'NAME'} (a column name, or a 0-based index)")


def column_choice(path: Path, header: list[str] | None, first: list[str], cfg: DataConfig, ncols: int,
                  picked: dict[str, int | None], guessed: dict[str, str] | None = None) -> dict[str, Any]:
    """Which column each role reads and why (a setting, a known name, the position, or `guessed`: role -> the
    reason the reader chose it from what was left or from the values), and the columns left unused: the run
    prints it as a note and keeps it in run.json."""
    guessed = guessed or {}
    set_by = {"text": cfg.text_column, "text_b": cfg.text_b_column, "label": cfg.label_column,
              "soft_label": cfg.soft_label_column}
    given = {set_by[r] for r in picked if isinstance(set_by[r], int)}
    free = [i for i in range(ncols) if i not in given]
    positional = header is None and not given and ncols == 3 and picked.get("text_b") is not None
    roles: dict[str, Any] = {}
    for role, i in picked.items():
        if i is None:
            continue
        if set_by[role] is not None:
            why = f"data.{role}_column={set_by[role]!r}"
        elif role in guessed:
            why = guessed[role]
        elif header is not None:
            why = f"matched the name {header[i].strip()!r}"
        elif positional:
            why = "by position: 3 columns are read as text, text_b, label"
        else:
            why = "the only column left" if len(free) == 1 else "the first free column"
            free = [c for c in free if c != i]
        roles[role] = {"index": i, "column": header[i].strip() if header is not None else None, "why": why}
    used = {r["index"] for r in roles.values()}
    unused = [(header[i].strip() if header is not None else i) for i in range(ncols) if i not in used]
    return {"file": str(path), "header": header is not None, "columns": ncols,
            "first_line": None if header is not None else [c.strip()[:30] for c in first[:ncols]],
            "roles": roles, "unused": unused}


def flag_choice(choice: dict[str, Any], columns: list[str], flags: list[int], added: str, setting: Any) -> None:
    """A column_choice (of `columns`, which end with `added`) whose label is one 0/1 column per class (readers:
    _flag_columns, _record_flags): the label role names those columns; `added`, the column the reader made of
    them, is no column of the file."""
    names = [str(columns[i]).strip() for i in flags]
    why = (f"data.label_column={setting!r}" if isinstance(setting, list) else "0/1 columns, one class each: multi-label")
    choice["roles"]["label"] = {"index": list(flags), "column": names, "why": why}
    choice["columns"] = len(columns) - 1
    choice["unused"] = [u for u in choice["unused"] if u not in names and u != added]


def flag_names(choice: dict[str, Any] | None) -> list[str] | None:
    """The 0/1 label columns a column_choice read (flag_choice), else None."""
    column = ((choice or {}).get("roles") or {}).get("label", {}).get("column")
    return list(column) if isinstance(column, list) else None


def role_columns(choice: dict[str, Any]) -> dict[str, Any]:
    """role -> column index of a column_choice (the reasons left out: two files read alike when these agree)."""
    return {role: r["index"] for role, r in choice["roles"].items()}


class Rows(list):
    """A file's valid rows, with `columns`: how its columns were chosen (column_choice; None for JSON, whose
    objects each carry their own keys)."""
    columns: dict[str, Any] | None = None


def column_note(choice: dict[str, Any], pin: bool = True) -> str:
    """One line: each role's column and why, the unused columns, and (pin) the settings that pin this choice."""
    head = "" if choice["header"] else (f" (no header line; first line: "
                                        f"{', '.join(repr(c) for c in choice['first_line'] or [])})")
    parts, pins = [], []
    for role, r in choice["roles"].items():
        col = repr(r["column"]) if r["column"] is not None else f"column {r['index']}"
        value = r["column"] if r["column"] is not None else r["index"]
        if isinstance(value, list):       # 0/1 label columns (flag_choice): a JSON list, which YAML reads too
            col, value = "the columns " + ", ".join(map(repr, value)), json.dumps(value, ensure_ascii=False)
        parts.append(f"{role} = {col} ({r['why']})")
        pins.append("--set " + shlex.quote(f"data.{role}_column={value}"))
    unused = ", ".join(repr(c) if isinstance(c, str) else f"column {c}" for c in choice["unused"])
    delim = choice.get("delimiter")
    if delim:       # a .csv read with another separator than the comma (readers.csv_delimiter)
        head = f" ({delim!r}-separated: its first line has no comma)" + head
        name = DELIMITER_NAMES.get(delim, delim)
        pins.insert(0, "--set " + shlex.quote(f"data.delimiter={name}"))
    sheet = choice.get("sheet")
    if sheet:       # an Excel workbook (data/excel.py): the sheet read, and how to read another
        others = sheet["others"]
        head = f" ({sheet['note']}; " + head[2:] if head.startswith(" (") else f" ({sheet['note']})" + head
        if others:
            pins.insert(0, "--set " + shlex.quote(f"data.sheet={sheet['name']}"))
    suspect = choice.get("suspect_header")
    warn = (f"; WARNING: {suspect['where']} may be a header read as data: its label {suspect['label']!r} occurs "
            f"nowhere else, so it trains as a class of one example; if it is a header: --set data.header=true (and "
            f"--set data.text_column=NAME --set data.label_column=NAME for names tricklab does not know)"
            if suspect else "")
    return (f"columns of {Path(choice['file']).name}{head}: " + ", ".join(parts) + (f"; unused: {unused}" if unused else "")
            + warn + (f"; to choose others or pin this choice: {' '.join(pins)}" if pin else ""))
