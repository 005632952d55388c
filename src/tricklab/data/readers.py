"""Read labelled data into raw rows, reporting every problem with where it is (file and line, or row index and
column), the value and the fix.

Formats: THUCNews-style `text<TAB>label`, TSV/CSV with or without a header (columns by name or 0-based index),
JSONL, JSON arrays of objects, Parquet, Arrow IPC (file or stream, e.g. a `datasets` .arrow file), Excel workbooks
(.xlsx/.xlsm: one sheet, read as a CSV's rows with its row numbers; data/excel.py), sentence pairs
(text_a, text_b), other delimiters (e.g. `labels<SPACE>text`), and in-memory records (read_records: dicts or tuples,
from data/sources.py: a `datasets` Dataset, a pandas DataFrame, a list). Any file may be compressed: gzip, bz2, zstd,
told by the extension (train.csv.gz) or else by the magic bytes. Text is streamed line by line and Parquet/Arrow
by record batch, so the raw file is never in memory at once. UTF-8 with or without BOM, LF or CRLF. A file in
another encoding is refused with its first undecodable line and the encoding detected by charset_normalizer (on a
bounded window of the raw bytes from that line: GB18030, Big5, Shift_JIS, EUC-KR, cp1252, ...), named in the iconv
fix; UTF-16 and binary formats tricklab does not read (ZIP, Excel 97-2003 .xls, SQLite, pickle, ...) are named by
their bytes.
Which column each role reads, and why, is recorded for delimited files and Parquet/Arrow tables (data/columns.py).

Libraries: csv, json, gzip, bz2 from the standard library; charset_normalizer (encodings); pyarrow (Parquet,
Arrow), zstandard (.zst) and openpyxl (Excel), all in `pip install 'tricklab[data]'` and imported only when a file
needs them.
"""
from __future__ import annotations

import bz2
import csv
import dataclasses
import difflib
import gzip
import importlib
import io
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from ..config import DataConfig
from ..errors import DataError
from .columns import Rows, column_choice, column_not_found, flag_choice
from .excel import EMPTY_CELL_HINT, Sheet, header_index, is_excel

TEXT_NAMES = ("text", "text_a", "sentence", "sentence1", "review", "content", "query", "query1", "question", "question1", "title",
              "comment", "comment_text", "body", "document", "tweet", "message", "utterance", "headline", "premise",
              "文本", "内容", "正文", "句子", "句子1", "评论", "标题", "问题", "评论内容", "文本内容", "评价", "评价内容",
              "用户评论", "留言", "语句", "新闻标题", "用户问题", "客户问题", "问句", "用户输入", "咨询内容", "对话内容")
TEXT_B_NAMES = ("text_b", "sentence2", "query2", "question2", "hypothesis", "句子2")
LABEL_NAMES = ("label", "labels", "score", "target", "class", "category", "sentiment", "polarity", "intent", "topic",
               "标签", "类别", "分类", "情感", "类型", "分数", "情感倾向", "极性", "标注", "人工标注", "意图", "主题", "类目")
KNOWN = set(TEXT_NAMES + TEXT_B_NAMES + LABEL_NAMES)
DELIMITERS = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "pipe": "|", "semicolon": ";"}  # names usable on the command line
COMPRESSED = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
              ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".xlsx": "xlsx",
              ".xlsm": "xlsx"}   # JSON arrays: by their `[`
MAGIC = ((b"\x1f\x8b", "gzip"), (b"(\xb5/\xfd", "zstd"), (b"BZh", "bz2"), (b"PAR1", "parquet"), (b"ARROW1", "arrow"),
         (b"\xff\xff\xff\xff", "arrow"),   # an Arrow IPC stream (datasets' data-*.arrow files)
         (b"PK\x03\x04", "zip"), (b"SQLite format 3\x00", "sqlite"), (b"%PDF", "pdf"), (b"\x93NUMPY", "npy"),
         (b"\x89HDF", "hdf5"), (b"\x80\x04", "pickle"), (b"\x80\x05", "pickle"), (b"\xd0\xcf\x11\xe0", "xls"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
NAMES = {"gzip": "gzip-compressed", "zstd": "zstd-compressed", "bz2": "bzip2-compressed", "parquet": "a Parquet file",
         "arrow": "an Arrow IPC file", "zip": "a ZIP archive (an Excel .xlsx is one)", "sqlite": "an SQLite database",
         "pdf": "a PDF document", "npy": "a NumPy .npy array", "hdf5": "an HDF5 file", "pickle": "a Python pickle",
         "xls": "an Excel 97-2003 / OLE file", "utf-16": "UTF-16 text", "binary": "binary data (no known format)"}
BATCH = 8192
PEEK_RECORDS = 500      # records read ahead to judge a column (label-like leftover, label-first file); then reread
SNIFF_LINES = 20   # lines csv.Sniffer sees to tell a .csv's separator


@dataclass(slots=True)
class Row:
    text: str
    text_b: str | None
    label: Any          # raw: a string from text files, any JSON/Arrow value from records, None when unlabelled
    line: int           # 1-based line in a text file (row in an Excel sheet), else the 0-based row index in `source`
    source: str
    soft: Any = None    # raw soft labels (data.soft_label_column), for distillation
    unit: str = "line"  # how `line` is named: line | row

    @property
    def where(self) -> str:
        """`train.txt line 3`, `train.parquet row 2`, `DataFrame row 7`: where the row is, for messages."""
        return f"{self.source} {self.unit} {self.line}"


def _short(s: str, n: int = 60) -> str:
    s = s.replace("\t", "\\t")
    return repr(s if len(s) <= n else s[:n] + "...")


def need(module: str, what: str, where: Any) -> Any:
    """Import an optional dependency, or one line naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{where}: reading {what} needs the Python package {module.split('.')[0]}, which is not "
                        f"installed; fix: pip install 'tricklab[data]'") from None


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file announce (MAGIC), 'binary' for other data with NUL bytes, None for text."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    return "binary" if b"\x00" in head else None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else "")
                        + ": check the path given to --data/--dev/--test")


def compression(path: Path) -> str | None:
    """gzip | bz2 | zstd from the extension, else from the magic bytes; None: not compressed."""
    by_ext = COMPRESSED.get(path.suffix.lower())
    with open(path, "rb") as f:
        kind = sniff(f.read(8))
    if by_ext and kind != by_ext:
        raise DataError(f"{path}: the name says {NAMES[by_ext]}, but the file is "
                        f"{NAMES.get(kind or '', 'plain text')}; fix: rename it (drop {path.suffix})")
    return by_ext or (kind if kind in ("gzip", "bz2", "zstd") else None)


def open_binary(path: Path, comp: str | None) -> BinaryIO:
    """The file's bytes, decompressed on the fly."""
    if comp == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if comp == "bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if comp == "zstd":
        zstd = need("zstandard", "a .zst file", path)
        reader = zstd.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(reader)  # type: ignore[arg-type]
    return open(path, "rb")


def content_kind(path: Path, comp: str | None) -> str | None:
    """What the (decompressed) content is by its first bytes: parquet, arrow, another binary kind, or None (text)."""
    try:
        with open_binary(path, comp) as f:
            head = f.read(4096)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot decompress it ({comp}: {e}); fix: check the file is complete") from None
    kind = sniff(head)
    if kind in ("gzip", "bz2", "zstd"):
        raise DataError(f"{path}: compressed twice ({comp}, then {kind}); fix: decompress it once and name it accordingly")
    return kind


def iter_lines(path: Path, comp: str | None = None, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its line break) of a text file in `encoding` (data.encoding; a file starting
    with the UTF-8 BOM is UTF-8 whatever it says), streamed and decompressed; BOM dropped. The first undecodable
    line stops it: the encoding is told from a bounded window of raw bytes from that line."""
    with open_binary(path, comp) as f:
        try:
            for i, raw in enumerate(f, 1):
                if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw, encoding = raw[3:], "utf-8"
                try:
                    yield i, raw.decode(encoding)
                except UnicodeDecodeError as e:
                    sample = raw[:SAMPLE]
                    try:
                        sample += f.read(max(0, SAMPLE - len(sample)))
                    except (OSError, EOFError):   # a damaged compressed file: the line alone tells enough
                        pass
                    raise encoding_error(path, i, raw[e.start:e.start + 4], sample, comp, encoding) from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot decompress it ({comp}: {e}); fix: check the file is complete") from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A whole (small) text file, e.g. a class file, in the data's encoding; undecodable and binary files are named."""
    path = Path(path)
    _check_file(path)
    comp = compression(path)
    kind = content_kind(path, comp)
    if kind is not None:
        raise _binary_error(path, kind)
    return "".join(ln for _, ln in iter_lines(path, comp, encoding))


def _binary_error(path: Path, kind: str) -> DataError:
    if kind == "utf-16":
        return DataError(f"{path}: the file is UTF-16 text; fix: convert it to UTF-8, e.g. "
                         f"`iconv -f UTF-16 -t UTF-8 {path} > {path.stem}.utf8{path.suffix}`")
    if kind == "xls" and is_excel(path):     # an .xlsx in an OLE container: Office's encryption
        return DataError(f"{path}: the workbook is password-protected (encrypted), so its sheets cannot be read; fix: "
                         f"open it in Excel or WPS, remove the password (File > Info > Protect Workbook) and save it")
    excel = " or .xlsx" if kind in ("xls", "zip") else ""
    return DataError(f"{path}: the file is {NAMES[kind]}, not a data format tricklab reads; fix: export it as "
                     f"CSV, TSV, JSONL, Parquet{excel}" + (" (a workbook is read when its name ends in .xlsx)"
                                                          if kind == "zip" else ""))


# legacy encodings worth naming (charset_normalizer picks among them; a free choice over-fits short texts)
CANDIDATES = ("gb18030", "big5", "shift_jis", "euc_jp", "euc_kr", "cp1252", "cp1251", "koi8_r", "cp1250",
              "iso8859_7", "cp1256", "cp1255", "cp874", "cp1258", "utf_16")
ENC_NAMES = {"gb18030": "GBK/GB18030 (Chinese)", "big5": "Big5 (Traditional Chinese)",
             "shift_jis": "Shift_JIS (Japanese)", "cp932": "Shift_JIS (Japanese)", "euc_jp": "EUC-JP (Japanese)", "euc_kr": "EUC-KR (Korean)",
             "cp949": "EUC-KR (Korean)", "cp1252": "Windows-1252 (Western European)", "cp1251": "Windows-1251 (Cyrillic)"}
ICONV = {"gb18030": "GB18030", "big5": "BIG5", "shift_jis": "SHIFT_JIS", "cp932": "CP932", "euc_jp": "EUC-JP",
         "euc_kr": "EUC-KR", "cp949": "CP949", "koi8_r": "KOI8-R", "utf_16": "UTF-16"}
SAMPLE = 200_000   # bytes of a non-UTF-8 file given to charset_normalizer
CAT = {"gzip": "zcat", "bz2": "bzcat", "zstd": "zstdcat"}


def detect_encoding(raw: bytes) -> str | None:
    """The most likely legacy encoding of bytes that are not UTF-8, or None: charset_normalizer's matches of least
    chaos; a tie (short texts decode cleanly in several CJK encodings) goes to the earlier of CANDIDATES."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    matches = list(from_bytes(raw[:SAMPLE], cp_isolation=list(CANDIDATES)))
    if not matches:
        return None
    low = min(m.chaos for m in matches)
    tied = {name for m in matches if m.chaos <= low + 0.01 for name in m.could_be_from_charset}
    return next((c for c in CANDIDATES if c in tied), matches[0].encoding)


def _line_safe(enc: str) -> bool:
    from ..config import check_encoding
    from ..errors import ConfigError

    try:
        check_encoding(enc, "")
    except ConfigError:
        return False
    return True


def readable_as(sample: bytes, current: str = "utf-8") -> str | None:
    """The encoding to suggest for bytes that `current` cannot read: UTF-8 when they are UTF-8, else the one
    detected (detect_encoding); never `current` itself."""
    if current != "utf-8":
        try:
            sample.decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError as e:
            if e.start >= len(sample) - 3:         # only a character cut at the sample's end
                return "utf-8"
    enc = detect_encoding(sample)
    return None if enc is None or enc.replace("-", "_") == current.replace("-", "_") else enc


def uncompressed_name(path: Path) -> Path:
    """train.tsv.gz -> train.tsv: the name without a compression suffix."""
    return path.with_suffix("") if path.suffix.lower() in COMPRESSED else path


def encoding_error(path: Path | str, line: int, bad: bytes, sample: bytes, comp: str | None = None,
                   encoding: str = "utf-8", setting: str = "--set data.encoding=", noun: str = "file",
                   stdin: bool = False) -> DataError:
    """One line for text that is not in `encoding`: the first undecodable line and its bytes, the encoding detected
    in `sample` (raw bytes from that line on, bounded), and the fixes: the setting that reads it (`setting` + the
    codec: data.encoding for train/evaluate, predict's --encoding) or the iconv command that converts it (a
    compressed file: decompressed first; standard input: piped through it)."""
    enc = readable_as(sample, encoding)
    head = f"{path} line {line}: undecodable bytes {bad!r}: the {noun} is"
    if encoding != "utf-8":
        told = f"; it looks like {ENC_NAMES.get(enc, enc.upper().replace('_', '-'))}" if enc else ""
        fix = f"{setting}{enc}" if enc else f"check that line: the {noun} may mix encodings or be damaged there"
        return DataError(f"{head} not {encoding} ({setting.split()[-1].rstrip('=')}){told}; fix: {fix}")
    name = Path(str(path))
    plain = uncompressed_name(name)
    source = f"{CAT[comp]} {name} | iconv" if comp else "iconv"
    target = ("YOUR_FILE | tricklab predict ..." if stdin else
              f"{name} > {plain.stem}.utf8{plain.suffix}" if not comp else f"> {plain.stem}.utf8{plain.suffix}")
    if enc is None:
        what, fix = ("not UTF-8 (its encoding could not be told)", f"find its encoding (e.g. `file -i "
                     f"{'FILE' if stdin else name}`) and convert it: `{source} -f ENCODING -t UTF-8 {target}`")
    else:
        what = f"not UTF-8 but most likely {ENC_NAMES.get(enc, enc.upper().replace('_', '-'))}"
        fix = (f"read it as such with {setting}{enc}, or " if _line_safe(enc) else "") + (
            f"convert it to UTF-8, e.g. `{source} -f {ICONV.get(enc, enc.upper().replace('_', '-'))} -t UTF-8 {target}`")
    return DataError(f"{head} {what}; fix: {fix}")


def decode_text(raw: bytes, path: Path | str) -> str:
    """UTF-8 text (BOM stripped), or one line: the first undecodable line, the encoding detected and the iconv fix."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        raise encoding_error(path, raw[:start].count(b"\n") + 1, raw[e.start:e.start + 4],
                             raw[start:start + SAMPLE]) from None


def detect_format(path: Path, cfg: DataConfig) -> str:
    """The format by data.format, else by the extension (a compression extension is looked through)."""
    if cfg.format not in ("auto", "thucnews"):
        return cfg.format
    path = Path(path)
    ext = Path(path.stem).suffix.lower() if path.suffix.lower() in COMPRESSED else path.suffix.lower()
    return EXTENSIONS.get(ext, "tsv")


def read_rows(path: Path, cfg: DataConfig, labelled: bool = True, problems: list[str] | None = None,
              pair: bool | None = None, name: str | None = None) -> list[Row]:
    """The valid rows of one file. Problems are appended to `problems` when given (so a caller can
    report every file's problems together), else raised at once as one DataError. `pair` fixes the
    positional layout of header-less files (dev/test follow train) instead of guessing it from line 1.
    `name`: what a workbook's row problems and rows are named by (`book.xlsx[dev]`: one split's sheet)."""
    if problems is None:
        found: list[str] = []
        rows = read_rows(path, cfg, labelled, found, pair, name)
        if found:
            raise DataError(found)
        return rows
    path = Path(path)
    try:
        return _read(path, cfg, labelled, problems, pair, name)
    except DataError as e:  # whole-file problems (encoding, no columns, ...)
        problems.extend(e.problems)
        return []


def _read(path: Path, cfg: DataConfig, labelled: bool, problems: list[str], pair: bool | None,
          name: str | None = None) -> list[Row]:
    _check_file(path)
    comp = compression(path)
    kind = content_kind(path, comp)
    if kind in ("parquet", "arrow"):   # by the bytes: a Parquet file named .txt is still read as Parquet
        return read_table(path, kind, comp, cfg, labelled, problems)
    fmt = detect_format(path, cfg)
    if kind == "zip" and (fmt == "xlsx" or is_excel(path)):
        return _read_excel(path, cfg, labelled, problems, pair, name)
    if kind is not None:
        raise _binary_error(path, kind)
    if fmt == "xlsx":
        raise DataError(f"{path}: data.format=xlsx (or the extension) says an Excel workbook, but the file is text; "
                        f"fix: rename it after its content (.csv, .tsv, .txt), or --set data.format=auto")
    if fmt in ("parquet", "arrow"):
        raise DataError(f"{path}: data.format={fmt} (or the extension) says {NAMES[fmt]}, but the file is text; "
                        f"fix: --set data.format=auto, or give the right file")
    lines = iter_lines(path, comp, cfg.encoding)
    if fmt in ("jsonl", "json"):
        return _read_json(path, lines, fmt, cfg, labelled, problems)
    delim = DELIMITERS.get(cfg.delimiter, cfg.delimiter) if cfg.delimiter else ("," if fmt == "csv" else "\t")
    if fmt == "csv" and not cfg.delimiter:
        delim = csv_delimiter(path, comp, cfg.encoding)
    if fmt == "csv":
        records: Iterable[tuple[int, Any]] = _csv_records(path, lines, delim)
    else:
        records = ((i, ln.rstrip("\r\n")) for i, ln in lines if ln.strip())
    rows = _read_delimited(path, records, cfg, delim, labelled, fmt == "csv", problems, pair)
    if delim != "," and fmt == "csv" and not cfg.delimiter and rows.columns:
        rows.columns["delimiter"] = delim
    return rows


def _read_excel(path: Path, cfg: DataConfig, labelled: bool, problems: list[str], pair: bool | None,
                name: str | None = None) -> list[Row]:
    """One sheet of a workbook, its rows read as a CSV's (header or not, the same column rules), named by their
    row numbers in the sheet (and `name`, else the path); rows above the header (a title) are passed over, with a
    note."""
    named = {c.strip().lower() for c in (cfg.text_column, cfg.text_b_column, cfg.label_column) if isinstance(c, str)}
    sheet = Sheet(path, cfg.sheet, prefer=(named, set(TEXT_NAMES)))
    table = sheet.table()
    found = header_index(table, KNOWN | named) if cfg.header == "auto" else 0
    start = max(found, 0)
    n_problems = len(problems)
    rows = _read_delimited(Path(name) if name else path, table[start:], cfg, ",", labelled, True, problems, pair,
                           unit="row", header_row=None if cfg.header != "auto" else found >= 0)
    empty = [i for i in range(n_problems, len(problems)) if ": empty text" in problems[i] or ": empty label" in problems[i]]
    if empty:                   # said once, on the first such row (a row problem still: data.on_invalid=skip holds)
        problems[empty[0]] += f" ({EMPTY_CELL_HINT})"
    if rows.columns:
        if name:                # one split's sheet: the others are the other splits, and data.sheet is no pin
            sheet.others = []
        rows.columns["sheet"] = {"name": sheet.title, "others": sheet.others,
                                 "note": sheet.describe([n for n, _ in table[:start]])}
    return rows


def csv_delimiter(path: Path, comp: str | None, encoding: str = "utf-8") -> str:
    """The separator of a .csv file, from its first non-blank lines (delimiter_of)."""
    return delimiter_of(list(itertools.islice((ln for _, ln in iter_lines(path, comp, encoding) if ln.strip()),
                                              SNIFF_LINES)))


def delimiter_of(head: list[str]) -> str:
    """',' unless csv.Sniffer, shown a CSV's first lines and offered ',', ';', tab and '|', finds another one used
    consistently (a spreadsheet saved where the decimal mark is a comma writes ';') that the first line holds
    too. The caller says which in a note."""
    if not head:
        return ","
    try:
        found = csv.Sniffer().sniff("".join(head), delimiters=",;\t|").delimiter
    except csv.Error:
        return ","
    return found if found in head[0] else ","


def _csv_records(path: Path, lines: Iterator[tuple[int, str]], delim: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader((ln for _, ln in lines), delimiter=delim)
    start = 1
    try:
        for row in reader:
            if any(c.strip() for c in row):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path} line {start}: cannot read it as CSV ({e}); fix: check the quotes on that line") from None


def _header_fields(first: list[str], cfg: DataConfig) -> bool:
    """Whether a text file's first record names the columns (a sheet's header is found by excel.header_index)."""
    if cfg.header != "auto":
        return cfg.header == "true"
    named = [c for c in (cfg.text_column, cfg.text_b_column, *_label_names(cfg.label_column)) if isinstance(c, str)]
    cells = [c.strip().lower() for c in first]
    if named:  # a row of names that lacks a wanted one is still a header: the error then names the closest
        names_like = all(c == "" or c.replace(" ", "_").replace("-", "_").isidentifier() for c in cells)
        return all(n.lower() in cells for n in named) or names_like and (
            any(c in KNOWN for c in cells) or any(difflib.get_close_matches(n.lower(), cells, 1) for n in named))
    # unknown cells must look like ASCII names: Chinese words pass isidentifier(), and a first line `评论<TAB>正面`
    # is an example, not a header
    return any(c in KNOWN for c in cells) and all(c == "" or c in KNOWN or c.isascii() and c.isidentifier()
                                                  or c.startswith("unnamed:") for c in cells)   # pandas' index


def _decide_header(first: list[str], records: Iterator[tuple[int, Any]], split: Callable[[Any, int | None], list[str]],
                   cfg: DataConfig, peek: bool, header_row: bool | None) -> tuple[list[str] | None, Iterator[Any]]:
    """(the header or None, the records after line 1): as the caller found it (header_row), else by _header_fields,
    else (`peek`: labelled and split on every separator) by the label column's name (_label_name_not_a_value)."""
    is_header = _header_fields(first, cfg) if header_row is None else header_row
    if header_row is None and not is_header and cfg.header == "auto" and peek:
        sample, records = _peek(records, 200)
        is_header = _label_name_not_a_value(first, [split(rec, None) for _, rec in sample], cfg.label_column)
    return (first if is_header else None), records


def _label_name_not_a_value(first: list[str], below: list[list[str]], label_column: Any) -> bool:
    """A first line whose label cell (data.label_column when it is an index, else the last column, where a file
    without a header has its label) is a label column's name (`意图`, `label`) that never comes back as a value
    below names the columns, whatever its other cells (`用户问题,意图`), as excel.header_index decides for a sheet.
    A first line `评论<TAB>正面` (no label name there) or `分类<TAB>体育` (a name in the text's place) stays data."""
    j = label_column if isinstance(label_column, int) else len(first) - 1
    if not below or not 0 <= j < len(first) or len(first) < 2:
        return False
    name = first[j].strip().lower()
    return name in LABEL_NAMES and not any(j < len(cells) and cells[j].strip().lower() == name for cells in below)


def _pick(header: list[str] | None, want: str | int | None, names: tuple[str, ...], path: Path, role: str,
          at: str = "line 1") -> int | None:
    """The column index a role reads: data.<role>_column, else the first known name in the header (`at`: where
    the header, or the first line of data, is)."""
    if isinstance(want, int):
        return want
    if header is None:
        if want is not None:
            raise DataError(f"{path}: data.{role}_column={want!r} names a column, but the file has no header line "
                            f"({at} holds data); fix: use a 0-based column index, e.g. --set data.{role}_column=0, "
                            f"or add a header line (or --set data.header=true)")
        return None
    low = [h.strip().lower() for h in header]
    if want is not None:
        if want.lower() not in low:
            raise column_not_found(path, role, want, header, at=f"{path} {at}")
        return low.index(want.lower())
    for n in names:
        if n in low:
            return low.index(n)
    return None


def _read_delimited(path: Path, records: list[tuple[int, Any]], cfg: DataConfig, delim: str, labelled: bool,
                    is_csv: bool, problems: list[str], pair: bool | None = None, unit: str = "line",
                    header_row: bool | None = None) -> list[Row]:
    """`unit`: what the record numbers count, "line" (a text file's) or "row" (a sheet's); `header_row`: whether the
    first record is the header, when the caller has found out (a sheet: excel.header_index), else _header_fields."""
    records = iter(records)
    first_rec = next(records, None)
    if first_rec is None:
        raise DataError(f"{path}: the file is empty: it needs one example per {unit}")
    split_all = is_csv or delim in ("\t", ",")

    def split(ln: Any, n: int | None) -> list[str]:
        if is_csv:
            return ln
        return ln.split(delim) if split_all or n is None else ln.split(delim, n - 1)

    first = split(first_rec[1], None)
    header, records = _decide_header(first, records, split, cfg, labelled and split_all, header_row)
    if header is None:
        records = itertools.chain([first_rec], records)
    at = f"{unit} {first_rec[0]}"
    ti = _pick(header, cfg.text_column, TEXT_NAMES, path, "text", at)
    bi = _pick(header, cfg.text_b_column, TEXT_B_NAMES, path, "text_b", at)
    listed = isinstance(cfg.label_column, list)
    li = None if listed else _pick(header, cfg.label_column, LABEL_NAMES, path, "label", at)
    si = _pick(header, cfg.soft_label_column, (), path, "soft_label", at)
    guessed: dict[str, str] = {}
    flags: list[int] = []          # 0/1 label columns (multi-label), folded into one label column at the end
    if listed and header is None:
        raise DataError(f"{path}: data.label_column={cfg.label_column!r} names 0/1 columns of a header, but {at} "
                        f"holds data; fix: add a header line (or --set data.header=true)")
    if header is not None and labelled and li is None and split_all:
        flags, header, records = _flag_columns(path, header, records, split, cfg, (ti, bi, si), unit, problems, is_csv, delim)
        li = len(header) - 1 if flags else None
    if header is not None:
        ncols = len(header)
        left = [i for i in range(ncols) if i not in (ti, bi, li, si, *flags) and not _id_like(header[i])]   # ids never count
        if len(left) == 1 and (ti is None) != (labelled and li is None):
            if ti is None:              # one role unnamed, one column left: the label is named, so this is the text
                ti, guessed["text"] = left[0], "the only column left"
            else:                       # a label only if its values look like labels (not an `answer` column)
                sample, records = _peek(records)
                values = [c[left[0]].strip() for c in (split(rec, ncols) for _, rec in sample) if len(c) == ncols]
                if _label_like(values):
                    li, guessed["label"] = left[0], "the only column left; short, repeated values"
        if ti is None:
            raise DataError(f"{path} {unit} {first_rec[0]}: no text column in header ({', '.join(header)}); "
                            f"fix: --set data.text_column=NAME")
        if labelled and li is None:
            raise DataError(f"{path} {unit} {first_rec[0]}: no label column in header ({', '.join(header)}); "
                            f"fix: --set data.label_column=NAME{FLAGS_HINT}")
    else:
        ncols, ti, bi, li, records = _headerless(path, first, records, split, (ti, bi, li, si), labelled, pair,
                                                 split_all, f"{unit} {first_rec[0]}")
    if not labelled:
        li = None if header is None and ncols == 1 else li
    layout = ", ".join(n for n, i in sorted([("text", ti), ("text_b", bi), ("label", li)], key=lambda x: -1 if x[1] is None else x[1]) if i is not None)
    sep_name = _sep_name(delim)
    rows: list[Row] = []
    if labelled and li is None:
        raise DataError(f"{path}: no label column found ({ncols} column(s)); fix: set data.label_column "
                        f"(a header name or 0-based index)")
    for line, rec in records:
        cells = split(rec, ncols)
        if len(cells) != ncols:
            problems.append(_count_problem(f"{path} {unit} {line}", ncols, sep_name, layout, rec, delim, len(cells)))
            continue
        text = cells[ti].strip()
        text_b = cells[bi].strip() if bi is not None else None
        label = cells[li].strip() if li is not None else None
        if not text or (bi is not None and not text_b):
            problems.append(f"{path} {unit} {line}: empty text; fix: fill it in or delete the {unit}")
            continue
        if labelled and li is not None and label == "":
            problems.append(f"{path} {unit} {line}: empty label for {_short(text)}; fix: add the label or delete the "
                            f"{unit}")
            continue
        rows.append(Row(text, text_b, label, line, str(path), cells[si].strip() if si is not None else None, unit=unit))
    out = Rows(rows)
    out.columns = column_choice(path, header, first, cfg, ncols, {"text": ti, "text_b": bi, "label": li, "soft_label": si},
                                guessed)
    if flags:
        flag_choice(out.columns, header, flags, FLAGS_COLUMN, cfg.label_column)
    if header is None and labelled and cfg.header == "auto" and _header_read_as_data(rows, first_rec[0], cfg.label_sep):
        out.columns["suspect_header"] = {"where": f"{unit} {first_rec[0]}", "label": rows[0].label}
    return out


def _sep_name(delim: str) -> str:
    return {"\t": "tab", ",": "comma", " ": "space"}.get(delim, repr(delim))


def _count_problem(where: str, n: int, sep_name: str, layout: str, rec: Any, delim: str, found: int) -> str:
    return (f"{where}: expected {n} {sep_name}-separated columns ({layout}), found {found}: "
            f"{_short(rec if isinstance(rec, str) else delim.join(rec))}; fix: remove stray {sep_name}s inside the "
            f"text, or quote the file as CSV")


def _headerless(path: Path, first: list[str], records: Iterator[tuple[int, Any]], split: Any,
                roles: tuple[int | None, ...], labelled: bool, pair: bool | None, split_all: bool, at: str
                ) -> tuple[int, int | None, int | None, int | None, Iterator[tuple[int, Any]]]:
    """A file without a header: (its column count, the text, text_b and label columns, the records): the columns
    set by index, else by position (text | text, label | text_a, text_b, label), else the free ones in order."""
    ti, bi, li, si = roles
    given = [i for i in roles if i is not None]
    if not split_all:  # e.g. space: the last column takes the rest of the line
        ncols = max(max(given, default=-1) + 1, 2 if labelled else 1)
    elif pair is not None and not given:
        ncols = (2 if pair else 1) + (1 if labelled else 0)
    else:
        ncols = len(first)
    if not given and ncols == 3:  # positional defaults: text | text, label | text_a, text_b, label
        ti, bi, li = 0, 1, 2
    elif ti is None or (labelled and li is None):
        if ncols > 3 or (ncols == 3 and ti is None):
            raise DataError(f"{path} {at}: {ncols} columns and no header; fix: name them with "
                            f"--set data.text_column=I --set data.label_column=J (0-based)")
        free = [i for i in range(ncols) if i not in given]  # unset roles take the free columns in order
        if ti is None and free:
            ti = free.pop(0)
        if labelled and li is None and free:
            li = free.pop(0)
    if labelled and not given and ncols == 2 and pair is not True and split_all:
        records = _refuse_label_first(path, records, split)
    return ncols, ti, bi, li, records


FLAG_ON = {"1", "1.0", "true", "yes", "y"}
FLAG_OFF = {"0", "0.0", "false", "no", "n", ""}
FLAG_VALUES = FLAG_ON | FLAG_OFF
FLAGS_COLUMN = "labels (0/1 columns)"


FLAGS_HINT = " (or, one 0/1 column per class: --set 'data.label_column=[NAME, NAME, ...]')"


def _flag_like(values: list[str]) -> bool:
    """A 0/1 label column's sampled values (lower-case, stripped): numbers or empty, nine in ten 0/1 (a stray -1
    or 2 is then a row problem); a word (`maybe`, a remark) makes it no 0/1 column."""
    ok = sum(v in FLAG_VALUES for v in values)
    return bool(values) and ok >= 0.9 * len(values) and all(v in FLAG_VALUES or _is_float(v) for v in values)


def _check_flags(path: Path, header: list[str], flags: list[int | None], taken: tuple[int | None, ...],
                 setting: list[Any]) -> None:
    """data.label_column as a list, resolved to header indices: each a column of the header, none twice, none the
    text's (or text_b's, soft labels')."""
    where = f"{path}: data.label_column={json.dumps(setting, ensure_ascii=False)}"
    bad = [c for c, i in zip(setting, flags) if i is None or not 0 <= i < len(header)]
    if bad:
        raise DataError(f"{where}: {bad[0]!r} is no column of the header ({', '.join(header)}); fix: a name of the "
                        f"header or a 0-based index below {len(header)}")
    twice = [header[i] for i in flags if flags.count(i) > 1]
    if twice:
        raise DataError(f"{where}: names the column {twice[0]!r} twice; fix: list each 0/1 column once")
    clash = [header[i] for i in flags if i in taken]
    if clash:
        raise DataError(f"{where}: {clash[0]!r} is read as the text (or text_b, soft labels), not a 0/1 label column; "
                        f"fix: leave it out of the list")


def _label_names(label_column: Any) -> list[Any]:
    return list(label_column) if isinstance(label_column, list) else [label_column]


def _flag_columns(path: Path, header: list[str], records: Iterator[tuple[int, Any]], split: Any, cfg: DataConfig,
                  taken: tuple[int | None, ...], unit: str, problems: list[str], is_csv: bool, delim: str
                  ) -> tuple[list[int], list[str], Iterator[tuple[int, Any]]]:
    """Multi-label data with one 0/1 column per class (`id, comment_text, toxic, obscene, ...`): (those columns,
    the header with one label column added, records whose added cell lists the classes marked 1, as a JSON list).
    The columns are data.label_column as a list of names (or indices), else, when no column is named like a label,
    the two or more columns besides the text and ids whose first PEEK_RECORDS values are 0 or 1 (`true`/`false`,
    `yes`/`no`; empty is 0), nine in ten at least. A value that is neither is a row problem. ([], header, records)
    when there are none."""
    n = len(header)
    sample, records = _peek(records)
    cells = [c for c in (split(rec, n) for _, rec in sample) if len(c) == n]
    if isinstance(cfg.label_column, list):
        flags = [_pick(header, c, (), path, "label", f"{unit} 1") for c in cfg.label_column]
        _check_flags(path, header, flags, taken, cfg.label_column)
        words = [header[i] for i in flags                                   # mostly not 0/1: a mistake
                 if cells and sum(c[i].strip().lower() in FLAG_VALUES for c in cells) < len(cells) / 2]
        if words:       # an id or text column listed by mistake: one error, not one per row
            raise DataError(f"{path}: data.label_column lists {words[0]!r}, whose values are not 0/1 (e.g. "
                            f"{_short(cells[0][header.index(words[0])].strip())}); fix: leave it out of the list")
    else:
        left = [i for i in range(n) if i not in taken and not _id_like(header[i])
                and any(c[i].strip() for c in cells)]                       # an empty column carries nothing
        flags = [i for i in left if _flag_like([c[i].strip().lower() for c in cells])]
        if len(flags) < 2 or len(flags) < len(left):    # another column left may be the label: no guess
            return [], header, records
    names = [header[i].strip() for i in flags]
    sep, layout = _sep_name(delim), ", ".join(header)

    def fold() -> Iterator[tuple[int, Any]]:
        for line, rec in records:
            cells = split(rec, n)
            if len(cells) != n:
                problems.append(_count_problem(f"{path} {unit} {line}", n, sep, layout, rec, delim, len(cells)))
                continue
            values = [cells[i].strip().lower() for i in flags]
            bad = next((j for j, v in enumerate(values) if v not in FLAG_VALUES), None)
            if bad is not None:
                problems.append(f"{path} {unit} {line}: label column {names[bad]!r} holds "
                                f"{_short(cells[flags[bad]].strip())}: expected 0 or 1 (1: the class applies); fix: "
                                f"write 0 or 1")
                continue
            on = json.dumps([nm for nm, v in zip(names, values) if v in FLAG_ON], ensure_ascii=False)
            yield line, [*cells, on] if is_csv else delim.join([*cells, on])
    return flags, [*header, FLAGS_COLUMN], fold()


def _header_read_as_data(rows: list[Row], first_line: int, label_sep: str) -> bool:
    """Whether a first line read as data (no known column name in it) may be a header after all: short, and its
    label occurs nowhere else while the other labels repeat; training on it would add a one-example class named
    after the header. Only said in the columns note (a real one-example class can come first too). Labels that
    hold the multi-label separator (a combination may well be unique) or a number are not header names."""
    if len(rows) < 10 or rows[0].line != first_line or not isinstance(rows[0].label, str):
        return False
    lab = rows[0].label
    if (label_sep and label_sep in lab) or lab.lstrip("[").startswith(("\"", "'")) or _is_float(lab):
        return False
    counts = Counter(r.label for r in rows)
    return (counts[lab] == 1 and len(counts) <= len(rows) / 3 and len(rows[0].text) <= 20 and len(lab) <= 30)


def _id_like(name: str) -> bool:
    n = name.strip().lower()
    return (n in ("", "id", "idx", "index", "uid", "no", "key", "序号", "编号") or n.endswith("_id")
            or n.rstrip("0123456789") in ("id", "qid", "pid")                # qid1, qid2 (Quora pairs)
            or n.startswith("unnamed:"))           # pandas' to_csv writes its index as '' (read back: 'Unnamed: 0')


def _refuse_label_first(path: Path, records: Iterator[tuple[int, Any]], split: Any) -> Iterator[tuple[int, Any]]:
    """The same records; a header-less two-column file whose first PEEK_RECORDS (500) lines read label first (column 0 short and
    repeated, column 1 long and distinct) stops with the settings that read it so, rather than training on the
    labels as texts. A setting, not a silent flip: evaluate, predict and resume then read it the same way."""
    sample, records = _peek(records)
    cells = [c for c in (split(rec, 2) for _, rec in sample) if len(c) == 2]
    c0, c1 = [c[0].strip() for c in cells], [c[1].strip() for c in cells]
    if _label_like(c0) and len(set(c1)) >= 0.9 * len(c1) and _mean_len(c1) >= max(2 * _mean_len(c0), 4):
        shown = ", ".join(repr(v) for v in sorted(set(c0))[:4])
        raise DataError(f"{path}: no header and two columns, and column 0 looks like the labels (short, repeated: "
                        f"{shown}) and column 1 like the texts (long, distinct); fix: --set data.text_column=1 "
                        f"--set data.label_column=0 (or, if column 0 is the text: --set data.text_column=0 "
                        f"--set data.label_column=1)")
    return records


def _peek(records: Iterator[tuple[int, Any]], n: int = PEEK_RECORDS) -> tuple[list[tuple[int, Any]], Iterator[tuple[int, Any]]]:
    """The first n records, and an iterator that still yields every record from the first."""
    sample = list(itertools.islice(records, n))
    return sample, itertools.chain(sample, records)


def _is_float(s: Any) -> bool:
    """Whether a value reads as a number (a regression target, a decimal, an id); a boolean does not."""
    if isinstance(s, bool):
        return False
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _mean_len(values: list[str]) -> float:
    return sum(map(len, values)) / len(values) if values else 0.0


def _label_like(values: list[str]) -> bool:
    """A column of labels rather than texts: short values, repeated (at most half as many distinct as rows)."""
    if len(values) < 4:
        return False
    return len(set(values)) <= len(values) // 2 and _mean_len(values) <= 16


def _read_json(path: Path, lines: Iterator[tuple[int, str]], fmt: str, cfg: DataConfig, labelled: bool,
               problems: list[str]) -> list[Row]:
    """JSONL (one object per line, streamed), or a file that starts with `[`: a JSON array of objects (parsed
    whole; its rows are named by 0-based index). data.format json and jsonl read both."""
    first = next(((i, ln) for i, ln in lines if ln.strip()), None)
    if first is None:
        raise DataError(f"{path}: the file is empty: it needs one JSON object per line")
    lines = itertools.chain([first], lines)
    if first[1].lstrip().startswith("["):
        try:
            items = json.loads("".join(ln for _, ln in lines))
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {e.lineno + first[0] - 1}: not valid JSON ({e.msg}); fix: one array of "
                            f"objects, e.g. [{{\"text\": \"...\", \"label\": \"...\"}}], or JSONL") from None
        if not items:
            raise DataError(f"{path}: the JSON array is empty: it needs one object per example")
        return records_to_rows(enumerate(items), str(path), "row", cfg, labelled, problems, objects_only=True)
    return records_to_rows(_jsonl_objects(path, lines, problems), str(path), "line", cfg, labelled, problems,
                           objects_only=True)


def _jsonl_objects(path: Path, lines: Iterable[tuple[int, str]], problems: list[str]) -> Iterator[tuple[int, Any]]:
    for i, ln in lines:
        if not ln.strip():
            continue
        try:
            yield i, json.loads(ln)
        except json.JSONDecodeError as e:
            problems.append(f"{path} line {i}: not valid JSON ({e.msg}): {_short(ln.rstrip())}; fix: one JSON object per line")


def _column(cols: list[str], want: str | int | None, names: tuple[str, ...], where: str, role: str,
            table: bool = False) -> str | None:
    """The column a role reads: data.<role>_column (a name, or a 0-based index into the columns), else the first
    known name (case-insensitive). `table`: the columns are a table's (every record has them), so a name that is
    not among them is an error (with the closest name) rather than a field missing from one record."""
    if isinstance(want, int):
        if not 0 <= want < len(cols):
            raise DataError(f"{where}: data.{role}_column={want} but there are {len(cols)} columns "
                            f"({', '.join(cols)}); fix: a 0-based index below {len(cols)}, or a column name")
        return cols[want]
    low = {c.lower(): c for c in reversed(cols)}
    if isinstance(want, str):
        if want.lower() in low:
            return low[want.lower()]
        if want in cols:
            return want
        if table:
            raise column_not_found(where, role, want, cols, table=True)
        return None
    return next((low[n] for n in names if n in low), None)


def _roles(cols: list[str], cfg: DataConfig, where: str, table: bool = False) -> tuple[str | None, ...]:
    return (_column(cols, cfg.text_column, TEXT_NAMES, where, "text", table),
            _column(cols, cfg.text_b_column, TEXT_B_NAMES, where, "text_b", table),
            _column(cols, cfg.label_column, LABEL_NAMES, where, "label", table),
            _column(cols, cfg.soft_label_column, (), where, "soft_label", table)
            if cfg.soft_label_column is not None else None)


def _plain(v: Any) -> Any:
    """numpy/pandas scalars and arrays -> Python values; NaN (a missing value in a DataFrame) -> None."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _positional(rec: tuple | list, cfg: DataConfig, labelled: bool) -> dict[str, Any]:
    """A tuple record -> {index: value}: (text, label), (text_a, text_b, label), or (text,) unlabelled, unless
    data.*_column give the indices."""
    n = len(rec)
    if all(c is None for c in (cfg.text_column, cfg.text_b_column, cfg.label_column)):
        layout = {1: ("text",), 2: ("text", "label") if labelled else ("text", "text_b"),
                  3: ("text", "text_b", "label")}.get(n)
        if layout is None:
            raise DataError(f"a record has {n} fields: {_short(repr(rec))}; fix: give (text, label) or "
                            f"(text_a, text_b, label) tuples, dicts, or set data.text_column/label_column to indices")
        return dict(zip(layout, rec))
    return {str(i): v for i, v in enumerate(rec)}


def records_to_rows(records: Iterable[tuple[int, Any]], source: str, unit: str, cfg: DataConfig, labelled: bool,
                    problems: list[str], columns: list[str] | None = None, objects_only: bool = False) -> list[Row]:
    """(index, record) pairs -> rows. A record is a dict (JSON object, table row) or, unless objects_only, a tuple.
    Columns are resolved once per distinct set of keys (`columns`: the table's, checked up front)."""
    rows: list[Row] = Rows()
    n_problems = len(problems)
    cache: dict[tuple, tuple[str | None, ...]] = {}
    roles = None
    flags = _label_names(cfg.label_column) if isinstance(cfg.label_column, list) and labelled else []
    if flags:               # one 0/1 column per class: their names, folded into one list label
        if columns is None and any(isinstance(c, int) for c in flags):
            raise DataError(f"{source}: data.label_column={json.dumps(flags, ensure_ascii=False)}: JSON records "
                            f"have no column order; fix: name the 0/1 fields")
        if columns is not None and any(isinstance(c, int) and not 0 <= c < len(columns) for c in flags):
            raise DataError(f"{source}: data.label_column={json.dumps(flags, ensure_ascii=False)}: an index past the "
                            f"{len(columns)} columns ({', '.join(columns)}); fix: a name or a 0-based index below "
                            f"{len(columns)}")
        flags = _flag_keys(flags, columns or [])
        if len(set(flags)) < len(flags):
            raise DataError(f"{source}: data.label_column names one column twice ({', '.join(flags)}); fix: list "
                            f"each 0/1 column once")
        missing = [c for c in flags if columns is not None and c not in columns]
        if missing:
            close = difflib.get_close_matches(missing[0], columns or [], 1, 0.5)
            raise DataError(f"{source}: data.label_column lists {missing[0]!r}: no such column (columns: "
                            f"{', '.join(columns or [])})" + (f"; did you mean {close[0]!r}?" if close else "")
                            + "; fix: list the 0/1 columns by their names")
        records = _record_flags(records, flags, source, unit, problems, dataclasses.replace(cfg, label_column=None))
        setting, cfg = cfg.label_column, dataclasses.replace(cfg, label_column=FLAGS_COLUMN)
        columns = None if columns is None else [*columns, FLAGS_COLUMN]
    if columns is not None:
        roles = _roles(columns, cfg, source, table=True)
        rows.columns = column_choice(source, columns, columns, cfg, len(columns), {
            role: None if c is None else columns.index(c) for role, c in zip(("text", "text_b", "label", "soft_label"), roles)})
        if roles[0] is None:
            raise DataError(f"{source}: no text column (columns: {', '.join(columns)}); fix: --set data.text_column=NAME")
        if labelled and roles[2] is None:
            raise DataError(f"{source}: no label column (columns: {', '.join(columns)}); fix: --set data.label_column=NAME"
                            f"{FLAGS_HINT}")
    for i, obj in records:
        where = f"{source} {unit} {i}"
        if isinstance(obj, (tuple, list)) and not objects_only:
            obj = _positional(obj, cfg, labelled)
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object, got {_short(json.dumps(obj, ensure_ascii=False, default=str))}")
            continue
        if roles is None:
            keys = tuple(obj)
            if keys not in cache:
                cache[keys] = _roles([str(k) for k in keys], cfg, where)
        tk, bk, lk, sk = roles or cache[keys]
        row = _record_row(obj, tk, bk, lk, sk, where, labelled, problems, columns is None)
        if row is not None:
            row.line, row.source, row.unit = i, source, unit
            rows.append(row)
    if columns is None and cache:
        _named_fields_exist(cfg, cache, source, n_problems, problems)
        keys = [str(k) for k in next(iter(cache))]        # the first record's keys: the note names what was read
        rows.columns = column_choice(source, keys, keys, cfg, len(keys), {
            role: None if c is None else keys.index(c) for role, c in zip(("text", "text_b", "label", "soft_label"),
                                                                          cache[next(iter(cache))])})
    if flags and rows.columns:
        keys = columns or [str(k) for k in next(iter(cache))]
        flag_choice(rows.columns, keys, [keys.index(c) for c in flags if c in keys], FLAGS_COLUMN, setting)
    if not rows and len(problems) == n_problems:
        problems.append(f"{source}: no examples" + (": it needs one JSON object per line" if unit == "line" else ""))
    return rows


def _flag_keys(flags: list[Any], columns: list[str]) -> list[str]:
    """data.label_column as a list -> the column names it means: an index into `columns`, a name in any case (as a
    CSV header is matched); a name no column has stays as it is (the caller names the problem)."""
    low = {str(c).lower(): c for c in reversed(columns)}
    return [columns[c] if isinstance(c, int) and 0 <= c < len(columns) else low.get(str(c).lower(), str(c))
            for c in flags]


def _not_flags(source: str, roles: tuple[str | None, ...], flags: list[str]) -> None:
    """data.label_column as a list must not name the text (or text_b) column: one error, not one per record."""
    clash = [c for c in flags if c is not None and c in roles[:2]]
    if clash:
        raise DataError(f"{source}: data.label_column names {clash[0]!r}, the text column, as a 0/1 label column; fix: "
                        f"leave it out of the list")


def _record_flags(records: Iterable[tuple[int, Any]], flags: list[str], source: str, unit: str,
                  problems: list[str], cfg: DataConfig) -> Iterator[tuple[int, Any]]:
    """Records with one 0/1 field per class (data.label_column as a list): each with the list of the classes marked
    1 under FLAGS_COLUMN. 0/1, true/false, "0"/"1", yes/no; missing values (None, NaN) are 0. The first record's
    text field must not be one of them (`cfg`: how its roles are read)."""
    first = True
    for i, obj in records:
        if not isinstance(obj, dict):
            yield i, obj
            continue
        if first:
            _not_flags(source, _roles([str(k) for k in obj], cfg, source), flags)
            first = False
        on, bad = [], None
        for name in flags:
            v = _plain(obj.get(name))
            v = v.strip().lower() if isinstance(v, str) else v
            if name not in obj:
                bad = f"no {name!r} field (keys: {', '.join(map(str, obj))}); fix: add it, or leave it out of data.label_column"
            elif v is True or (not isinstance(v, bool) and v in (1, 1.0)) or v in FLAG_ON:
                on.append(name)
            elif not (v is None or v is False or (not isinstance(v, bool) and v in (0, 0.0)) or v in FLAG_OFF):
                bad = f"label column {name!r} holds {_short(str(v))}: expected 0 or 1 (1: the class applies); fix: write 0 or 1"
            if bad:
                break
        if bad:
            problems.append(f"{source} {unit} {i}: {bad}")
            continue
        yield i, {**obj, FLAGS_COLUMN: on}


def _named_fields_exist(cfg: DataConfig, cache: dict[tuple, Any], source: str, n_problems: int,
                        problems: list[str]) -> None:
    """A data.text_column/label_column name that no record has is a typo, not a missing field on every line:
    one error with the fields there are and the closest name, instead of one problem per record."""
    seen = list(dict.fromkeys(str(k) for keys in cache for k in keys))
    low = {k.lower() for k in seen}
    for role, want in (("text", cfg.text_column), ("label", cfg.label_column), ("text_b", cfg.text_b_column)):
        if isinstance(want, str) and want.lower() not in low:
            del problems[n_problems:]
            raise column_not_found(source, role, want, seen, table=True)


def _record_row(obj: dict, tk: str | None, bk: str | None, lk: str | None, sk: str | None, where: str,
                labelled: bool, problems: list[str], keyed: bool) -> Row | None:
    text = _plain(obj.get(tk)) if tk is not None else None
    if not isinstance(text, str) or not text.strip():
        if tk is None:
            problems.append(f"{where}: no text field (keys: {', '.join(map(str, obj))}); fix: add a 'text' field or "
                            f"set data.text_column")
        else:
            what = "empty text" if text is None or isinstance(text, str) else f"text {text!r} is not a string"
            problems.append(f"{where}: {what} in column {tk!r}; fix: fill it in or drop the row")
        return None
    label = _plain(obj.get(lk)) if lk is not None else None
    if isinstance(label, str):
        label = label.strip()          # as the delimited readers do: ' 退款 ' is 退款 in every format
    if labelled and (label is None or label == ""):
        if lk is None:
            problems.append(f"{where}: no label field (keys: {', '.join(map(str, obj))}); fix: add a 'label' field or "
                            f"set data.label_column")
        else:
            problems.append(f"{where}: empty label in column {lk!r} for {_short(text.strip())}; fix: add the label or "
                            f"drop the row")
        return None
    if isinstance(label, bool):
        label = "true" if label else "false"
    elif isinstance(label, (int, float)):
        label = str(label)
    text_b = _plain(obj.get(bk)) if bk is not None else None
    if bk is not None and not keyed and (text_b is None or not str(text_b).strip()):
        problems.append(f"{where}: empty text in column {bk!r} (the second text of the pair); fix: fill it in or drop the row")
        return None
    return Row(text.strip(), str(text_b).strip() if text_b is not None else None, label, 0, "",
               _plain(obj.get(sk)) if sk is not None else None)


def _table_source(path: Path, kind: str, comp: str | None) -> tuple[list[str], Iterator[Any]]:
    """(column names, record batches) of a Parquet or Arrow IPC file (file or stream format), read by batch."""
    pa = need("pyarrow", NAMES[kind], path)
    src: Any = str(path) if comp is None else pa.BufferReader(open_binary(path, comp).read())
    try:
        if kind == "parquet":
            pq = need("pyarrow.parquet", NAMES[kind], path)
            pf = pq.ParquetFile(src)
            return pf.schema_arrow.names, pf.iter_batches(batch_size=BATCH)
        mm = pa.memory_map(src) if isinstance(src, str) else src
        try:
            reader = pa.ipc.open_file(mm)
            return reader.schema.names, (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            mm.seek(0)
            stream = pa.ipc.open_stream(mm)
            return stream.schema.names, iter(stream)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read it as {NAMES[kind]} ({e}); fix: check the file is complete") from None


def read_table(path: Path, kind: str, comp: str | None, cfg: DataConfig, labelled: bool,
               problems: list[str]) -> list[Row]:
    """The rows of a Parquet/Arrow file, batch by batch; a row is named by its 0-based index."""
    names, batches = _table_source(path, kind, comp)
    flags = _label_names(cfg.label_column) if isinstance(cfg.label_column, list) else []
    roles = _roles(names, dataclasses.replace(cfg, label_column=None) if flags else cfg, str(path), table=True)
    flags = _flag_keys(flags, names)
    used = [c for c in dict.fromkeys([*roles, *flags]) if c is not None and c in names]

    def records() -> Iterator[tuple[int, dict]]:
        i = 0
        for batch in batches:
            for rec in batch.select(used).to_pylist() if used else []:
                yield i, rec
                i += 1

    return records_to_rows(records(), str(path), "row", cfg, labelled, problems, columns=names)


def read_records(records: Iterable[Any], cfg: DataConfig, labelled: bool = True, source: str = "data",
                 problems: list[str] | None = None, columns: list[str] | None = None) -> list[Row]:
    """In-memory records (dicts, or tuples: (text, label), (text_a, text_b, label)) -> rows, with the checks of
    the files: a problem names `source`, the 0-based row index and the column. Raises one DataError unless
    `problems` is given."""
    found: list[str] = [] if problems is None else problems
    try:
        rows = records_to_rows(enumerate(records), source, "row", cfg, labelled, found, columns)
    except DataError as e:
        found.extend(e.problems)
        rows = []
    if problems is None and found:
        raise DataError(found)
    return rows
