"""Readers: a file -> a _Table of records (dicts keyed by column), or one DataError sentence naming the fix.

CSV, TSV, JSON, JSONL, Parquet, TXT and XLSX. Text files are checked for binary content and decoded as UTF-8,
line by line with a Windows-1252 fallback (those rows are remembered and flagged). pandas, pyarrow and openpyxl
are imported lazily.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .names import CONVERSATION_NAMES

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 2**20
# Suffix -> what we call it in messages.
EXTENSIONS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSONL", ".ndjson": "JSONL",
              ".parquet": "Parquet", ".txt": "TXT", ".xlsx": "Excel"}
SUPPORTED_TEXT = "CSV, TSV, JSON, JSONL, Parquet, TXT or XLSX"
DOCUMENTS = (".docx", ".doc", ".pdf", ".odt", ".pages", ".rtf", ".pptx")


@dataclass
class _Table:
    columns: list[str]
    records: list  # dicts keyed by column; other values are rows of the wrong shape (flagged later)
    fallback_rows: set = field(default_factory=set)  # 0-based rows decoded with a legacy encoding
    notes: list = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # per record, its number as the user's file shows it
    blank_rows: list[int] = field(default_factory=list)  # blank rows between the header and the last record
    delimiter: str = ""  # CSV/TSV: the separator read, so a cleaned copy is written the same way
    # How the file's own viewer numbers `rows`: a spreadsheet "row" (header = row 1), a "line", a JSON list "item".
    row_unit: str = "row"

    def __post_init__(self):
        if not self.rows:  # formats without their own numbering: 1-based position
            self.rows = list(range(1, len(self.records) + 1))


def _between(blank: list[int], rows: list[int]) -> list[int]:
    """Blank rows after the header and before the last record: trailing empty lines are not worth a word."""
    last = rows[-1] if rows else 0
    return [b for b in blank if b < last]


_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx file?)"),
    (b"PAR1", "a Parquet file"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls or .doc)"),
    (b"SQLite format 3", "a SQLite database"),
)


def _check_name(path: Path) -> None:
    name = path.name
    if not name or name in (".", ".."):
        raise DataError(f"{str(path)!r} is not a file name: choose a data file.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise DataError(f"The file name {name!r} contains control or invisible characters: rename the file using "
                        f"letters, digits, spaces, dashes and dots, then try again.")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        what = f"Files of type {suffix}" if suffix else f"{path.name} has no file extension, and files without one"
        hint = " (save it as .xlsx)" if suffix == ".xls" else ""
        if suffix in DOCUMENTS:  # a table in a document: the table has to come out of it first
            hint = " (copy its table into a spreadsheet and save that as .xlsx or .csv)"
        raise DataError(f"{what} are not supported{hint}: save the data as {SUPPORTED_TEXT}.")
    return suffix


def _stat(path: Path, max_bytes: int) -> int:
    try:
        if not path.exists():
            raise DataError(f"The file {path} does not exist: check the path, or upload it again.")
        if path.is_dir():
            raise DataError(f"{path} is a folder, not a file: choose one data file inside it.")
        if not path.is_file():  # a FIFO, socket or device: reading it could block forever or never end
            raise DataError(f"{path.name} is not a regular file (a pipe, socket or device): save the data as a file "
                            f"and choose that.")
        size = path.stat().st_size
    except OSError as err:
        raise DataError(f"{path.name} cannot be opened ({err.strerror or err}): check its permissions.") from None
    if size == 0:
        raise DataError(f"{path.name} is empty (0 bytes): upload the file again, it may not have finished saving.")
    if size > max_bytes:
        raise DataError(f"{path.name} is {size / 2**20:,.0f} MB, above the {max_bytes / 2**20:,.0f} MB limit: "
                        f"keep fewer rows, or split it and train on one part.")
    return size


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path.name} cannot be read ({err.strerror or err}): check its permissions.") from None


def _check_binary(raw: bytes, name: str, label: str) -> None:
    """Refuse files that are not text before any parser sees them (a renamed .xlsx, an image, random bytes)."""
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            fix = "upload it as .xlsx" if magic == b"PK\x03\x04" else f"export the data as {label}"
            raise DataError(f"{name} is {what}, not a {label} text file: {fix}.")
    head = raw[:65536]
    # Text never holds NUL bytes; other C0 control bytes are rare (tab, newlines and form feed aside).
    controls = sum(1 for b in head[:8192] if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or controls > max(2, len(head[:8192]) // 20):
        raise DataError(f"{name} holds binary data, not {label} text: export the data as {label} again, or use "
                        f"the file's real extension.")


def _decode_legacy(line: bytes) -> str:
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:  # five bytes are undefined in cp1252; latin-1 maps every byte
        return line.decode("latin-1")


def _decode(raw: bytes, name: str, label: str) -> tuple[str, set[int]]:
    """Bytes -> text and the 1-based line numbers that were not UTF-8 (read as Windows-1252 instead)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16").replace("\r\n", "\n"), set()
        except UnicodeDecodeError:
            raise DataError(f"{name} starts like UTF-16 text but is damaged: save it again as UTF-8.") from None
    _check_binary(raw, name, label)
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8"), set()
    except UnicodeDecodeError:
        pass
    # Decode line by line so that only the lines that are not UTF-8 are flagged.
    lines, bad = [], set()
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad.add(number)
            lines.append(_decode_legacy(line))
    return "\n".join(lines), bad


def _sniff_delimiter(text: str) -> str:
    """The most frequent of , ; tab | in the first line (outside quotes): Excel in many locales writes ';'."""
    first = text.lstrip("\n").split("\n", 1)[0]
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _clean_header(fields: list[str]) -> list[str]:
    header, seen = [], Counter()
    for i, name in enumerate(fields):
        name = name.strip() or f"column_{i + 1}"
        seen[name] += 1
        header.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return header


def _read_csv(text: str, bad_lines: set[int], name: str, delimiter: str | None) -> _Table:
    delimiter = delimiter or _sniff_delimiter(text)
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records: list[dict] = []
    fallback: set[int] = set()
    ragged: list[tuple[int, int]] = []  # (line, fields)
    rows: list[int] = []
    blank: list[int] = []
    last_line = 0
    sheet_row = 0  # the row a spreadsheet shows: one per CSV record, blank ones included
    try:
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            sheet_row += 1
            if not any(f.strip() for f in fields):
                if header is not None:
                    blank.append(sheet_row)
                continue  # blank line, or a line of only separators
            if header is None:
                header = _clean_header(fields)
                width = len(header)
                continue
            if len(fields) != width:
                if len(fields) > width and not any(f.strip() for f in fields[width:]):
                    fields = fields[:width]  # trailing empty cells, as spreadsheets often export
                else:
                    ragged.append((first_line, len(fields)))
                    continue
            if bad_lines and any(n in bad_lines for n in range(first_line, last_line + 1)):
                fallback.add(len(records))
            records.append(dict(zip(header, fields)))
            rows.append(sheet_row)
    except csv.Error as err:
        raise DataError(f"{name} could not be read as {'TSV' if delimiter == chr(9) else 'CSV'} near line "
                        f"{reader.line_num} ({err}): check the quotes on that line.") from None
    if header is None:
        raise DataError(f"{name} holds no data, only blank lines: add a header row and at least one example.")
    if ragged:
        line, count = ragged[0]
        more = f" (and {len(ragged) - 1} more lines)" if len(ragged) > 1 else ""
        sep = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}[delimiter]
        raise DataError(f"Line {line} of {name} has {count} fields but the header has {width}{more}: put quotes "
                        f"around text that contains a {sep} or a quote, or fix that line.")
    if not records:
        raise DataError(f"{name} has a header row ({_names(header)}) but no data rows: add at least one "
                        f"example below the header.")
    return _Table(header, records, fallback, rows=rows, blank_rows=_between(blank, rows), delimiter=delimiter)


def _read_txt(text: str, bad_lines: set[int], name: str) -> _Table:
    """One example per blank-line-separated paragraph, or per line when there are no blank lines."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if not filled:
        raise DataError(f"{name} holds only blank lines: add some text, one example per paragraph.")
    by_paragraph = any(not lines[i].strip() for i in range(filled[0], filled[-1]))
    records, fallback, rows = [], set(), []
    if not by_paragraph:
        for i in filled:
            if i + 1 in bad_lines:
                fallback.add(len(records))
            records.append({"text": lines[i].strip()})
            rows.append(i + 1)
        return _Table(["text"], records, fallback, rows=rows, row_unit="line")
    start = None
    for i, line in enumerate(lines + [""]):
        if line.strip():
            start = i if start is None else start
        elif start is not None:
            if any(n + 1 in bad_lines for n in range(start, i)):
                fallback.add(len(records))
            records.append({"text": "\n".join(lines[start:i]).strip()})
            rows.append(start + 1)
            start = None
    return _Table(["text"], records, fallback, rows=rows, row_unit="line")


def _json_error(err: json.JSONDecodeError, text: str, name: str) -> DataError:
    truncated = not text[err.pos:].strip() or err.msg.startswith("Unterminated string")
    if truncated:
        return DataError(f"{name} ends in the middle of the JSON (line {err.lineno}): the file looks cut off, "
                         f"download or export it again.")
    return DataError(f"{name} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): fix that "
                     f"spot or export the file again.")


def _read_jsonl(text: str, bad_lines: set[int], name: str) -> _Table:
    records, fallback, rows, blank = [], set(), [], []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
            blank.append(number)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"Line {number} of {name} is not valid JSON ({err.msg} at column {err.colno}): fix or "
                            f"delete that line.") from None
        except RecursionError:
            raise DataError(f"Line {number} of {name} is nested too deeply to read: fix or delete that "
                            f"line.") from None
        if number in bad_lines:
            fallback.add(len(records))
        records.append(value)
        rows.append(number)
    if not records:
        raise DataError(f"{name} holds only blank lines: add one JSON object per line.")
    table = _table_from_values(records, name, fallback)
    table.rows, table.blank_rows = rows, _between([b for b in blank if b > rows[0]], rows)
    table.row_unit = "line"
    return table


def _is_turn_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, dict) and ({"role", "content"} <= t.keys() or {"from", "value"} <= t.keys()) for t in value)


def _read_json(text: str, bad_lines: set[int], name: str) -> _Table:
    if not text.strip():
        raise DataError(f"{name} holds only whitespace: add a JSON list of examples.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several JSON values one after the other: this is JSON Lines
            table = _read_jsonl(text, bad_lines, name)
            table.notes.append("The file holds one JSON value per line (JSON Lines), so it was read as JSONL.")
            return table
        raise _json_error(err, text, name) from None
    except RecursionError:
        raise DataError(f"{name} is nested too deeply to read: use a flat list of examples.") from None
    notes = []
    if isinstance(data, dict):
        if not data:
            raise DataError(f"{name} holds an empty JSON object: put the examples in a list, "
                            f"[{{\"prompt\": ..., \"response\": ...}}, ...].")
        conversation = [k for k in data if k.lower() in CONVERSATION_NAMES and _is_turn_list(data[k])]
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        record_lists = {k: v for k, v in lists.items() if v and all(isinstance(r, dict) for r in v)}
        if conversation:
            records = [data]  # one conversation on its own
        elif len(record_lists) == 1 and not (len(lists) == len(data) and len(data) > 1):
            key = next(iter(record_lists))
            records = record_lists[key]
            notes.append(f"Examples were read from the {key!r} list in the JSON object.")
        elif lists and len(lists) == len(data):  # an object of columns: {"prompt": [...], "response": [...]}
            lengths = {k: len(v) for k, v in data.items()}
            if len(set(lengths.values())) > 1:
                (k1, n1), (k2, n2) = sorted(lengths.items(), key=lambda kv: kv[1])[::len(lengths) - 1]
                raise DataError(f"The lists in {name} have different lengths ({k1!r} has {n1}, {k2!r} has {n2}): "
                                f"each column list needs one entry per example.")
            keys = list(data)
            records = [dict(zip(keys, values)) for values in zip(*data.values())]
            notes.append("The JSON object of lists was read as columns.")
        else:
            raise DataError(f"{name} is a JSON object Studio cannot read as examples: use a list of objects, "
                            f"[{{\"prompt\": ..., \"response\": ...}}, ...], or an object of equal-length lists.")
    elif isinstance(data, list):
        records = data
    else:
        raise DataError(f"{name} holds a single JSON {_type_name(data)}, not a list of examples: use "
                        f"[{{\"prompt\": ..., \"response\": ...}}, ...].")
    if not records:
        raise DataError(f"{name} holds an empty list: add at least one example.")
    table = _table_from_values(records, name, set())
    table.row_unit = "item"
    table.notes += notes
    if bad_lines:
        table.notes.append("Some lines of the file are not UTF-8 and were read as Windows-1252: check accented "
                           "characters in the preview.")
    return table


def _names(columns: list, limit: int = 6) -> str:
    """Column names for a message: one line each, shortened, at most `limit` of them."""
    shown = [re.sub(r"\s+", " ", str(c)).strip()[:40] or "(blank)" for c in columns[:limit]]
    return ", ".join(shown) + (", ..." if len(columns) > limit else "")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false value", int: "number", float: "number", str: "string", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


def _table_from_values(records: list, name: str, fallback: set[int]) -> _Table:
    """Columns from a list of JSON values: dicts give columns, a list of strings is plain text."""
    if all(isinstance(r, str) for r in records):
        return _Table(["text"], [{"text": r} for r in records], fallback)
    columns: dict[str, None] = {}
    any_dict = False
    for r in records:
        if isinstance(r, dict):
            any_dict = True
            for key in r:
                columns.setdefault(str(key), None)
    if not any_dict:
        kinds = sorted({_type_name(r) for r in records})
        raise DataError(f"{name} holds a list of {' and '.join(kinds)} values, not examples: each example should "
                        f"be an object such as {{\"prompt\": ..., \"response\": ...}}.")
    if not columns:
        raise DataError(f"{name} holds only empty objects: each example needs fields, such as "
                        f"{{\"prompt\": ..., \"response\": ...}}.")
    return _Table(list(columns), records, fallback)


def _read_parquet(path: Path, name: str) -> _Table:
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"PAR1":
        raise DataError(f"{name} is not a Parquet file (it does not start with the Parquet marker): export it "
                        f"again as Parquet, or upload it with its real extension.")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        log.info("parquet read failed for %s: %s", path, err)
        raise DataError(f"{name} is a damaged or unsupported Parquet file: export it again, or upload the data as "
                        f"CSV or JSONL.") from None
    if table.num_rows == 0:
        raise DataError(f"{name} has columns ({_names(table.column_names)}) but no rows: add at least one "
                        f"example.")
    return _Table([str(c) for c in table.column_names], table.to_pylist())


def _excel_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 12 as 12.0
    return str(value)  # other numbers, dates, times


def _read_excel(path: Path, name: str) -> _Table:
    """The first sheet, with each record's row number as Excel shows it (openpyxl, not pandas, which renumbers)."""
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        what = "an old .xls workbook" if head == b"\xd0\xcf\x11\xe0" else "not an .xlsx workbook"
        raise DataError(f"{name} is {what}: open it in Excel or LibreOffice and save it as .xlsx or CSV.")
    import zipfile

    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet_names = book.sheetnames
            if not sheet_names:
                raise DataError(f"{name} has no sheets: add the examples to the first sheet.")
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # some writers store a wrong size; read every row there is
            cells = [tuple(_excel_cell(v) for v in row) for row in sheet.iter_rows(min_row=1, values_only=True)]
        finally:
            book.close()
    except DataError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError, IndexError) as err:
        log.info("excel read failed for %s: %s", path, err)
        raise DataError(f"{name} is a damaged or unsupported Excel file: save it again as .xlsx, or export the "
                        f"sheet as CSV.") from None
    notes = [f"Read the first sheet, {sheet_names[0]!r}, of {len(sheet_names)}."] if len(sheet_names) > 1 else []
    filled = [i for i, row in enumerate(cells) if any(v is not None for v in row)]
    if not filled:
        raise DataError(f"The first sheet of {name} is empty: put a header row and the examples on it.")
    width = max(max((j + 1 for j, v in enumerate(cells[i]) if v is not None), default=0) for i in filled)
    header_index = filled[0]
    header_cells = list(cells[header_index][:width]) + [None] * (width - len(cells[header_index]))
    columns = _clean_header(["" if v is None else str(v) for v in header_cells])
    data_rows = [i for i in filled if i > header_index]
    if not data_rows:
        raise DataError(f"{name} has a header row ({_names(columns)}) but no data rows: add at least one example "
                        f"below the header.")
    records = [{c: (cells[i][j] if j < len(cells[i]) else None) for j, c in enumerate(columns)} for i in data_rows]
    rows = [i + 1 for i in data_rows]  # openpyxl yields from row 1, missing rows filled in
    filled_set = set(filled)
    blank = [i + 1 for i in range(header_index + 1, data_rows[-1]) if i not in filled_set]
    return _Table(columns, records, notes=notes, rows=rows, blank_rows=blank)


def _read_table(path: Path, max_bytes: int) -> _Table:
    _stat(path, max_bytes)
    suffix = _suffix(path)
    name, label = path.name, EXTENSIONS[suffix]
    if suffix == ".parquet":
        return _read_parquet(path, name)
    if suffix == ".xlsx":
        return _read_excel(path, name)
    text, bad_lines = _decode(_read_bytes(path), name, label)
    if not text.strip():
        what = {".txt": "some text, one example per paragraph", ".json": "a JSON list of examples",
                ".jsonl": "one JSON object per line", ".ndjson": "one JSON object per line"}
        raise DataError(f"{name} holds only whitespace: add {what.get(suffix, 'a header row and some examples')}.")
    if suffix in (".csv", ".tsv"):
        table = _read_csv(text, bad_lines, name, "\t" if suffix == ".tsv" else None)
    elif suffix == ".txt":
        table = _read_txt(text, bad_lines, name)
    elif suffix == ".json":
        table = _read_json(text, bad_lines, name)
    else:
        table = _read_jsonl(text, bad_lines, name)
    if bad_lines:
        table.notes.append(f"{len(bad_lines)} line(s) are not UTF-8 and were read as Windows-1252: save the file as "
                           f"UTF-8 to be sure accented characters are right.")
    return table

