"""Excel workbooks (.xlsx, .xlsm) in and out, through openpyxl (the `data` extra: `pip install 'tricklab[data]'`).

Reading: one worksheet (data.sheet / predict --sheet: a name or 0-based index; default the first), streamed in
openpyxl's read-only mode with the values Excel last computed for formulas. Every cell becomes the text a user sees
for it: whole numbers without a decimal point (a label typed as 1 is stored as 1.0 by some writers), other numbers
in their shortest form, dates in ISO form, TRUE/FALSE as true/false, empty cells as "". Rows that are empty from end
to end are skipped; each row keeps its number in the sheet (1-based, as Excel shows it), so a problem names it.
Writing: openpyxl's write-only mode, rows streamed to the file; characters a worksheet cannot hold (control
characters other than tab, newline and carriage return) are dropped, and the writer counts the cells that had any.
Excel's own old .xls format (OLE) is not read: save it as .xlsx.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, DataError

EXCEL_EXTENSIONS = (".xlsx", ".xlsm")
EXCEL_EXTRA = "pip install 'tricklab[data]'"
MAX_ROWS = 1_048_576         # rows a worksheet holds
ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")   # openpyxl's ILLEGAL_CHARACTERS_RE


def is_excel(path: Path | str) -> bool:
    return Path(path).suffix.lower() in EXCEL_EXTENSIONS


def column_letter(i: int) -> str:
    """The 0-based column index as Excel names it: 0 -> A, 25 -> Z, 26 -> AA."""
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


def need_openpyxl(what: str) -> Any:
    """openpyxl, or one line naming the extra that brings it."""
    try:
        import openpyxl
    except ImportError:
        raise ConfigError(f"{what} needs the Python package openpyxl, which is not installed; fix: {EXCEL_EXTRA}") \
            from None
    return openpyxl


def cell_text(v: Any) -> str:
    """A cell's value as the text a user sees for it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, dt.datetime):
        return v.date().isoformat() if v.time() == dt.time() else v.isoformat(sep=" ")
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    return str(v)


def _pick_sheet(wb: Any, sheet: str | int | None, path: Path) -> Any:
    names = wb.sheetnames
    if sheet is None or sheet == "":
        return wb[names[0]]
    if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.isdigit() and sheet not in names):
        i = int(sheet)
        if not 0 <= i < len(names):
            raise DataError(f"{path}: sheet {i} not found: the workbook has {len(names)} sheet(s) "
                            f"({', '.join(repr(n) for n in names)}); fix: a 0-based index below {len(names)}, or a name")
        return wb[names[i]]
    if sheet in names:
        return wb[sheet]
    low = {n.lower(): n for n in names}
    if sheet.lower() in low:
        return wb[low[sheet.lower()]]
    raise DataError(f"{path}: no sheet named {sheet!r}; its sheets are: {', '.join(repr(n) for n in names)}; "
                    f"fix: one of those names, or a 0-based index")


class Sheet:
    """One worksheet's non-empty rows: `rows` yields (row number, cells as text, padded to `width`), `title`,
    and `others` (the workbook's other sheet names)."""

    def __init__(self, path: Path, sheet: str | int | None = None):
        openpyxl = need_openpyxl(f"{path}: reading an Excel workbook")
        self.path = path
        try:
            self._wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:      # noqa: BLE001 - zipfile.BadZipFile, KeyError, InvalidFileException ...
            raise DataError(f"{path}: cannot read it as an Excel workbook ({type(e).__name__}: {e}); fix: open it in "
                            f"Excel or LibreOffice and save it again as .xlsx, or export it as CSV") from None
        ws = _pick_sheet(self._wb, sheet, path)
        self.title = ws.title
        self.others = [n for n in self._wb.sheetnames if n != ws.title]
        self._ws = ws
        self.width = 0

    def rows(self, raw: bool = False) -> Iterator[tuple[int, list[Any]]]:
        """(1-based row number, cells) of each row that has a value; trailing empty cells dropped. Cells are texts
        (cell_text), or with `raw` the values themselves where they are numbers, booleans or empty (None), else
        texts (dates, times)."""
        try:
            for n, values in enumerate(self._ws.iter_rows(values_only=True), start=1):
                texts = [cell_text(v) for v in values]
                while texts and not texts[-1].strip():
                    texts.pop()
                if texts:
                    yield n, ([v if v is None or isinstance(v, (int, float, bool)) else t
                               for v, t in zip(values, texts)] if raw else texts)
        finally:
            self._wb.close()

    def table(self, raw: bool = False) -> list[tuple[int, list[Any]]]:
        """Every non-empty row, each padded to the widest row's width ("" or, with `raw`, None): a column with a
        value in one row only is still a column of every row."""
        rows = list(self.rows(raw))
        self.width = max((len(c) for _, c in rows), default=0)
        pad = None if raw else ""
        return [(n, c + [pad] * (self.width - len(c))) for n, c in rows]


class SheetWriter:
    """Rows into a new workbook's one sheet, in openpyxl's write-only mode; `save()` at the end."""

    def __init__(self, path: Path, title: str = "predictions"):
        openpyxl = need_openpyxl(f"--output {path}: writing an Excel workbook")
        self.path = path
        self._wb = openpyxl.Workbook(write_only=True)
        self._ws = self._wb.create_sheet(title)
        self._cell = openpyxl.cell.WriteOnlyCell
        self.rows = 0
        self.cleaned = 0            # cells that held characters a worksheet cannot hold (dropped)

    def append(self, cells: list[Any]) -> None:
        """One row. Text is always stored as text: a value like "=1+1" or "=HYPERLINK(...)" stays a string, never a
        formula that Excel would run."""
        if self.rows >= MAX_ROWS:
            raise DataError(f"{self.path.with_suffix('')}: more than {MAX_ROWS:,} rows, the most an Excel sheet holds; "
                            f"fix: write CSV or Parquet (--output NAME.csv / NAME.parquet)")
        out = []
        for c in cells:
            if isinstance(c, str):
                if ILLEGAL.search(c):
                    c = ILLEGAL.sub("", c)
                    self.cleaned += 1
                if c.startswith("="):
                    cell = self._cell(self._ws, value=c)
                    cell.data_type = "s"
                    c = cell
            out.append(c)
        self._ws.append(out)
        self.rows += 1

    def save(self) -> None:
        self._wb.save(self.path)


__all__ = ["EXCEL_EXTENSIONS", "MAX_ROWS", "Sheet", "SheetWriter", "cell_text", "column_letter", "is_excel",
           "need_openpyxl"]
