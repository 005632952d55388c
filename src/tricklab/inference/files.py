"""Texts to predict, read from a file or standard input one record at a time (constant memory).

Formats (`--format`, else from the extension; standard input and unknown extensions are plain text):
  text     .txt: one text per line (pair models: text_a<TAB>text_b); blank lines skipped
  csv/tsv  a header line names the columns (CSV quoting by the `csv` module; TSV split on tabs, no quoting)
  jsonl    .jsonl/.ndjson: one JSON object per line;  json: .json, a JSON array of objects (or JSONL)
  parquet  .parquet/.pq, read a record batch at a time with pyarrow (`pip install 'tricklab[data]'`)
  xlsx     .xlsx/.xlsm: one sheet (--sheet; default the first visible one whose header names a text column), its
           header found as in training, streamed (data/excel.py; openpyxl, the same extra); rows named by their
           row number in the sheet
Compressed inputs are read transparently: .gz (gzip), .bz2 (bz2), .zst (zstandard, the `data` extra).
Every record carries its line (parquet: row) number, so a problem names file, line, value and the fix.
The text column is found as the training readers find it (data.readers.TEXT_NAMES), when unambiguous.
Libraries: csv, json (JSONDecoder.raw_decode streams a JSON array), gzip, bz2, zstandard, pyarrow.parquet, openpyxl.
"""
from __future__ import annotations

import bz2
import codecs
import csv
import datetime as dt
import gzip
import importlib.util
import io
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data.columns import DELIMITER_NAMES
from ..data.readers import KNOWN, SNIFF_LINES, TEXT_B_NAMES, TEXT_NAMES, _binary_error, delimiter_of, sniff
from ..errors import ConfigError, DataError

FORMATS = ("text", "csv", "tsv", "jsonl", "json", "parquet", "xlsx")
EXTENSIONS = {".txt": "text", ".text": "text", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".xlsx": "xlsx", ".xlsm": "xlsx"}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
DATA_EXTRA = "pip install 'tricklab[data]'"
BLOCK = 1 << 16
PARQUET_BATCH = 1024       # rows per parquet record batch read
MAX_ELEMENT = 1 << 24      # a JSON array element that does not parse within 16 MB of text is broken, not unfinished


class Problem(str):
    """A problem with one record (the reader goes on); whole-file problems raise DataError at once."""


@dataclass
class Source:
    """An input: a file path (None: standard input), its format and compression."""
    path: Path | None
    fmt: str
    compression: str | None = None
    notes: list[str] = field(default_factory=list)   # hints already given (each once)
    sheet: str | int | None = None                   # xlsx: the sheet to read (default: the first)
    trained: dict[str, Any] = field(default_factory=dict)   # the columns train read ({"text": name, ...}): defaults
    excel: bool = False     # from Excel: a workbook, or text starting with a UTF-8 BOM (Excel's "CSV UTF-8")
    encoding: str = "utf-8"  # text input's encoding (--encoding); a UTF-8 BOM makes it UTF-8

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<stdin>"

    @property
    def unit(self) -> str:
        return "row" if self.fmt in ("parquet", "xlsx") else "line"

    def note(self, msg: str, log: Callable[[str], None] | None) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            if log:
                log(msg)


def open_source(path: str | Path | None, fmt: str | None = None, sheet: str | int | None = None,
                encoding: str = "utf-8") -> Source:
    """Check what can be checked before the model loads: the file, its format, the packages it needs, the encoding."""
    from ..config import check_encoding

    codec = check_encoding(encoding, "--encoding")
    src = _open_source(path, fmt, sheet)
    src.encoding = "utf-8" if src.excel else codec
    return src


def _open_source(path: str | Path | None, fmt: str | None, sheet: str | int | None) -> Source:
    if fmt not in (None, "auto") and fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown; fix: one of {', '.join(FORMATS)}")
    if path is None or str(path) == "-":
        if fmt in ("parquet", "xlsx"):
            raise ConfigError(f"--format {fmt}: a {fmt} file cannot be read from standard input; fix: give its path")
        if sheet is not None:
            raise ConfigError("--sheet: standard input is read as text; fix: give the workbook's path")
        return Source(None, fmt if fmt not in (None, "auto") else "text")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" + (" (it is a folder)" if p.is_dir() else "")
                        + ": give a file (.txt, .csv, .tsv, .jsonl, .json, .parquet), or - for standard input")
    suffixes = [s.lower() for s in p.suffixes]
    comp = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    ext = (suffixes[-2] if comp and len(suffixes) > 1 else "" if comp else suffixes[-1] if suffixes else "")
    fmt = fmt if fmt not in (None, "auto") else EXTENSIONS.get(ext, "text")
    bom = False
    if comp is None:                    # by the bytes: an .xlsx, a PDF, UTF-16 text... is named, not read as text
        with open(p, "rb") as f:
            head = f.read(4096)
            kind, bom = sniff(head), head.startswith(b"\xef\xbb\xbf")
        if kind in ("gzip", "bz2", "zstd"):
            comp = kind                 # compressed under a plain name: read it all the same
        elif kind == "parquet":
            fmt = "parquet"
        elif kind == "zip" and fmt == "xlsx":
            from ..data.excel import need_openpyxl

            need_openpyxl(f"{p}: reading an Excel workbook")
        elif kind == "arrow":
            raise DataError(f"{p}: an Arrow IPC file: predict reads text, CSV/TSV, JSONL/JSON and Parquet; fix: save "
                            f"it as Parquet (pyarrow.parquet.write_table), or use `tricklab evaluate`, which reads Arrow")
        elif kind is not None:
            raise _binary_error(p, kind)
    if fmt == "xlsx" and (comp or kind != "zip"):
        raise DataError(f"{p}: the name (or --format) says an Excel workbook, but the file is "
                        f"{'compressed' if comp else 'text'}; fix: give the .xlsx itself, or name its content with "
                        f"--format (csv, tsv, jsonl or text)")
    if sheet is not None and fmt != "xlsx":
        raise ConfigError(f"--sheet {sheet}: {p} is not an Excel workbook ({fmt}); fix: drop --sheet")
    if fmt == "parquet":
        if comp:
            raise DataError(f"{p}: a compressed parquet file; parquet compresses its own columns: "
                            f"fix: decompress it first")
        _need("pyarrow", f"{p}: reading parquet needs pyarrow")
    if comp == "zstd":
        _need("zstandard", f"{p}: reading .zst needs zstandard")
    return Source(p, fmt, comp, sheet=sheet, excel=bom or fmt == "xlsx")


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what}, which is not installed; fix: {DATA_EXTRA}")


def _binary(src: Source) -> io.BufferedIOBase:
    if src.path is None:
        return sys.stdin.buffer
    if src.compression == "gzip":
        return gzip.open(src.path, "rb")
    if src.compression == "bz2":
        return bz2.open(src.path, "rb")
    if src.compression == "zstd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(src.path, "rb"), closefd=True))
    return open(src.path, "rb")


def _undecodable(src: Source, line: int, sample: bytes, err: UnicodeDecodeError) -> DataError:
    """The line, the encoding the bytes most likely are, --encoding and the iconv fix (data.readers.encoding_error)."""
    from ..data.readers import encoding_error

    return encoding_error(src.name, line, sample[err.start:err.start + 4], sample, src.compression, src.encoding,
                          setting="--encoding ", noun="input", stdin=src.path is None)


def _read_errors(src: Source) -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, EOFError]
    if src.compression == "zstd":
        import zstandard

        errs.append(zstandard.ZstdError)
    return tuple(errs)


def _guard(src: Source, it: Iterator[Any]) -> Iterator[Any]:
    """Corrupt or truncated compressed data -> one DataError naming the file."""
    try:
        yield from it
    except _read_errors(src) as e:
        kind = {"gzip": "gzip", "bz2": "bzip2", "zstd": "zstandard"}.get(src.compression or "", "")
        raise DataError(f"{src.name}: could not read it{' as ' + kind + ' data' if kind else ''} ({e}); "
                        f"fix: check that the file is complete (e.g. `{'gzip -t' if kind == 'gzip' else 'ls -l'} "
                        f"{src.name}`)") from None


def lines(src: Source) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its line ending); UTF-8 with or without a BOM."""
    def gen() -> Iterator[tuple[int, str]]:
        f = _binary(src)
        try:
            for no, raw in enumerate(f, 1):
                if no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw, src.encoding = raw[3:], "utf-8"        # a BOM says UTF-8 (compressed, standard input)
                try:
                    yield no, raw.decode(src.encoding)
                except UnicodeDecodeError as e:
                    raise _undecodable(src, no, raw + f.read(200_000), e) from None
        finally:
            if src.path is not None:
                f.close()
    return _guard(src, gen())


def records(src: Source, log: Callable[[str], None] | None = None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """(line, record) for every record of the input, in order; a bad record comes as (line, Problem)."""
    reader = {"text": _text_records, "csv": _csv_records, "tsv": _tsv_records, "jsonl": _jsonl_records,
              "json": _json_records, "parquet": _parquet_records, "xlsx": _xlsx_records}[src.fmt]
    return reader(src, log)


# ---------------------------------------------------------------- the formats

def _looks_like_json_object(s: str) -> bool:
    s = s.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return False
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


def _text_hints(src: Source, first: list[str], log: Callable[[str], None] | None) -> None:
    if first and all(_looks_like_json_object(s) for s in first):
        src.note(f"warning: {src.name} is read as plain text (one text per line, braces and key names included), but "
                 f"its lines look like JSON objects; fix: --format jsonl (or name the file .jsonl)", log)
        return
    cells = [c.strip().lower() for c in first[0].replace(",", "\t").split("\t")] if first else []
    if len(cells) > 1 and any(c in TEXT_NAMES for c in cells):
        src.note(f"warning: {src.name} is read as plain text, but line 1 looks like a header "
                 f"({first[0].strip()[:60]}); fix: --format csv or --format tsv (or name the file .csv/.tsv)", log)


def _text_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Plain text: {"text": line} (the whole line; the pair/tab split is Columns' business)."""
    first: list[tuple[int, str]] = []
    blank, shown, pending = 0, [], 0   # blank lines before a text (trailing ones shift no row): count, first 10
    for no, ln in lines(src):
        ln = ln.rstrip("\r\n")
        if not ln.strip():
            pending += 1
            shown += [no] if len(shown) < 10 else []
            continue
        blank, pending = blank + pending, 0
        if len(first) < 5:
            first.append((no, ln))
            if len(first) == 5:
                _text_hints(src, [s for _, s in first], log)
                yield from ((n, {"text": s}) for n, s in first)
            continue
        yield no, {"text": ln}
    if len(first) < 5:
        _text_hints(src, [s for _, s in first], log)
        yield from ((n, {"text": s}) for n, s in first)
    if blank:
        where = ", ".join(map(str, shown[:blank])) + (", ..." if blank > len(shown) else "")
        src.note(f"note: {src.name}: {blank} blank line(s) skipped (line {where}): they get no output row, so the "
                 f"output's rows do not line up with the input's lines", log)


def _header(src: Source, cells: list[str], line: int) -> list[str]:
    seen = set()
    for c in cells:
        if c in seen:
            raise DataError(f"{src.name} {src.unit} {line}: the header names column {c!r} twice; fix: rename one")
        seen.add(c)
    return cells


def _row(src: Source, header: list[str], cells: list[str], line: int, sep: str, raw: str) -> dict[str, Any] | Problem:
    if len(cells) != len(header):
        short = raw.strip().replace("\t", "\\t")
        short = repr(short if len(short) <= 60 else short[:60] + "...")
        fix = ("quote fields that hold commas (\"a, b\")" if sep == "comma"
               else "remove stray tabs inside the text, or quote the file as CSV and use --format csv")
        return Problem(f"{src.name} line {line}: expected {len(header)} {sep}-separated columns "
                       f"({', '.join(header)}), found {len(cells)}: {short}; fix: {fix}")
    return dict(zip(header, cells))


def _csv_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    it = lines(src)
    head: list[tuple[int, str]] = []
    for no, ln in it:                   # the first non-blank lines tell the separator (data.readers.delimiter_of)
        head.append((no, ln))
        if sum(1 for _, x in head if x.strip()) >= SNIFF_LINES:
            break
    delim = delimiter_of([x for _, x in head if x.strip()])
    if delim != ",":
        src.note(f"note: {src.name}: read as {delim!r}-separated (its first line has no comma)", log)
    it = itertools.chain(head, it)
    sep = DELIMITER_NAMES[delim]
    counter = {"line": 0}

    def feed() -> Iterator[str]:
        for no, ln in it:
            counter["line"] = no
            yield ln
    reader = csv.reader(feed(), delimiter=delim)
    header: list[str] | None = None
    start = 1
    try:
        for cells in reader:
            line, start = start, counter["line"] + 1
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = _header(src, cells, line)
                continue
            yield line, _row(src, header, cells, line, sep, delim.join(cells))
    except csv.Error as e:
        raise DataError(f"{src.name} line {counter['line']}: not valid CSV ({e}); fix: check the quoting "
                        f"around that line, or use --format tsv for a tab-separated file") from None


def _tsv_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    header: list[str] | None = None
    for no, ln in lines(src):
        ln = ln.rstrip("\r\n")
        if not ln.strip():
            continue
        if header is None:
            header = _header(src, ln.split("\t"), no)
            continue
        yield no, _row(src, header, ln.split("\t"), no, "tab", ln)


def _object(src: Source, line: int, value: Any, raw: str) -> dict[str, Any] | Problem:
    if isinstance(value, dict):
        return value
    short = raw.strip()
    return Problem(f"{src.name} line {line}: expected a JSON object ({{\"text\": ...}}), got "
                   f"{short[:60]!r}; fix: one object per record, with the text under a key")


def _jsonl_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    return _jsonl_lines(src, lines(src))


def _jsonl_lines(src: Source, it: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    for no, ln in it:
        if not ln.strip():
            continue
        try:
            value = json.loads(ln)
        except json.JSONDecodeError as e:
            yield no, Problem(f"{src.name} line {no}: not valid JSON ({e.msg} at column {e.colno}): "
                              f"{ln.strip()[:60]!r}; fix: one JSON object per line")
            continue
        yield no, _object(src, no, value, ln)


def _split_lines(buf: str, blocks: Iterator[tuple[int, str]], line: int) -> Iterator[tuple[int, str]]:
    """Blocks of text -> (line number, line), starting with `buf` at line `line`."""
    for _, text in blocks:
        buf += text
        *done, buf = buf.split("\n")
        for ln in done:
            yield line, ln
            line += 1
    if buf:
        yield line, buf


def _chars(src: Source) -> Iterator[tuple[int, str]]:
    """(line number at the block's start, decoded block): blocks, not lines (a JSON array may be one line)."""
    def gen() -> Iterator[tuple[int, str]]:
        f = _binary(src)
        dec = codecs.getincrementaldecoder(src.encoding)()
        line, first = 1, True
        try:
            while True:
                raw = f.read(BLOCK)
                if first and raw.startswith(codecs.BOM_UTF8):
                    raw, src.encoding = raw[3:], "utf-8"        # a BOM says UTF-8 (compressed, standard input)
                    dec = codecs.getincrementaldecoder("utf-8")()
                first = False
                try:
                    text = dec.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    raise _undecodable(src, line + raw[:e.start].count(b"\n"), raw + f.read(200_000), e) from None
                if not raw:
                    return
                yield line, text
                line += raw.count(b"\n")
        finally:
            if src.path is not None:
                f.close()
    return _guard(src, gen())


def _json_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """A JSON array of objects, parsed an element at a time; a .json file holding JSONL is read as JSONL."""
    blocks = _chars(src)
    buf, line = "", 1

    def more() -> bool:
        nonlocal buf
        nxt = next(blocks, None)
        buf += nxt[1] if nxt is not None else ""
        return nxt is not None

    def skip_ws() -> bool:   # drop leading whitespace; False at the end of the input
        nonlocal buf, line
        while True:
            stripped = buf.lstrip()
            line += buf[: len(buf) - len(stripped)].count("\n")
            buf = stripped
            if buf or not more():
                return bool(buf)

    if not skip_ws():
        return
    if not buf.startswith("["):   # JSONL in a .json file
        yield from _jsonl_lines(src, _split_lines(buf, blocks, line))
        return
    yield from _json_array(src, blocks, buf[1:], line)


def _json_array(src: Source, blocks: Iterator[tuple[int, str]], buf: str, line: int
                ) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    dec = json.JSONDecoder()
    n, expect_value = 0, True

    def fail(what: str) -> DataError:
        return DataError(f"{src.name} line {line}: {what}; fix: a JSON array of objects, [{{\"text\": ...}}, ...]")

    while True:
        stripped = buf.lstrip()
        line += buf[: len(buf) - len(stripped)].count("\n")
        buf = stripped
        if not buf:
            nxt = next(blocks, None)
            if nxt is None:
                raise fail("the JSON array ends early (no closing ])")
            buf += nxt[1]
            continue
        if not expect_value:
            if buf[0] == "]":
                return
            if buf[0] != ",":
                raise fail(f"expected , or ] after element {n}, got {buf[:20]!r}")
            buf, expect_value = buf[1:], True
            continue
        if buf[0] == "]" and n == 0:
            return
        try:
            value, end = dec.raw_decode(buf)
        except json.JSONDecodeError as e:
            nxt = next(blocks, None) if len(buf) < MAX_ELEMENT else None   # incomplete: read on; broken: stop
            if nxt is None:
                raise fail(f"element {n + 1} is not valid JSON ({e.msg}): {buf[:60]!r}") from None
            buf += nxt[1]
            continue
        if end == len(buf) and not isinstance(value, (dict, list, str)):   # a number may go on in the next block
            nxt = next(blocks, None)
            if nxt is not None:
                buf += nxt[1]
                continue
        n += 1
        yield line, _object(src, line, value, buf[:end])
        line += buf[:end].count("\n")
        buf, expect_value = buf[end:], False


def _parquet_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    row = 0
    for batch in parquet_file(src).iter_batches(batch_size=PARQUET_BATCH):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec


def _xlsx_records(src: Source, log: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """One sheet, streamed (one pass to find its width and header, one to read): the header is the first of its
    first non-empty rows that names a known column (else the first row; rows above it are passed over, with a
    note; an empty header cell is named by its column letter), each later row a record numbered as in the sheet.
    Numbers, booleans, dates and empty cells (None) keep their values (an Excel output writes them back as such; a
    text column's value is read as its text)."""
    from ..data.excel import Sheet, cell_text, column_letter

    assert src.path is not None
    trained = {str(c).strip().lower() for c in src.trained.values() if c}
    sheet = Sheet(src.path, src.sheet, prefer=(trained, set(TEXT_NAMES)))
    width, above = sheet.scan(KNOWN | trained)
    if sheet.others or above:
        src.note(f"note: {src.name}: read {sheet.describe(above)}"
                 + ("; --sheet NAME to read another" if sheet.others else ""), log)
    header: list[str] | None = None
    for row, cells in sheet.rows(raw=True):
        if row in above:
            continue
        cells = cells + [None] * (width - len(cells))
        if header is None:
            header = _header(src, [cell_text(c).strip() or column_letter(i) for i, c in enumerate(cells)], row)
            continue
        yield row, dict(zip(header, cells))


def parquet_file(src: Source) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(src.path)
    except Exception as e:   # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
        raise DataError(f"{src.name}: not a readable parquet file ({str(e).splitlines()[0]}); "
                        f"fix: check the file, or give --format for another format") from None


def arrow_schema(src: Source) -> Any:
    """The parquet input's schema (its columns keep their types in a parquet output), else None."""
    return parquet_file(src).schema_arrow if src.fmt == "parquet" else None


def quick_count(src: Source) -> int | None:
    """Records in the input, cheaply, for the progress bar: parquet metadata, or the newlines of an uncompressed
    file (minus the header; blank lines count, so it may run a little high). None when unknown (stdin, .gz, ...)."""
    if src.fmt == "parquet":
        return parquet_file(src).metadata.num_rows
    if src.path is None or src.compression or src.fmt in ("json", "xlsx"):
        return None
    n, last = 0, b"\n"
    with open(src.path, "rb") as f:
        while block := f.read(1 << 20):
            n, last = n + block.count(b"\n"), block[-1:]
    n += last != b"\n"
    return max(0, n - (src.fmt in ("csv", "tsv")))


# ---------------------------------------------------------------- which values are the texts

@dataclass
class Columns:
    """Which record keys hold the text (and the second text of a pair model), found once from the first record."""
    source: str
    text: str
    text_b: str | None = None
    unit: str = "line"
    tabs: bool = False          # plain text: the line is split on tabs (pairs; else the first column is the text)

    def extract(self, line: int, rec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """(the record as the output shows it, the model input), or raise DataError naming the line."""
        if self.tabs:
            return self._text_line(line, rec["text"])
        a = self._value(line, rec, self.text)
        return rec, a if self.text_b is None else (a, self._value(line, rec, self.text_b))

    def _value(self, line: int, rec: dict[str, Any], key: str) -> str:
        where = f"{self.source} {self.unit} {line}"
        if key not in rec:
            raise DataError(f"{where}: no {key!r} (keys: {', '.join(map(str, rec)) or 'none'}); fix: add it, "
                            f"or name the text with --text-column")
        v = rec[key]
        if v is None:                     # an empty cell (xlsx, parquet), a JSON null
            v = ""
        elif isinstance(v, (bool, int, float, dt.date, dt.time)):   # booleans and dates as train reads a sheet's
            from ..data.excel import cell_text

            v = cell_text(v) if isinstance(v, (bool, dt.date, dt.time)) else str(v)
        if not isinstance(v, str):
            raise DataError(f"{where}: {key!r} is {json.dumps(v, ensure_ascii=False, default=str)[:60]}, not a text; "
                            f"fix: put a string there, or name another column with --text-column")
        if not v.strip():
            raise DataError(f"{where}: empty text in {key!r}; fix: fill it in or delete the {self.unit}")
        return v.strip()

    def _text_line(self, line: int, text: str) -> tuple[dict[str, Any], Any]:
        where = f"{self.source} line {line}"
        if self.text_b is None:
            first = text.split("\t", 1)[0]
            if not first.strip():
                raise DataError(f"{where}: empty text before the first tab; fix: fill it in or delete the line")
            return {"text": first}, first.strip()
        a, sep, b = text.partition("\t")
        b = b.split("\t", 1)[0]        # a third column (a gold label, an id) is not part of the pair: see texts()
        if not sep or not a.strip() or not b.strip():
            raise DataError(f"{where}: this model classifies sentence pairs: expected text_a<TAB>text_b, got "
                            f"{text[:60]!r}; fix: put a tab between the two texts, or give a CSV/JSONL with two "
                            f"text columns")
        return {"text_a": a, "text_b": b}, (a.strip(), b.strip())


def _find(keys: list[str], want: str | None, names: tuple[str, ...], source: str, flag: str, kind: str) -> str | None:
    if want is not None:
        if want in keys:
            return want
        low = {k.lower(): k for k in keys}
        if want.lower() in low:
            return low[want.lower()]
        raise DataError(f"{source}: no {kind} column {want!r} (columns: {', '.join(keys) or 'none'}); "
                        f"fix: {flag} one of those")
    low = {k.lower(): k for k in reversed(keys)}
    return next((low[n] for n in names if n in low), None)     # the first known name, in train's order (_pick)


def _present(keys: list[str], column: Any) -> str | None:
    """A column name train read, when the input has it (any case); None otherwise (a position is no name)."""
    if not isinstance(column, str):
        return None
    low = {str(k).lower(): str(k) for k in keys}
    return low.get(column.lower())


def check_flags(src: Source | str, pair: bool, text_column: str | None, text_b_column: str | None) -> None:
    """Column flags that cannot apply to this model or input: before any reading."""
    name = src.name if isinstance(src, Source) else src
    if text_b_column is not None and not pair:
        raise ConfigError(f"--text-b-column {text_b_column}: this model classifies single texts, not sentence pairs; "
                          f"fix: drop --text-b-column")
    if isinstance(src, Source) and src.fmt == "text" and (text_column is not None or text_b_column is not None):
        raise ConfigError(f"--text-column/--text-b-column: {name} is read as plain text (one text per line"
                          f"{', text_a<TAB>text_b' if pair else ''}); fix: drop them, or give --format "
                          f"csv/tsv/jsonl/json/parquet for a file with named columns")


def resolve_columns(src: Source | str, keys: list[str], pair: bool, text_column: str | None = None,
                    text_b_column: str | None = None, unit: str = "line", trained: dict[str, Any] | None = None
                    ) -> Columns:
    """The text column(s) among `keys` (a header, the first object's keys): given, else the column train read when
    the input has it (`trained`, else the Source's), else the first known text name."""
    check_flags(src, pair, text_column, text_b_column)
    name = src.name if isinstance(src, Source) else src
    if isinstance(src, Source) and src.fmt == "text":
        return Columns(name, "text", "text_b" if pair else None, tabs=True)
    trained = (src.trained if isinstance(src, Source) else {}) if trained is None else trained
    hint = " (line 1 is read as the header)" if isinstance(src, Source) and src.fmt in ("csv", "tsv") else ""
    text_column = text_column if text_column is not None else _present(keys, trained.get("text"))
    if pair and text_b_column is None:
        text_b_column = _present(keys, trained.get("text_b"))
    text = _find(keys, text_column, TEXT_NAMES, name, "--text-column", "text")
    if text is None:
        nohead = (" or, if line 1 is already data (no header line), --format text: one text per line, the first "
                  "tab-separated column" if hint and src.fmt == "tsv" else "")
        raise DataError(f"{name}: no text column among ({', '.join(keys) or 'no columns'}){hint}; "
                        f"fix: --text-column NAME{nohead}")
    b = _find([k for k in keys if k != text], text_b_column, TEXT_B_NAMES, name, "--text-b-column", "second text") \
        if pair else None
    if pair and b is None:
        raise DataError(f"{name}: this model classifies sentence pairs, and no second text column was found among "
                        f"({', '.join(keys)}); fix: --text-b-column NAME")
    return Columns(name, text, b, unit)


MAX_PROBLEMS = 100
ON_INVALID = ("error", "skip")


@dataclass
class Invalid:
    """The input's bad records (--on-invalid). `error`: listed, up to MAX_PROBLEMS, to stop the run with all of them
    at once. `skip`: left out of the output and counted; the first MAX_PROBLEMS are listed in a note."""
    source: str
    skip: bool = False
    problems: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, problems: list[str]) -> None:
        self.count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.extend(problems)
        elif not self.skip:
            raise self.error(f"{self.source}: stopped reading at {MAX_PROBLEMS} problems")

    def error(self, stop: str | None = None) -> DataError:
        hint = (f"{'these' if stop else self.count} record(s) above are invalid; fix them, or --on-invalid skip to "
                f"predict the others (the records left out are listed)")
        return DataError(self.problems + ([stop] if stop else []) + [hint])

    def note(self) -> str:
        more = f"\n  ... and {self.count - len(self.problems)} more" if self.count > len(self.problems) else ""
        return (f"note: --on-invalid skip: {self.count} invalid record(s) left out of the output:\n  "
                + "\n  ".join(self.problems) + more)


def texts(src: Source, pair: bool, text_column: str | None = None, text_b_column: str | None = None,
          log: Callable[[str], None] | None = None, invalid: Invalid | None = None
          ) -> Iterator[tuple[int, dict[str, Any], Any]]:
    """(line, record for the output, model input) for every record. Columns are found from the first record.
    A bad record raises DataError, or with `invalid` is recorded there and passed over."""
    cols: Columns | None = None
    for line, rec in records(src, log):
        try:
            if isinstance(rec, Problem):
                raise DataError(str(rec))
            if cols is None:
                cols = _first_columns(src, line, rec, pair, text_column, text_b_column, invalid)
                known = [k for k in rec if str(k).lower() in TEXT_NAMES]
                if text_column is None and not cols.tabs and _present(list(rec), src.trained.get("text")):
                    if str(cols.text).lower() not in TEXT_NAMES or len(known) > 1:
                        src.note(f"note: predicting column {cols.text!r}, the text column of the training data; "
                                 f"choose another with --text-column", log)
                elif text_column is None and not cols.tabs and len(known) > 1:
                    src.note(f"note: several text columns ({', '.join(map(str, known))}): predicting {cols.text!r}, "
                             f"the first known name as train picks it; choose another with --text-column", log)
            out, x = cols.extract(line, rec)
        except DataError as e:
            if invalid is None or cols is None and not (isinstance(rec, Problem) or invalid.skip):
                raise
            invalid.add(e.problems)
            continue
        if cols.tabs and not pair and "\t" in rec["text"]:
            src.note("note: lines hold tabs: predicting the first column only (the model takes one text)", log)
        elif cols.tabs and pair and rec["text"].count("\t") > 1:
            src.note("note: lines hold more than two tab-separated columns: predicting the first two as text_a and "
                     "text_b (the model takes a pair); the rest is left out", log)
        yield line, out, x


def _first_columns(src: Source, line: int, rec: dict[str, Any], pair: bool, text_column: str | None,
                   text_b_column: str | None, invalid: Invalid | None) -> Columns:
    """The columns, from the first record; skipping, a first record without them is a bad record (its line named),
    and the next one is asked (an input where none has them ends with every record skipped: an error)."""
    try:
        return resolve_columns(src, list(rec), pair, text_column, text_b_column, src.unit)
    except DataError as e:
        if invalid is None or not invalid.skip:
            raise
        raise DataError([f"{src.name} {src.unit} {line}: " + p.removeprefix(f"{src.name}: ") for p in e.problems]
                        ) from None


def check_input(src: Source, pair: bool, text_column: str | None = None, text_b_column: str | None = None,
                log: Callable[[str], None] | None = None, on_invalid: str = "error") -> int:
    """Read the whole input once, before any prediction: every problem at once (DataError), else the count of
    records to predict. on_invalid `skip`: bad records are noted (not raised) unless no record is valid."""
    invalid = Invalid(src.name, on_invalid == "skip")
    n = sum(1 for _ in texts(src, pair, text_column, text_b_column, log, invalid))
    skipped(invalid, n, log)
    return n


def skipped(invalid: Invalid, n: int, log: Callable[[str], None] | None) -> None:
    """After reading the input: its bad records stop the run (error, or skip with nothing valid), else a note."""
    if invalid.count and (not invalid.skip or n == 0):
        raise invalid.error() if not invalid.skip else DataError(
            invalid.problems + [f"{invalid.source}: no valid record to predict: --on-invalid skip left out all "
                                f"{invalid.count}; fix the input (the problems above)"])
    if invalid.count and log:
        log(invalid.note())


def merge(record: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any]:
    """The record's keys, unchanged, then the prediction's; a prediction key the record has becomes pred_<key>."""
    out = dict(record)
    for k, v in prediction.items():
        while k in record:
            k = "pred_" + k
        out[k] = v
    return out
