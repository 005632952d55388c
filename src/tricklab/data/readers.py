"""Read labelled text files into raw rows, reporting every problem with file, line, value and fix.

Formats: THUCNews-style `text<TAB>label`, TSV/CSV with or without a header (columns by name or
0-based index), JSONL, sentence pairs (text_a, text_b), other delimiters (e.g. `labels<SPACE>text`).
UTF-8 with or without BOM, LF or CRLF. A file in another encoding is refused with its line and the encoding
detected by charset_normalizer (GB18030, Big5, Shift_JIS, EUC-KR, cp1252, ...), named in the iconv fix.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import DataError
from .columns import Rows, column_choice, column_not_found

TEXT_NAMES = ("text", "text_a", "sentence", "sentence1", "review", "content", "query", "query1", "question", "title")
TEXT_B_NAMES = ("text_b", "sentence2", "query2", "question2")
LABEL_NAMES = ("label", "labels", "score", "target", "class", "category")
KNOWN = set(TEXT_NAMES + TEXT_B_NAMES + LABEL_NAMES)
DELIMITERS = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "pipe": "|"}  # names usable on the command line


@dataclass
class Row:
    text: str
    text_b: str | None
    label: Any          # raw: a string from text files, any JSON value from JSONL, None when unlabelled
    line: int           # 1-based line (or record) number in `source`
    source: str
    soft: Any = None    # raw soft labels (data.soft_label_column), for distillation


def _short(s: str, n: int = 60) -> str:
    s = s.replace("\t", "\\t")
    return repr(s if len(s) <= n else s[:n] + "...")


def read_text(path: Path) -> str:
    """Decode a file as UTF-8 (BOM stripped, CRLF kept for the caller); name GBK/GB18030 files."""
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else "")
                        + ": check the path given to --data/--dev/--test")
    return decode_text(path.read_bytes(), path)


# legacy encodings worth naming (charset_normalizer picks among them; a free choice over-fits short texts)
CANDIDATES = ("gb18030", "big5", "shift_jis", "euc_jp", "euc_kr", "cp1252", "cp1251", "koi8_r", "cp1250",
              "iso8859_7", "cp1256", "cp1255", "cp874", "cp1258", "utf_16")
NAMES = {"gb18030": "GBK/GB18030 (Chinese)", "big5": "Big5 (Traditional Chinese)", "shift_jis": "Shift_JIS (Japanese)",
         "cp932": "Shift_JIS (Japanese)", "euc_jp": "EUC-JP (Japanese)", "euc_kr": "EUC-KR (Korean)",
         "cp949": "EUC-KR (Korean)", "cp1252": "Windows-1252 (Western European)", "cp1251": "Windows-1251 (Cyrillic)"}
ICONV = {"gb18030": "GB18030", "big5": "BIG5", "shift_jis": "SHIFT_JIS", "cp932": "CP932", "euc_jp": "EUC-JP",
         "euc_kr": "EUC-KR", "cp949": "CP949", "koi8_r": "KOI8-R", "utf_16": "UTF-16"}


def detect_encoding(raw: bytes) -> str | None:
    """The most likely legacy encoding of bytes that are not UTF-8, or None: charset_normalizer's matches of least
    chaos; a tie (short texts decode cleanly in several CJK encodings) goes to the earlier of CANDIDATES."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    matches = list(from_bytes(raw[:200_000], cp_isolation=list(CANDIDATES)))
    if not matches:
        return None
    low = min(m.chaos for m in matches)
    tied = {name for m in matches if m.chaos <= low + 0.01 for name in m.could_be_from_charset}
    return next((c for c in CANDIDATES if c in tied), matches[0].encoding)


def decode_text(raw: bytes, path: Path | str) -> str:
    """UTF-8 text (BOM stripped), or one line: the first undecodable line, the encoding detected and the iconv fix."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        enc = detect_encoding(raw)
        name = Path(str(path))
        if enc is None:
            what, fix = ("not UTF-8 (its encoding could not be told)",
                         f"find its encoding (e.g. `file -i {name}`) and convert it: `iconv -f ENCODING -t UTF-8 {name} "
                         f"> {name.stem}.utf8{name.suffix}`")
        else:
            what = f"not UTF-8 but most likely {NAMES.get(enc, enc.upper().replace('_', '-'))}"
            fix = (f"convert it to UTF-8, e.g. `iconv -f {ICONV.get(enc, enc.upper().replace('_', '-'))} -t UTF-8 "
                   f"{name} > {name.stem}.utf8{name.suffix}`")
        raise DataError(f"{path} line {line}: undecodable bytes {raw[e.start:e.start + 4]!r}: the file is {what}; "
                        f"fix: {fix}") from None


def detect_format(path: Path, cfg: DataConfig) -> str:
    if cfg.format not in ("auto", "thucnews"):
        return cfg.format
    ext = path.suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(ext, "tsv")


def read_rows(path: Path, cfg: DataConfig, labelled: bool = True, problems: list[str] | None = None,
              pair: bool | None = None) -> list[Row]:
    """The valid rows of one file. Problems are appended to `problems` when given (so a caller can
    report every file's problems together), else raised at once as one DataError. `pair` fixes the
    positional layout of header-less files (dev/test follow train) instead of guessing it from line 1."""
    if problems is None:
        found: list[str] = []
        rows = read_rows(path, cfg, labelled, found, pair)
        if found:
            raise DataError(found)
        return rows
    path = Path(path)
    try:
        return _read(path, cfg, labelled, problems, pair)
    except DataError as e:  # whole-file problems (encoding, no columns, ...)
        problems.extend(e.problems)
        return []


def _read(path: Path, cfg: DataConfig, labelled: bool, problems: list[str], pair: bool | None) -> list[Row]:
    text = read_text(path)
    fmt = detect_format(path, cfg)
    if fmt == "jsonl":
        return _read_jsonl(path, text, cfg, labelled, problems)
    delim = DELIMITERS.get(cfg.delimiter, cfg.delimiter) if cfg.delimiter else ("," if fmt == "csv" else "\t")
    if fmt == "csv":
        records = [(i, r) for i, r in _csv_records(text, delim)]
    else:
        records = []
        for i, ln in enumerate(text.split("\n"), 1):
            ln = ln.rstrip("\r")
            if ln.strip():
                records.append((i, ln))
    return _read_delimited(path, records, cfg, delim, labelled, fmt == "csv", problems, pair)


def _csv_records(text: str, delim: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    out, start = [], 1
    for row in reader:
        if any(c.strip() for c in row):
            out.append((start, row))
        start = reader.line_num + 1
    return out


def _header_fields(first: list[str], cfg: DataConfig) -> bool:
    if cfg.header != "auto":
        return cfg.header == "true"
    named = [c for c in (cfg.text_column, cfg.text_b_column, cfg.label_column) if isinstance(c, str)]
    cells = [c.strip().lower() for c in first]
    if named:  # a row of names that lacks a wanted one is still a header: the error then names the closest
        names_like = all(c == "" or c.replace(" ", "_").replace("-", "_").isidentifier() for c in cells)
        return all(n.lower() in cells for n in named) or names_like and (
            any(c in KNOWN for c in cells) or any(difflib.get_close_matches(n.lower(), cells, 1) for n in named))
    return any(c in KNOWN for c in cells) and all(c == "" or c.isidentifier() or c in KNOWN for c in cells)


def _pick(header: list[str] | None, want: str | int | None, names: tuple[str, ...], path: Path, role: str) -> int | None:
    if isinstance(want, int):
        return want
    if header is None:
        if want is not None:
            raise DataError(f"{path}: data.{role}_column={want!r} names a column, but the file has no header line "
                            f"(line 1 holds data); fix: use a 0-based column index, e.g. --set data.{role}_column=0, "
                            f"or add a header line")
        return None
    low = [h.strip().lower() for h in header]
    if want is not None:
        if want.lower() not in low:
            raise column_not_found(path, role, want, header)
        return low.index(want.lower())
    for n in names:
        if n in low:
            return low.index(n)
    return None


def _read_delimited(path: Path, records: list[tuple[int, Any]], cfg: DataConfig, delim: str, labelled: bool,
                    is_csv: bool, problems: list[str], pair: bool | None = None) -> list[Row]:
    if not records:
        raise DataError(f"{path}: the file is empty: it needs one example per line")
    split_all = is_csv or delim in ("\t", ",")

    def split(ln: Any, n: int | None) -> list[str]:
        if is_csv:
            return ln
        return ln.split(delim) if split_all or n is None else ln.split(delim, n - 1)

    first = split(records[0][1], None)
    header = first if _header_fields(first, cfg) else None
    if header is not None:
        records = records[1:]
    ti = _pick(header, cfg.text_column, TEXT_NAMES, path, "text")
    bi = _pick(header, cfg.text_b_column, TEXT_B_NAMES, path, "text_b")
    li = _pick(header, cfg.label_column, LABEL_NAMES, path, "label")
    si = _pick(header, cfg.soft_label_column, (), path, "soft_label")
    if header is not None:
        ncols = len(header)
        if ti is None:
            raise DataError(f"{path} line 1: no text column in header ({', '.join(header)}); "
                            f"fix: --set data.text_column=NAME")
    else:
        given = [i for i in (ti, bi, li, si) if i is not None]
        if not split_all:  # e.g. space: the last column takes the rest of the line
            ncols = max(max(given, default=-1) + 1, 2 if labelled else 1)
        elif pair is not None and not given:
            ncols = (2 if pair else 1) + (1 if labelled else 0)
        else:
            ncols = len(split(records[0][1], None))
        if not given and ncols == 3:  # positional defaults: text | text, label | text_a, text_b, label
            ti, bi, li = 0, 1, 2
        elif ti is None or (labelled and li is None):
            if ncols > 3 or (ncols == 3 and ti is None):
                raise DataError(f"{path} line {records[0][0]}: {ncols} columns and no header; fix: name them with "
                                f"--set data.text_column=I --set data.label_column=J (0-based)")
            free = [i for i in range(ncols) if i not in given]  # unset roles take the free columns in order
            if ti is None and free:
                ti = free.pop(0)
            if labelled and li is None and free:
                li = free.pop(0)
    if not labelled:
        li = None if header is None and ncols == 1 else li
    layout = ", ".join(n for n, i in sorted([("text", ti), ("text_b", bi), ("label", li)], key=lambda x: -1 if x[1] is None else x[1]) if i is not None)
    sep_name = {"\t": "tab", ",": "comma", " ": "space"}.get(delim, repr(delim))
    rows: list[Row] = []
    if labelled and li is None:
        raise DataError(f"{path}: no label column found ({ncols} column(s)); fix: set data.label_column "
                        f"(a header name or 0-based index)")
    for line, rec in records:
        cells = split(rec, ncols)
        if len(cells) != ncols:
            problems.append(f"{path} line {line}: expected {ncols} {sep_name}-separated columns ({layout}), "
                            f"found {len(cells)}: {_short(rec if isinstance(rec, str) else delim.join(rec))}; "
                            f"fix: remove stray {sep_name}s inside the text, or quote the file as CSV")
            continue
        text = cells[ti].strip()
        text_b = cells[bi].strip() if bi is not None else None
        label = cells[li].strip() if li is not None else None
        if not text or (bi is not None and not text_b):
            problems.append(f"{path} line {line}: empty text; fix: fill it in or delete the line")
            continue
        if labelled and li is not None and label == "":
            problems.append(f"{path} line {line}: empty label for {_short(text)}; fix: add the label or delete the line")
            continue
        rows.append(Row(text, text_b, label, line, str(path), cells[si].strip() if si is not None else None))
    out = Rows(rows)
    out.columns = column_choice(path, header, first, cfg, ncols, {"text": ti, "text_b": bi, "label": li, "soft_label": si})
    return out


def _read_jsonl(path: Path, text: str, cfg: DataConfig, labelled: bool, problems: list[str]) -> list[Row]:
    rows: list[Row] = []
    n_problems = len(problems)
    for i, ln in enumerate(text.split("\n"), 1):
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as e:
            problems.append(f"{path} line {i}: not valid JSON ({e.msg}): {_short(ln)}; fix: one JSON object per line")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path} line {i}: expected a JSON object, got {_short(ln)}")
            continue
        keys = {k.lower(): k for k in obj}

        def get(want: Any, names: tuple[str, ...]) -> Any:
            if isinstance(want, str):
                return obj.get(want)
            for n in names:
                if n in keys:
                    return obj[keys[n]]
            return None

        text_v = get(cfg.text_column, TEXT_NAMES)
        text_b = get(cfg.text_b_column, TEXT_B_NAMES)
        label = get(cfg.label_column, LABEL_NAMES)
        soft = get(cfg.soft_label_column, ()) if cfg.soft_label_column is not None else None
        if not isinstance(text_v, str) or not text_v.strip():
            problems.append(f"{path} line {i}: missing or empty text (keys: {', '.join(obj)}); "
                            f"fix: add a 'text' field or set data.text_column")
            continue
        if labelled and label is None:
            problems.append(f"{path} line {i}: no label (keys: {', '.join(obj)}); fix: add a 'label' field or set data.label_column")
            continue
        if isinstance(label, bool):
            label = "true" if label else "false"
        elif isinstance(label, (int, float)):
            label = str(label)
        rows.append(Row(text_v.strip(), str(text_b).strip() if text_b is not None else None, label, i, str(path), soft))
    if not rows and len(problems) == n_problems:
        problems.append(f"{path}: the file is empty: it needs one JSON object per line")
    return rows
