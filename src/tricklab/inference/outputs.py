"""Prediction outputs, written a chunk of rows at a time and flushed as they go.

The format follows the output's extension: .jsonl/.ndjson (also standard output, and any other extension),
.json (one JSON array), .csv, .tsv, .parquet/.pq (pyarrow: `pip install 'tricklab[data]'`), .xlsx (an Excel
workbook of one sheet, through openpyxl, the same extra: lists and dicts as JSON text, as in CSV). A row is the
input record (its columns unchanged, in order) followed by the prediction. In CSV/TSV every list or dict
value (top_k, multi-label labels and scores) is written as JSON text, true/false for booleans, empty for
null; TSV fields escape tab, newline, carriage return and backslash as \\t \\n \\r \\\\. Parquet keeps a parquet
input's column types; other values take the types of the first chunk (nested values as JSON text).
A compression suffix after the format's (.jsonl.gz, .csv.bz2, .tsv.zst) compresses the text formats with gzip, bz2 or
zstandard (the `data` extra); parquet compresses its own columns and is not compressed again.
A file is written next to its destination (NAME.part) and renamed at the end, so a failed run leaves no
half file behind. Libraries: csv, json, gzip, bz2, zstandard, pyarrow.parquet.ParquetWriter, openpyxl.
"""
from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError, DataError
from .files import COMPRESSIONS, DATA_EXTRA, _need

OUTPUTS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet", ".xlsx": "xlsx"}
BINARY = ("parquet", "xlsx")          # written by their library, never through a compressor
TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def output_compression(output: str | Path | None) -> str | None:
    """gzip | bz2 | zstd from the output's last suffix, else None."""
    if output is None or str(output) == "-":
        return None
    return COMPRESSIONS.get(Path(output).suffix.lower())


def output_format(output: str | Path | None) -> str:
    """jsonl | json | csv | tsv | parquet from the extension (under a compression suffix); checked before any text
    is read."""
    if output is None or str(output) == "-":
        return "jsonl"
    comp = output_compression(output)
    inner = Path(output).with_suffix("") if comp else Path(output)
    if inner.suffix.lower() in (".xls", ".xlsm", ".xlsb", ".ods"):
        raise ConfigError(f"--output {output}: predictions are written as .xlsx, not {inner.suffix}; fix: --output "
                          f"{inner.with_suffix('.xlsx')}")
    fmt = OUTPUTS.get(inner.suffix.lower(), "jsonl")
    if fmt in BINARY and comp:
        raise ConfigError(f"--output {output}: {fmt} compresses its own {'columns' if fmt == 'parquet' else 'content'}; "
                          f"fix: --output {inner}")
    if fmt == "parquet":
        _need("pyarrow", f"--output {output}: writing parquet needs pyarrow")
    if fmt == "xlsx":
        from ..data.excel import need_openpyxl

        need_openpyxl(f"--output {output}: writing an Excel workbook")
    if comp == "zstd":
        _need("zstandard", f"--output {output}: writing zstandard needs the zstandard package")
    return fmt


def _open_text(path: Path, compression: str | None) -> IO[str]:
    """A text file for writing, through the output's compressor."""
    if compression == "gzip":
        return gzip.open(path, "wt", encoding="utf-8", newline="")
    if compression == "bz2":
        return bz2.open(path, "wt", encoding="utf-8", newline="")
    if compression == "zstd":
        import zstandard

        raw = zstandard.ZstdCompressor().stream_writer(open(path, "wb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def _flat(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (dt.date, dt.time)):
        return _iso(v)
    return v


def _iso(v: Any) -> str:
    """A date, time or datetime (from an Excel input's cells) as text, as the readers show it (excel.cell_text)."""
    from ..data.excel import cell_text

    return cell_text(v)


def _json_default(v: Any) -> Any:
    if isinstance(v, (dt.date, dt.time)):
        return _iso(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


def _cell(v: Any) -> Any:
    """A value for a worksheet cell: numbers and text as they are, booleans as TRUE/FALSE, lists and dicts as JSON
    text, null as an empty cell."""
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, ensure_ascii=False)
    return v


class Writer:
    """`write(rows, lines)` for each chunk (lines: the input line of each row, for messages); `close(ok)`."""

    def __init__(self, output: str | Path | None, input_schema: Any = None, source: str = "input", bom: bool = False):
        """`bom`: a CSV/TSV file starts with the UTF-8 BOM, which Excel needs to read it as UTF-8 (the input came
        from Excel)."""
        self.source = source
        self.fmt = output_format(output)
        self.final = None if output is None or str(output) == "-" else Path(output)
        self.path = None if self.final is None else self.final.with_name(self.final.name + ".part")
        self.input_schema = input_schema
        self.columns: list[str] | None = None
        self.rows = 0
        self._pq: Any = None
        self._schema: Any = None
        self._xlsx: Any = None
        self.f: IO[str] | None = None
        if self.final is not None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "xlsx":
            from ..data.excel import SheetWriter

            assert self.path is not None               # (standard output is JSONL)
            self._xlsx = SheetWriter(self.path)
        elif self.fmt != "parquet":
            self.f = sys.stdout if self.path is None else _open_text(self.path, output_compression(output))
            if bom and self.path is not None and self.fmt in ("csv", "tsv"):
                self.f.write("\ufeff")
            self._csv = csv.writer(self.f, lineterminator="\n") if self.fmt == "csv" else None

    def write(self, rows: list[dict[str, Any]], lines: list[int]) -> None:
        if not rows:
            return
        if self.fmt in ("csv", "tsv", "parquet", "xlsx"):
            self._check_columns(rows, lines)
        if self.fmt == "parquet":
            self._write_parquet(rows)
        elif self.fmt == "xlsx":
            assert self.columns is not None
            if self.rows == 0:
                self._xlsx.append(self.columns)
            for r in rows:
                self._xlsx.append([_cell(r.get(c)) for c in self.columns])
        else:
            assert self.f is not None
            self.f.write(self._text(rows))
            self.f.flush()
        self.rows += len(rows)

    def _text(self, rows: list[dict[str, Any]]) -> str:
        if self.fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
        if self.fmt == "json":
            body = ",\n".join(json.dumps(r, ensure_ascii=False, default=_json_default) for r in rows)
            return ("[\n" if self.rows == 0 else ",\n") + body
        assert self.columns is not None
        head = [self.columns] if self.rows == 0 else []
        table = head + [[_flat(r.get(c)) for c in self.columns] for r in rows]
        if self.fmt == "tsv":
            return "".join("\t".join(str(c).translate(TSV_ESCAPES) for c in cells) + "\n" for cells in table)
        assert self._csv is not None
        self._csv.writerows(table)
        return ""

    def _check_columns(self, rows: list[dict[str, Any]], lines: list[int]) -> None:
        if self.columns is None:
            self.columns = list(rows[0])
        known = set(self.columns)
        for r, line in zip(rows, lines):
            extra = [k for k in r if k not in known]
            if extra:
                raise DataError(f"{self.source} line {line}: key {extra[0]!r} is not among the columns of the first record "
                                f"({', '.join(self.columns)}), which {self.fmt.upper()} fixes for the whole file; "
                                f"fix: write JSONL (--output NAME.jsonl), whose records may differ")

    def _write_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keep = set(self.input_schema.names) if self.input_schema is not None else set()
        rows = [{k: (v if k in keep or v is None else _flat(v) if isinstance(v, (list, dict, tuple)) else v)
                 for k, v in r.items()} for r in rows]
        if self._schema is None:
            assert self.columns is not None
            others = pa.Table.from_pylist([{k: r.get(k) for k in self.columns if k not in keep} for r in rows]).schema
            fields = [self.input_schema.field(k) if k in keep else others.field(k) for k in self.columns]
            self._schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in fields])
            self._pq = pq.ParquetWriter(self.path, self._schema)
        try:
            table = pa.Table.from_pylist(rows, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"{self.final}: a value does not fit the column types taken from the first rows "
                            f"({str(e).splitlines()[0]}); fix: make the column's type consistent, or write "
                            f"JSONL/CSV") from None
        self._pq.write_table(table)

    def close(self, ok: bool) -> None:
        """Finish (ok) or throw away the partial file."""
        try:
            if ok and self._xlsx is not None:
                if self.rows == 0 and self.columns is None:
                    self._xlsx.append([])
                self._xlsx.save()
                if self._xlsx.cleaned:
                    print(f"note: {self.final}: {self._xlsx.cleaned} cell(s) held control characters an Excel sheet "
                          f"cannot hold; they were left out of those cells (the other formats keep them)",
                          file=sys.stderr)
                if self._xlsx.cut:
                    print(f"note: {self.final}: {self._xlsx.cut} cell(s) were longer than the 32,767 characters an "
                          f"Excel cell holds and were cut there (CSV, JSONL or Parquet keep them whole)",
                          file=sys.stderr)
            if ok and self.fmt == "json" and self.f is not None:
                self.f.write("[]\n" if self.rows == 0 else "\n]\n")
            if self.fmt == "parquet" and ok and self._pq is None and self.path is not None:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.table({}), self.path)
        finally:
            if self._pq is not None:
                self._pq.close()
            if self.f is not None and self.f is not sys.stdout:
                self.f.close()
            elif self.f is not None:
                self.f.flush()
        if self.path is not None:
            if ok:
                os.replace(self.path, self.final)
            elif self.path.exists():
                self.path.unlink()


__all__ = ["Writer", "output_format", "output_compression", "OUTPUTS", "DATA_EXTRA"]
