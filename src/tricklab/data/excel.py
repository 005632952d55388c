"""Excel workbooks (.xlsx, .xlsm) in and out, through openpyxl (the `data` extra: `pip install 'tricklab[data]'`),
used directly rather than through pandas.read_excel/to_excel: its read-only and write-only modes stream a sheet row
by row (pandas holds the whole sheet), and the cell-level choices below (the text a cell shows, text never written
as a formula) are not pandas options.

Reading: one worksheet (data.sheet / predict --sheet: a name or 0-based index; default the first visible one),
streamed in openpyxl's read-only mode with the values Excel last computed for formulas, ignoring the sheet's size
record; the header is the first of the first 10 non-empty rows that names a known column (a title above it is
passed over). Every cell becomes the text a user sees for it: whole numbers without a decimal point (a label typed
as 1 is stored as 1.0 by some writers), other numbers in their shortest form, dates in ISO form, TRUE/FALSE as
true/false, empty cells as "". Rows that are empty from end to end are skipped; each row keeps its number in the
sheet (1-based, as Excel shows it), so a problem names it.
Writing: openpyxl's write-only mode, rows streamed to the file; characters a worksheet cannot hold (control
characters other than tab, newline and carriage return) are dropped and text past a cell's 32,767 characters is cut,
and the writer counts the cells of each kind, for a note.
Excel's own old .xls format (OLE) is not read: save it as .xlsx.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import ConfigError, DataError

EXCEL_EXTENSIONS = (".xlsx", ".xlsm")
EXCEL_EXTRA = "pip install 'tricklab[data]'"
MAX_ROWS = 1_048_576         # rows a worksheet holds
MAX_CELL = 32_767            # characters a worksheet cell holds
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
    if isinstance(v, float):        # 15 significant digits, as Excel shows them (0.1 + 0.2 -> 0.3)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.15g}"
    if isinstance(v, dt.datetime):
        return v.date().isoformat() if v.time() == dt.time() else v.isoformat(sep=" ")
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    return str(v)


SHEET_FLAGS = "--set data.sheet=NAME (train, evaluate) or --sheet NAME (predict)"
HEADER_SEARCH = 10     # non-empty rows looked through for the header (a title or notes may sit above it)


def _pick_sheet(wb: Any, sheet: str | int | None, path: Path, prefer: Sequence[set[str]] = ()) -> tuple[Any, str]:
    """(the sheet, why): the one named (exactly, else case-insensitively), else at that 0-based index; by default
    the first visible sheet whose header names a column of the first set in `prefer` that any sheet has (the
    columns the user named, then the known text names: an instructions sheet in front is passed over), else the
    first visible one (a hidden lookup sheet in front is passed over)."""
    names = wb.sheetnames
    listed = ", ".join(repr(n) for n in names)
    if sheet is None or sheet == "":
        visible = [ws for ws in wb.worksheets if ws.sheet_state == "visible"] or wb.worksheets[:1]
        if len(visible) > 1:
            for wanted in (p for p in prefer if p):
                for ws in visible:
                    if _names_a_column(ws, wanted):
                        return ws, "" if ws is visible[0] else "the first whose header names a text column"
        return visible[0], ""
    if str(sheet) in names:                      # a sheet named "2024" is that sheet, not index 2024
        return wb[str(sheet)], ""
    low = {n.lower(): n for n in names}
    if str(sheet).lower() in low:
        return wb[low[str(sheet).lower()]], ""
    if isinstance(sheet, int) or str(sheet).isdigit():
        i = int(sheet)
        if not 0 <= i < len(names):
            raise DataError(f"{path}: sheet {i} not found: the workbook has {len(names)} sheet(s) ({listed}); fix: "
                            f"a 0-based index below {len(names)} or a name, with {SHEET_FLAGS}")
        return wb[names[i]], ""
    visible = [ws for ws in wb.worksheets if ws.sheet_state == "visible"]
    if len(visible) == 1:          # one sheet only (another annotator's file, dev, test): no doubt which one
        return visible[0], f"no sheet {str(sheet)!r} (data.sheet) here: its only sheet"
    raise DataError(f"{path}: no sheet named {sheet!r}; its sheets are: {listed}; fix: one of those names (or a 0-based "
                    f"index), with {SHEET_FLAGS}")


# Sheet names that say a split, compared lower-case without spaces, "_" and "-", and without a trailing "set",
# "data", "split", "集", "数据", "样本" or "数据集" (`Train Set`, `训练集`, `dev_data`, `验证样本`): a workbook with a train sheet
# and a dev or test sheet is read as its splits (data/sources.py sheet_sources), as a folder of files is.
SPLIT_SHEETS = {"train": ("train", "training", "训练"),
                "dev": ("dev", "development", "valid", "validation", "val", "验证", "开发"),
                "test": ("test", "testing", "测试")}
SHEET_SUFFIX = re.compile(r"(?:set|data|split|数据集|集|数据|样本)$")


def sheet_role(name: str) -> str | None:
    """The split a sheet (or --split) name says (SPLIT_SHEETS), else None."""
    key = re.sub(r"[\s_-]+", "", str(name).lower())
    key = SHEET_SUFFIX.sub("", key) or key
    return next((role for role, names in SPLIT_SHEETS.items() if key in names), None)


def split_sheets(path: Path) -> tuple[dict[str, str], list[str]]:
    """({split: sheet name}, the other sheets) when the workbook's visible sheets are named for its splits
    (sheet_role): a train sheet and a dev or test sheet; else ({}, []): one table, read from one sheet. The first
    sheet of each role counts; the others (a second sheet of a role, an instructions sheet, hidden ones) are listed."""
    wb = Sheet.open(path)
    try:
        sheets = [(ws.title, ws.sheet_state == "visible") for ws in wb.worksheets]
    finally:
        wb.close()
    found: dict[str, str] = {}
    for name, visible in sheets:
        role = sheet_role(name) if visible else None
        if role is not None:
            found.setdefault(role, name)
    if "train" not in found or len(found) < 2:
        return {}, []
    return found, [n for n, _ in sheets if n not in found.values()]


def _names_a_column(ws: Any, names: set[str]) -> bool:
    """Whether one of the sheet's first HEADER_SEARCH non-empty rows has a cell that is one of `names`."""
    ws.reset_dimensions()
    seen = 0
    for values in ws.iter_rows(values_only=True):
        cells = [cell_text(v).strip().lower() for v in values]
        if any(cells):
            if any(c in names for c in cells):
                return True
            seen += 1
            if seen >= HEADER_SEARCH:
                break
    return False


def header_index(rows: list[tuple[int, list[Any]]], known: set[str]) -> int:
    """Where the header is among a sheet's first non-empty rows: the first of the first HEADER_SEARCH rows with a
    cell that is a known column name (`text`, `label`, `评论`, ...) which does not come back as a value further
    down its column (a label 'question' is data), so a title or notes above it are passed over; -1 when none has
    one (no header)."""
    for i, (_, cells) in enumerate(rows[:HEADER_SEARCH]):
        hits = [(j, cell_text(c).strip().lower()) for j, c in enumerate(cells) if cell_text(c).strip().lower() in known]
        below = rows[i + 1:i + 1 + 200]
        if hits and not any(_repeats(below, j, name) for j, name in hits):
            return i
    return -1


def _repeats(rows: list[tuple[int, list[Any]]], j: int, name: str) -> bool:
    """Whether `name` appears again in column j of `rows`: then it is a value (a label 'question'), not a header."""
    return any(j < len(cells) and cell_text(cells[j]).strip().lower() == name for _, cells in rows)


class Sheet:
    """One worksheet of a workbook: `rows()` streams its non-empty rows, `table()` holds them all; `title`,
    `others` (the workbook's other sheets) and `hidden` (those of them that are hidden). The sheet's size record
    (`<dimension>`, which some programs write wrong) is ignored: every row in the file is read."""

    def __init__(self, path: Path, sheet: str | int | None = None, prefer: Sequence[set[str]] = ()):
        self.path, self.sheet = path, sheet
        wb = Sheet.open(self.path)
        try:
            ws, self.why = _pick_sheet(wb, sheet, path, prefer)
            self.title = ws.title
            self.others = [n for n in wb.sheetnames if n != ws.title]
            self.hidden = [w.title for w in wb.worksheets if w.sheet_state != "visible" and w.title != ws.title]
        finally:
            wb.close()
        self.width = 0

    @staticmethod
    def open(path: Path) -> Any:
        """The workbook, read-only, with the values Excel last computed for formulas."""
        openpyxl = need_openpyxl(f"{path}: reading an Excel workbook")
        try:
            return openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:      # noqa: BLE001 - zipfile.BadZipFile, KeyError, InvalidFileException ...
            raise DataError(f"{path}: cannot read it as an Excel workbook ({type(e).__name__}: {e}); fix: open "
                            f"it in Excel or LibreOffice and save it again as .xlsx, or export it as CSV") from None

    def rows(self, raw: bool = False) -> Iterator[tuple[int, list[Any]]]:
        """(1-based row number, cells) of each row that has a value; trailing empty cells dropped. Cells are texts
        (cell_text), or with `raw` the values themselves where they are numbers, booleans, dates, times or empty
        (None), else texts. Streamed: one row in memory at a time."""
        wb = Sheet.open(self.path)
        try:
            ws = wb[self.title]
            ws.reset_dimensions()
            for n, values in enumerate(ws.iter_rows(values_only=True), start=1):
                texts = [cell_text(v) for v in values]
                while texts and not texts[-1].strip():
                    texts.pop()
                if texts:
                    yield n, ([v if v is None or isinstance(v, (int, float, bool, dt.date, dt.time)) else t
                               for v, t in zip(values, texts)] if raw else texts)
        finally:
            wb.close()

    def table(self, raw: bool = False) -> list[tuple[int, list[Any]]]:
        """Every non-empty row, each padded to the widest row's width ("" or, with `raw`, None): a column with a
        value in one row only is still a column of every row."""
        rows = list(self.rows(raw))
        self.width = max((len(c) for _, c in rows), default=0)
        pad = None if raw else ""
        return [(n, c + [pad] * (self.width - len(c))) for n, c in rows]

    def scan(self, known: set[str]) -> tuple[int, list[int]]:
        """One streamed pass: (the widest row's width, the row numbers above the header: header_index)."""
        first: list[tuple[int, list[Any]]] = []
        width = 0
        for n, cells in self.rows():
            width = max(width, len(cells))
            if len(first) < HEADER_SEARCH:
                first.append((n, cells))
        self.width = width
        return width, [n for n, _ in first[:max(0, header_index(first, known))]]

    def describe(self, skipped: list[int] | None = None) -> str:
        """For notes: the sheet read, rows passed over above its header, the other sheets (hidden ones marked)."""
        parts = [f"sheet {self.title!r}" + (f" ({self.why})" if self.why else "")]
        if skipped:
            parts.append(f"row{'s' * (len(skipped) > 1)} {', '.join(map(str, skipped))} above the header passed over")
        if self.others:
            shown = [f"{n!r}" + (" (hidden)" if n in self.hidden else "") for n in self.others[:5]]
            parts.append("other sheets: " + ", ".join(shown) + (", ..." if len(self.others) > 5 else ""))
        return "; ".join(parts)


EMPTY_CELL_HINT = ("an Excel cell that reads empty may hold a formula whose result was never saved (open the file in "
                   "Excel or LibreOffice and save it again) or sit inside merged cells, whose value is in the first "
                   "cell only (unmerge and fill them)")


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
        self.cut = 0                # cells longer than a worksheet cell holds (cut to MAX_CELL characters)

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
                if len(c) > MAX_CELL:
                    c = c[:MAX_CELL]
                    self.cut += 1
                if c.startswith("="):
                    cell = self._cell(self._ws, value=c)
                    cell.data_type = "s"
                    c = cell
            out.append(c)
        self._ws.append(out)
        self.rows += 1

    def save(self) -> None:
        self._wb.save(self.path)


__all__ = ["EMPTY_CELL_HINT", "EXCEL_EXTENSIONS", "MAX_CELL", "MAX_ROWS", "Sheet", "SheetWriter", "cell_text",
           "column_letter", "header_index", "is_excel", "need_openpyxl"]
