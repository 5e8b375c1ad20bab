"""Data files -> rows: CSV / TSV / JSONL (or a .json list of objects) with a header, read as
(columns, [(line, row)], format). Nothing about labels or models.

Every problem a user can fix raises QTinkerError naming the file, the line as an editor shows it
(1-based, header included) and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from qtinker.core.errors import QTinkerError

TEXT_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                   ".json": "jsonl", ".txt": "txt"}


def read_text(path: Path) -> str:
    """The file's text (UTF-8, a BOM dropped), or a QTinkerError saying how to fix the file."""
    if not path.exists():
        raise QTinkerError(f"{path}: no such file; check the path (relative paths start from {Path.cwd()})")
    if path.is_dir():
        raise QTinkerError(f"{path}: is a folder; pass a .csv, .tsv, .jsonl or .txt file")
    if path.suffix.lower() in (".xlsx", ".xls", ".ods", ".parquet", ".arrow", ".zip", ".gz"):
        raise QTinkerError(f"{path}: {path.suffix} files are not read directly; save or export the table as "
                           "CSV (UTF-8) with a header row, e.g. text,label")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1: exc.start].decode("utf-8", errors="replace")) + 1
        raise QTinkerError(
            f"{path}: line {line}, character {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at file offset "
            f"{exc.start}); "
            "save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8 in.csv > out.csv`)") from None
    if not text.strip():
        raise QTinkerError(f"{path}: the file is empty; it needs a header row and at least one example")
    return text


def file_format(path: Path, text: str) -> str:
    """"csv", "tsv", "jsonl" or "txt": from the extension, else from the first line."""
    fmt = TEXT_EXTENSIONS.get(path.suffix.lower())
    if fmt:
        return fmt
    first = text.lstrip()[:1]
    head = text.split("\n", 1)[0]
    return "jsonl" if first == "{" else "tsv" if "\t" in head else "csv"


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    """(columns, [(line, row)], format) of a CSV / TSV / JSONL file; blank lines are skipped."""
    path = Path(path)
    text = read_text(path)
    fmt = file_format(path, text)
    if fmt == "txt":
        raise QTinkerError(f"{path}: a .txt file has no columns or labels; use it as unlabelled text "
                           "(--unlabeled), or give labelled data as .csv / .tsv / .jsonl with a header")
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    # TSV follows the GLUE convention: tabs separate, quotes are ordinary characters. A CSV whose
    # header has semicolons and no commas came from a spreadsheet in a decimal-comma locale.
    header = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = "\t" if fmt == "tsv" else ";" if ";" in header and "," not in header else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    rows, columns, last = [], None, 0
    try:
        for record in reader:
            line, last = last + 1, reader.line_num
            if not record or all(not c.strip() for c in record):
                continue
            if columns is None:
                columns = [c.strip() for c in record]
                _check_header(path, columns)
                continue
            if len(record) < len(columns) and fmt == "csv" and any("\n" in f for f in record):
                raise QTinkerError(f"{path}: line {line}: a double quote opened on this line is not closed, so the "
                                   "rows after it became part of its text; close it (inside quoted text write a quote as \"\")")
            if len(record) != len(columns):
                hint = ("put text containing commas in double quotes" if fmt == "csv"
                        else "remove stray tabs inside the text")
                raise QTinkerError(f"{path}: line {line}: {len(record)} field(s) but the header has {len(columns)} "
                                   f"({', '.join(columns)}); {hint}")
            rows.append((line, dict(zip(columns, record))))
    except csv.Error as exc:
        raise QTinkerError(f"{path}: line {reader.line_num}: {exc}; check the quoting on that line") from None
    if not rows:
        raise QTinkerError(f"{path}: only a header row ({', '.join(columns or [])}); add at least one example below it")
    return columns, rows, fmt


def _check_header(path: Path, columns: list[str]) -> None:
    seen = set()
    for c in columns:
        if not c:
            raise QTinkerError(f"{path}: line 1: the header has an empty column name ({columns}); "
                               "the first row must name every column, e.g. text,label")
        if c.lower() in seen:
            raise QTinkerError(f"{path}: line 1: column '{c}' appears twice in the header; rename one of them")
        seen.add(c.lower())


def _json_objects(path: Path, text: str) -> list[tuple[int, Any]]:
    """[(line, value)] of a JSONL file, or of a .json file holding one list of objects."""
    fix = "each line must be one JSON object such as {\"text\": \"...\", \"label\": \"pos\"}"
    try:
        if not text.lstrip().startswith("["):
            out = []
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    out.append((n, json.loads(line)))
            return out
        decoder, pos, line, seen, out = json.JSONDecoder(), text.index("[") + 1, 1, 0, []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                return out
            line, seen = line + text.count("\n", seen, pos), pos
            value, pos = decoder.raw_decode(text, pos)
            out.append((line, value))
    except json.JSONDecodeError as exc:
        where = n if not text.lstrip().startswith("[") else exc.lineno
        raise QTinkerError(f"{path}: line {where}: invalid JSON ({exc.msg} at column {exc.colno}); {fix}") from None


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    columns: list[str] = []
    rows = []
    for n, item in _json_objects(path, text):
        if not isinstance(item, dict):
            raise QTinkerError(f"{path}: line {n}: expected a JSON object like {{\"text\": ..., \"label\": ...}}, "
                               f"got {type(item).__name__}")
        columns += [key for key in item if key not in columns]
        rows.append((n, {k: "" if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in item.items()}))
    if not rows:
        raise QTinkerError(f"{path}: no JSON objects found; write one object per line")
    return columns, rows, "jsonl"
