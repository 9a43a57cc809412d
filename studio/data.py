"""Data: read a file -> detect its format -> normalise every row to one form -> validate per row.

One internal form for every format: an example is {"messages": [{"role": "system"|"user"|"assistant",
"content": str}, ...]} or {"text": str}. Readers (CSV, TSV, JSON, JSONL, Parquet, TXT, XLSX) turn a file into
records (dicts keyed by column), `detect_format` names the shape, the normaliser builds examples and lists
per-row problems with 1-based row numbers. Anything wrong with the file as a whole is a DataError whose
message is one sentence naming the problem and the fix.

`encode_example` turns an example into input_ids/labels with the model's chat template, masking everything
but the assistant answers; `render_segments` shows the same split as text for the preview.

Nothing here imports gradio; pandas, pyarrow and openpyxl are imported lazily.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import dataclasses
import io
import json
import logging
import math
import random
import re
import shutil
import statistics
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError, UserError
from .logs import ArgumentParser, tell_user

if TYPE_CHECKING:
    from .config import RunConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 2**20
MAX_EXAMPLE_CHARS = 100_000  # longer rows are flagged: even a 32k-token context would cut most of them
PREVIEW_ROWS = 20  # rows kept as read, for the table in the Data tab
DETECT_SAMPLE = 200  # rows looked at to recognise a conversation column
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"

# Suffix -> what we call it in messages.
EXTENSIONS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSONL", ".ndjson": "JSONL",
              ".parquet": "Parquet", ".txt": "TXT", ".xlsx": "Excel"}
SUPPORTED_TEXT = "CSV, TSV, JSON, JSONL, Parquet, TXT or XLSX"

FORMAT_LABELS = {
    "alpaca": "Instruction / input / output (Alpaca)",
    "prompt_completion": "Prompt / completion",
    "question_answer": "Question / answer",
    "pairs": "Prompt and response columns",
    "messages": "Chat messages (OpenAI: role / content)",
    "sharegpt": "ShareGPT conversations (from / value)",
    "text": "Plain text",
    "manual": "Columns mapped by hand",
    "unknown": "Not recognised: map the columns by hand",
}
PAIR_FORMATS = ("alpaca", "prompt_completion", "question_answer", "pairs", "manual")
CONVERSATION_FORMATS = ("messages", "sharegpt")

# Problems that make a row unusable for training (good_examples() leaves them out). The others are warnings:
# "encoding" (read with a fallback) and "duplicate" (a repeat may be deliberate upsampling; "Drop bad rows" removes it).
UNUSABLE = frozenset({"empty_prompt", "empty_response", "empty_text", "missing_column", "wrong_type",
                      "bad_message", "too_long"})
WARNINGS = frozenset({"encoding", "duplicate"})

# Column names we recognise, compared after lower-casing and turning spaces/dashes into underscores.
# Order matters: the first name present wins.
PROMPT_NAMES = ("prompt", "question", "query", "instruction", "input", "user", "human", "request", "message",
                "source", "src", "q", "context")
RESPONSE_NAMES = ("completion", "response", "answer", "output", "assistant", "gpt", "bot", "reply", "target",
                  "tgt", "chosen", "a")
SYSTEM_NAMES = ("system", "system_prompt", "system_message", "persona")
TEXT_NAMES = ("text", "content", "document", "body", "passage", "sentence", "paragraph")
CONVERSATION_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns")
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "customer": "user",
                "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                "chatgpt": "assistant", "ai": "assistant"}
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")

# Set by tests: unexpected exceptions in the readers propagate instead of becoming a DataError.
STRICT = False


# --- public data classes ---------------------------------------------------------------------
@dataclass
class ColumnMapping:
    """Which column plays which part; "" means unused (or: detect it). `prompt` may join several columns
    with "+" (e.g. "instruction+input"), which are put one after the other with a blank line between."""

    prompt: str = ""
    response: str = ""
    system: str = ""
    text: str = ""

    def is_set(self) -> bool:
        return any((self.prompt, self.response, self.system, self.text))


@dataclass
class RowProblem:
    row: int  # 1-based, the first data row is 1 (as in the preview table)
    kind: str  # one of UNUSABLE or WARNINGS
    message: str


@dataclass
class DataReport:
    path: str
    format: str
    columns: list[str]
    n_rows: int
    examples: list  # list[dict | None]: normalised, same order as rows; None where the row is unusable
    problems: list[RowProblem]
    mapping: ColumnMapping
    preview: Any  # pandas.DataFrame of the first rows as read (cells as display strings)
    notes: list[str] = field(default_factory=list)  # file-level remarks (encoding, sheet, JSON shape)
    message: str = ""  # why no row could be used (format not recognised), else ""

    @property
    def format_label(self) -> str:
        return FORMAT_LABELS.get(self.format, self.format)

    def good_examples(self) -> list[dict]:
        return [e for e in self.examples if e is not None]

    def bad_rows(self, include_duplicates: bool = True) -> list[int]:
        """1-based rows that "Drop bad rows" removes: unusable ones, and repeats unless told otherwise."""
        kinds = UNUSABLE | ({"duplicate"} if include_duplicates else set())
        return sorted({p.row for p in self.problems if p.kind in kinds})

    def summary(self) -> str:
        good = sum(e is not None for e in self.examples)
        text = f"{self.format_label}: {self.n_rows:,} rows, {good:,} usable"
        if good < self.n_rows:
            text += f", {self.n_rows - good:,} with problems"
        return text + "."


# --- reading ---------------------------------------------------------------------------------
@dataclass
class _Table:
    columns: list[str]
    records: list  # dicts keyed by column; other values are rows of the wrong shape (flagged later)
    fallback_rows: set = field(default_factory=set)  # 0-based rows decoded with a legacy encoding
    notes: list = field(default_factory=list)


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
        raise DataError(f"{what} are not supported{hint}: save the data as {SUPPORTED_TEXT}.")
    return suffix


def _stat(path: Path, max_bytes: int) -> int:
    try:
        if not path.exists():
            raise DataError(f"The file {path} does not exist: check the path, or upload it again.")
        if not path.is_file():
            raise DataError(f"{path} is a folder, not a file: choose one data file inside it.")
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
    last_line = 0
    try:
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not any(f.strip() for f in fields):
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
    return _Table(header, records, fallback)


def _read_txt(text: str, bad_lines: set[int], name: str) -> _Table:
    """One example per blank-line-separated paragraph, or per line when there are no blank lines."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if not filled:
        raise DataError(f"{name} holds only blank lines: add some text, one example per paragraph.")
    by_paragraph = any(not lines[i].strip() for i in range(filled[0], filled[-1]))
    records, fallback = [], set()
    if not by_paragraph:
        for i in filled:
            if i + 1 in bad_lines:
                fallback.add(len(records))
            records.append({"text": lines[i].strip()})
        return _Table(["text"], records, fallback)
    start = None
    for i, line in enumerate(lines + [""]):
        if line.strip():
            start = i if start is None else start
        elif start is not None:
            if any(n + 1 in bad_lines for n in range(start, i)):
                fallback.add(len(records))
            records.append({"text": "\n".join(lines[start:i]).strip()})
            start = None
    return _Table(["text"], records, fallback)


def _json_error(err: json.JSONDecodeError, text: str, name: str) -> DataError:
    truncated = not text[err.pos:].strip() or err.msg.startswith("Unterminated string")
    if truncated:
        return DataError(f"{name} ends in the middle of the JSON (line {err.lineno}): the file looks cut off, "
                         f"download or export it again.")
    return DataError(f"{name} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): fix that "
                     f"spot or export the file again.")


def _read_jsonl(text: str, bad_lines: set[int], name: str) -> _Table:
    records, fallback = [], set()
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
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
    if not records:
        raise DataError(f"{name} holds only blank lines: add one JSON object per line.")
    return _table_from_values(records, name, fallback)


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
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 12 as 12.0
    return str(value)  # other numbers, dates, times


def _read_excel(path: Path, name: str) -> _Table:
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        what = "an old .xls workbook" if head == b"\xd0\xcf\x11\xe0" else "not an .xlsx workbook"
        raise DataError(f"{name} is {what}: open it in Excel or LibreOffice and save it as .xlsx or CSV.")
    import zipfile

    import pandas as pd

    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=object, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as err:
        log.info("excel read failed for %s: %s", path, err)
        raise DataError(f"{name} is a damaged or unsupported Excel file: save it again as .xlsx, or export the "
                        f"sheet as CSV.") from None
    if not sheets:
        raise DataError(f"{name} has no sheets: add the examples to the first sheet.")
    sheet_name, frame = next(iter(sheets.items()))
    notes = [f"Read the first sheet, {sheet_name!r}, of {len(sheets)}."] if len(sheets) > 1 else []
    frame = frame.dropna(how="all")
    if len(frame.columns) == 0:
        raise DataError(f"The first sheet of {name} is empty: put a header row and the examples on it.")
    if len(frame) == 0:
        raise DataError(f"{name} has a header row ({_names(list(frame.columns))}) but no data rows: add "
                        f"at least one example below the header.")
    columns = _clean_header([str(c) if not str(c).startswith("Unnamed: ") else "" for c in frame.columns])
    records = [{c: _excel_cell(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False)]
    return _Table(columns, records, notes=notes)


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


# --- format detection ------------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _first_present(names: tuple[str, ...], by_norm: dict[str, str], exclude: tuple[str, ...] = ()) -> str:
    for n in names:
        if n in by_norm and by_norm[n] not in exclude:
            return by_norm[n]
    return ""


def _conversation_style(records: list, column: str) -> str:
    """'messages' (role/content), 'sharegpt' (from/value) or '' when the column holds no turn lists."""
    for r in records[:DETECT_SAMPLE]:
        value = r.get(column) if isinstance(r, dict) else None
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            keys = value[0].keys()
            if "from" in keys or "value" in keys:
                return "sharegpt"
            if "role" in keys or "content" in keys:
                return "messages"
    return ""


def detect_format(columns: list[str], records: list) -> tuple[str, ColumnMapping, str]:
    """Name the shape of the data: (format, mapping, conversation column or "")."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    system = _first_present(SYSTEM_NAMES, by_norm)
    for n in CONVERSATION_NAMES:
        if n in by_norm:
            style = _conversation_style(records, by_norm[n])
            if style:
                return style, ColumnMapping(system=system), by_norm[n]
    if "instruction" in by_norm:
        response = _first_present(("output", "response", "answer", "completion"), by_norm)
        if response:
            prompt = by_norm["instruction"]
            extra = _first_present(("input", "context"), by_norm)
            return "alpaca", ColumnMapping(prompt=f"{prompt}+{extra}" if extra else prompt, response=response,
                                           system=system), ""
    prompt = _first_present(PROMPT_NAMES, by_norm)
    response = _first_present(RESPONSE_NAMES, by_norm, exclude=(prompt,))
    if prompt and response:
        context = by_norm.get("context", "")
        if context and context != prompt:
            prompt = f"{prompt}+{context}"
        pair = (_norm(prompt.split("+")[0]), _norm(response))
        fmt = {("prompt", "completion"): "prompt_completion", ("question", "answer"): "question_answer"}.get(pair,
                                                                                                          "pairs")
        return fmt, ColumnMapping(prompt=prompt, response=response, system=system), ""
    text = _first_present(TEXT_NAMES, by_norm)
    if not text and len(columns) == 1:
        sample = [r.get(columns[0]) for r in records[:DETECT_SAMPLE] if isinstance(r, dict)]
        if sample and all(isinstance(v, str) or v is None for v in sample):
            text = columns[0]
    if text:
        return "text", ColumnMapping(text=text), ""
    return "unknown", ColumnMapping(system=system), ""


def _columns_of(spec: str, columns: list[str], name: str, part: str) -> list[str]:
    """A mapping entry -> the columns it names ("a+b" joins several); checks they exist."""
    if spec in columns:
        return [spec]
    wanted = [s.strip() for s in spec.split("+") if s.strip()] if "+" in spec else [spec]
    lower = {c.lower(): c for c in columns}
    found = []
    for w in wanted:
        if w in columns:
            found.append(w)
        elif w.lower() in lower:
            found.append(lower[w.lower()])
        else:
            shown = _names(columns, 12)
            raise DataError(f"The {part} column {w!r} is not in {name}; its columns are: {shown}.")
    return found


def _apply_mapping(manual: ColumnMapping, fmt: str, detected: ColumnMapping, name: str) -> tuple[str, ColumnMapping]:
    m = ColumnMapping(**{k: (v or "").strip() for k, v in dataclasses.asdict(manual).items()})
    if m.text:
        if m.prompt or m.response:
            raise DataError("Choose either a text column or prompt and response columns, not both: clear one of "
                            "them in the column mapping.")
        return ("text" if fmt == "text" and m.text == detected.text else "manual"), ColumnMapping(text=m.text)
    if m.prompt or m.response:
        pair_detected = fmt in PAIR_FORMATS
        prompt = m.prompt or (detected.prompt if pair_detected else "")
        response = m.response or (detected.response if pair_detected else "")
        if not prompt or not response:
            missing = "response" if prompt else "prompt"
            raise DataError(f"Choose a {missing} column too: a prompt column and a response column are both needed.")
        result = ColumnMapping(prompt=prompt, response=response, system=m.system or detected.system)
        return (fmt if pair_detected and result == detected else "manual"), result
    # Only the system column was chosen: keep what was detected, with that system column.
    return fmt, dataclasses.replace(detected, system=m.system)


# --- normalising -----------------------------------------------------------------------------
class _Bad(Exception):
    """A row problem found while normalising one row."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def _text_of(value: Any, what: str) -> str:
    """A cell as text: None -> "", numbers -> their digits, lists/objects -> a wrong_type problem."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: [{"type": "text", "text": "..."}]
        parts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise _Bad("wrong_type", f"The {what} is a {_type_name(value)}, not text: make it a plain string.")


def _cell(record: dict, column: str, what: str) -> str:
    if column not in record:
        raise _Bad("missing_column", f"The row has no {column!r} field: add it or drop the row.")
    return _text_of(record[column], what).strip()


def _pair_example(record: dict, mapping: ColumnMapping, columns_of) -> dict:
    prompt_cols = columns_of(mapping.prompt)
    parts = []
    for i, c in enumerate(prompt_cols):
        if i > 0 and c not in record:
            continue  # extra prompt columns (an Alpaca 'input') are optional
        value = _cell(record, c, f"{c!r} value")
        if value:
            parts.append(value)
    response_col = columns_of(mapping.response)[0]
    response = _cell(record, response_col, f"{response_col!r} value")
    if not parts:
        raise _Bad("empty_prompt", f"The prompt ({' + '.join(prompt_cols)}) is empty: write it or drop the row.")
    if not response:
        raise _Bad("empty_response", f"The response ({response_col!r}) is empty: write the answer or drop the row.")
    messages = []
    system_col = columns_of(mapping.system)[0] if mapping.system else ""
    if system_col in record:
        system = _cell(record, system_col, "system prompt")
        if system:
            messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": "\n\n".join(parts)}, {"role": "assistant", "content": response}]
    return {"messages": messages}


def _conversation_example(record: dict, column: str, system_column: str) -> dict:
    if column not in record:
        raise _Bad("missing_column", f"The row has no {column!r} field: add the conversation or drop the row.")
    value = record[column]
    if isinstance(value, str):  # a CSV / Parquet cell holding the turns as JSON text
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise _Bad("wrong_type", f"The {column!r} cell is text, not a JSON list of turns: fix or drop the "
                                     f"row.") from None
    if not isinstance(value, list):
        raise _Bad("wrong_type", f"{column!r} is a {_type_name(value)}, not a list of turns: fix or drop the row.")
    messages = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise _Bad("bad_message", f"Turn {number} is a {_type_name(turn)}, not an object with a role and "
                                      f"content: fix or drop the row.")
        role = turn.get("role", turn.get("from"))
        mapped = ROLE_ALIASES.get(role.strip().lower()) if isinstance(role, str) else None
        if mapped is None:
            raise _Bad("bad_message", f"Turn {number} has the role {role!r}; use system, user or assistant "
                                      f"(or human / gpt).")
        content = turn.get("content", turn.get("value", turn.get("text")))
        messages.append({"role": mapped, "content": _text_of(content, f"content of turn {number}").strip()})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # trailing questions have no answer to learn from
    if not any(m["role"] == "assistant" for m in messages):
        raise _Bad("empty_response", "The conversation has no assistant answer: add one or drop the row.")
    if not any(m["role"] == "user" for m in messages):
        raise _Bad("empty_prompt", "The conversation has no user turn: add the question or drop the row.")
    for number, m in enumerate(messages, 1):
        if m["role"] == "assistant" and not m["content"]:
            raise _Bad("empty_response", f"Turn {number}, an assistant answer, is empty: write it or drop the row.")
    if system_column and messages[0]["role"] != "system" and system_column in record:
        system = _text_of(record[system_column], "system prompt").strip()
        if system:
            messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def _example_key(example: dict) -> Any:
    if "text" in example:
        return example["text"]
    return tuple((m["role"], m["content"]) for m in example["messages"])


def _example_chars(example: dict) -> int:
    if "text" in example:
        return len(example["text"])
    return sum(len(m["content"]) for m in example["messages"])


def _normalise(table: _Table, fmt: str, mapping: ColumnMapping, conversation: str,
               name: str) -> tuple[list, list[RowProblem]]:
    examples: list = []
    problems: list[RowProblem] = []
    if fmt == "unknown":
        return [None] * len(table.records), problems
    cache: dict[str, list[str]] = {}

    def columns_of(spec: str) -> list[str]:
        if spec not in cache:
            cache[spec] = _columns_of(spec, table.columns, name, "mapped")
        return cache[spec]

    if mapping.text:
        columns_of(mapping.text)
    elif fmt not in CONVERSATION_FORMATS:
        columns_of(mapping.prompt), columns_of(mapping.response)
    system_column = columns_of(mapping.system)[0] if mapping.system else ""
    seen: dict[Any, int] = {}
    for index, record in enumerate(table.records):
        row = index + 1
        if index in table.fallback_rows:
            problems.append(RowProblem(row, "encoding", "The row is not UTF-8 and was read as Windows-1252: check its "
                                                        "accented characters."))
        try:
            if not isinstance(record, dict):
                raise _Bad("wrong_type", f"The row is a {_type_name(record)}, not an object with columns: fix or "
                                         f"drop it.")
            if mapping.text:
                column = columns_of(mapping.text)[0]
                text = _cell(record, column, "text")
                if not text:
                    raise _Bad("empty_text", "The text is empty: write it or drop the row.")
                example = {"text": text}
            elif fmt in CONVERSATION_FORMATS:
                example = _conversation_example(record, conversation, system_column)
            else:
                example = _pair_example(record, mapping, columns_of)
            chars = _example_chars(example)
            if chars > MAX_EXAMPLE_CHARS:
                raise _Bad("too_long", f"The row is {chars:,} characters long, above the {MAX_EXAMPLE_CHARS:,} "
                                       f"limit: shorten it or drop the row.")
            key = _example_key(example)
            if key in seen:
                problems.append(RowProblem(row, "duplicate", f"The row repeats row {seen[key]}: drop it unless the "
                                                             f"repeat is deliberate."))
            else:
                seen[key] = row
        except _Bad as bad:
            problems.append(RowProblem(row, bad.kind, bad.message))
            example = None
        examples.append(example)
    return examples, problems


def _display(value: Any, limit: int = 2000) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


def _preview_frame(table: _Table):
    import pandas as pd

    rows = table.records[:PREVIEW_ROWS]
    data = {c: [_display(r.get(c)) if isinstance(r, dict) else "" for r in rows] for c in table.columns}
    return pd.DataFrame(data, columns=table.columns, index=range(len(rows)), dtype=object)


def load_data(path, mapping: ColumnMapping | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> DataReport:
    """Read, detect, normalise and check one data file. Raises DataError for a file that cannot be used at all."""
    path = Path(path)
    try:
        return _load_data(path, mapping, max_bytes)
    except UserError as err:
        if "\n" in str(err):  # a file's own text (a column name) must not break the one-line message
            raise type(err)(" ".join(str(err).split())) from None
        raise
    except RecursionError:
        raise DataError(f"{path.name} is nested too deeply to read: use a flat list of examples.") from None
    except MemoryError:
        raise DataError(f"{path.name} is too large for this machine's memory: keep fewer rows.") from None
    except Exception as err:
        if STRICT:
            raise
        log.exception("reading %s failed", path)
        raise DataError(f"{path.name} could not be read ({type(err).__name__}): check that it is a valid "
                        f"{EXTENSIONS.get(path.suffix.lower(), 'data')} file, or save it again as CSV or "
                        f"JSONL.") from err


def _load_data(path: Path, mapping: ColumnMapping | None, max_bytes: int) -> DataReport:
    _check_name(path)
    table = _read_table(path, max_bytes)
    fmt, detected, conversation = detect_format(table.columns, table.records)
    used = detected
    if mapping is not None and mapping.is_set():
        for part in ("prompt", "response", "system", "text"):
            spec = (getattr(mapping, part) or "").strip()
            if spec:
                _columns_of(spec, table.columns, path.name, part)
        fmt, used = _apply_mapping(mapping, fmt, detected, path.name)
    examples, problems = _normalise(table, fmt, used, conversation, path.name)
    message = ""
    if fmt == "unknown":
        message = (f"Studio could not tell which column of {path.name} is the prompt and which is the answer: "
                   f"choose them in the column mapping.")
    return DataReport(path=str(path), format=fmt, columns=list(table.columns), n_rows=len(table.records),
                      examples=examples, problems=problems, mapping=used, preview=_preview_frame(table),
                      notes=table.notes, message=message)


# --- splitting, config, cleaned copies, uploads ----------------------------------------------
def split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """(train, validation) counts for n examples. With a fraction above 0 and at least 2 examples,
    each side gets at least one."""
    if not 0 <= fraction < 1:
        raise DataError(f"The validation fraction is {fraction}: use a number from 0 to 0.5.")
    n_val = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    return n - n_val, n_val


def split_examples(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded random share held out (see split_sizes); both keep the original order."""
    n = len(examples)
    n_val = split_sizes(n, fraction)[1]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in held]
    val = [e for i, e in enumerate(examples) if i in held]
    return train, val


def mapping_from_config(config: RunConfig) -> ColumnMapping | None:
    mapping = ColumnMapping(prompt=config.prompt_column, response=config.response_column,
                            system=config.system_column, text=config.text_column)
    return mapping if mapping.is_set() else None


def _usable(report: DataReport, role: str) -> list[dict]:
    good = report.good_examples()
    if good:
        return good
    name = Path(report.path).name
    if report.message:
        raise DataError(report.message)
    kinds = Counter(p.kind for p in report.problems if p.kind in UNUSABLE)
    common = kinds.most_common(1)[0][0].replace("_", " ") if kinds else "unknown"
    raise DataError(f"No usable rows in the {role} file {name}: all {report.n_rows} rows have problems (most often: "
                    f"{common}); fix them, or check the column mapping in the Data tab.")


def load_for_config(config: RunConfig) -> tuple[list[dict], list[dict]]:
    """Train and validation examples for a run, bad rows dropped."""
    if not config.data_path:
        raise DataError("No training data: upload a file in the Data tab.")
    mapping = mapping_from_config(config)
    train = _usable(load_data(config.data_path, mapping), "training")
    if config.validation_path:
        return train, _usable(load_data(config.validation_path, mapping), "validation")
    return split_examples(train, config.validation_fraction, config.seed)


def write_clean_copy(report: DataReport, folder, drop_duplicates: bool = True) -> Path:
    """The usable rows (without repeats) as normalised JSONL in `folder`; the Data tab points data_path at it."""
    repeats = {p.row for p in report.problems if p.kind == "duplicate"} if drop_duplicates else set()
    good = [e for row, e in enumerate(report.examples, 1) if e is not None and row not in repeats]
    if not good:
        raise DataError(report.message or f"No usable rows in {Path(report.path).name}: there is nothing to keep.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(Path(report.path).stem).removesuffix(".clean")
    target = folder / f"{stem}.clean.jsonl"
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for example in good:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


def safe_filename(name: str, default: str = "data") -> str:
    """A file name safe to create anywhere: no folders, no control characters, no leading dots."""
    name = unicodedata.normalize("NFKC", str(name)).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if ch.isalnum() or ch in "._- ()" else "_" for ch in name)
    name = re.sub(r"\s+", " ", name).strip(" .") or default
    # Cut a long name in its stem: the extension is how the file is read later (".csv" cut to ".c" is unreadable).
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and len(suffix) <= 10:
        return f"{stem[:120 - len(suffix) - 1].rstrip(' .') or default}.{suffix}"
    return name[:120]


def save_upload(source, uploads_dir) -> Path:
    """Copy an uploaded (temporary) file into uploads_dir under a sanitised name; never outside it."""
    source = Path(source)
    folder = Path(uploads_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_filename(source.name)
    stem, suffix = Path(name).stem or "data", Path(name).suffix.lower()
    target = folder / f"{stem}{suffix}"
    counter = 1
    while target.exists() and not _same_file(source, target):
        counter += 1
        target = folder / f"{stem}-{counter}{suffix}"
    if target.resolve().parent != folder:
        raise DataError(f"The file name {source.name!r} cannot be used: rename the file and upload it again.")
    if not _same_file(source, target):
        try:
            shutil.copyfile(source, target)
        except OSError as err:
            raise DataError(f"The upload could not be saved ({err.strerror or err}): check the free disk "
                            f"space.") from None
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and (a.resolve() == b.resolve() or (a.stat().st_size == b.stat().st_size
                                                               and a.read_bytes() == b.read_bytes()))
    except OSError:
        return False


def sample_files() -> list[Path]:
    """The shipped sample datasets (assets/samples), sorted by name."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


# --- chat template, encoding, preview --------------------------------------------------------
def _has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(messages: list[dict], tokenizer, add_generation_prompt: bool = False) -> str:
    """The conversation as one string, with the model's chat template or a plain '### Role:' fallback."""
    if _has_template(tokenizer):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as err:  # noqa: BLE001 - jinja errors raised by the template itself
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise DataError(f"The model's chat template refused a conversation ({reason}): check that user and "
                            f"assistant turns alternate, or pick another model.") from None
    eos = tokenizer.eos_token or ""
    parts = []
    for m in messages:
        if m["role"] == "assistant":
            parts.append(f"### Assistant:\n{m['content']}{eos}\n")
        else:
            parts.append(f"### {m['role'].title()}:\n{m['content']}\n")
    if add_generation_prompt:
        parts.append("### Assistant:\n")
    return "".join(parts)


def _end_markers(tokenizer) -> tuple[str, ...]:
    eos = getattr(tokenizer, "eos_token", None)
    return ((eos,) if eos else ()) + END_OF_TURN_MARKERS


def _chat_spans(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant answer plus its end-of-turn token.

    Each answer's span is found by rendering growing prefixes: everything up to the assistant header
    (generation prompt) and up to the end of that turn. The span starts where the answer's text starts
    (not at the header) and stops after the end-of-turn token (not the newline some templates add).
    Templates that rewrite earlier turns break the prefix property; then the answer is searched in the text.
    """
    full = render_chat(messages, tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        content = m["content"].strip()
        before = render_chat(messages[:i], tokenizer, add_generation_prompt=True) if i else ""
        after = render_chat(messages[: i + 1], tokenizer)
        if full.startswith(after) and after.startswith(before) and len(after) > len(before) >= cursor:
            start, end = len(before), len(after)
        else:
            found = full.find(content, cursor) if content else -1
            if found < 0:
                continue
            start, end = found, found + len(content)
            for marker in _end_markers(tokenizer):
                if full.startswith(marker, end):
                    end += len(marker)
                    break
        if content:
            found = full.find(content, start, end)
            if found >= 0:
                start = found
        while end > start and full[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
            cursor = end
    return full, spans


def _tokenize_marked(text: str, spans: list[tuple[int, int]], tokenizer) -> tuple[list[int], list[bool]]:
    """Token ids of `text` and, per token, whether it overlaps a trained span."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        marks, k = [], 0
        for a, b in offsets:
            while k < len(spans) and spans[k][1] <= a:
                k += 1
            marks.append(k < len(spans) and b > a and spans[k][0] < b)
        return ids, marks
    ids, marks, pos = [], [], 0  # slow tokenizers: tokenise the pieces one after the other
    for start, end in spans + [(len(text), len(text))]:
        for piece, trained in ((text[pos:start], False), (text[start:end], True)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += piece_ids
                marks += [trained] * len(piece_ids)
        pos = end
    return ids, marks


def _check_example(example: dict) -> None:
    if not isinstance(example, dict) or not ("messages" in example or "text" in example):
        raise DataError("An example must be {\"messages\": [...]} or {\"text\": ...}: normalise it with load_data "
                        "first.")


def encode_example(example: dict, tokenizer, max_seq_length: int, train_on_answers_only: bool = True) -> dict:
    """{"input_ids", "labels"} for one example, cut to max_seq_length tokens; labels are -100 where no loss is
    computed (everything but the assistant answers when train_on_answers_only)."""
    _check_example(example)
    if "text" in example:
        ids = list(tokenizer(example["text"], add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        labels = list(ids)
    elif train_on_answers_only:
        text, spans = _chat_spans(example["messages"], tokenizer)
        ids, marks = _tokenize_marked(text, spans, tokenizer)
        labels = [t if m else -100 for t, m in zip(ids, marks)]
    else:
        ids = list(tokenizer(render_chat(example["messages"], tokenizer), add_special_tokens=False)["input_ids"])
        labels = list(ids)
    return {"input_ids": ids[:max_seq_length], "labels": labels[:max_seq_length]}


def render_segments(example: dict, tokenizer, train_on_answers_only: bool = True) -> list[tuple[str, bool]]:
    """The text exactly as the model sees it, as (text, loss computed here) segments."""
    _check_example(example)
    if "text" in example:
        return [(example["text"] + (tokenizer.eos_token or ""), True)]
    if not train_on_answers_only:
        return [(render_chat(example["messages"], tokenizer), True)]
    text, spans = _chat_spans(example["messages"], tokenizer)
    segments, pos = [], 0
    for start, end in spans:
        if start > pos:
            segments.append((text[pos:start], False))
        segments.append((text[start:end], True))
        pos = end
    if pos < len(text):
        segments.append((text[pos:], False))
    return segments


def token_stats(examples: list[dict], tokenizer, max_seq_length: int, sample: int = 2000) -> dict:
    """Token lengths (chat template applied) of up to `sample` examples, picked with a fixed seed.
    n_over counts the sampled rows longer than max_seq_length (they would be cut); n is the sample size
    and n_total the number of usable examples."""
    usable = [e for e in examples if e is not None]
    chosen = usable
    if len(usable) > sample:
        chosen = [usable[i] for i in sorted(random.Random(0).sample(range(len(usable)), sample))]
    texts, extra = [], []
    for e in chosen:
        if "text" in e:
            texts.append(e["text"])
            extra.append(1 if tokenizer.eos_token_id is not None else 0)
        else:
            texts.append(render_chat(e["messages"], tokenizer))
            extra.append(0)
    lengths = []
    if texts:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]  # one batched call: fast tokenizers use Rust
        lengths = [len(t) + x for t, x in zip(ids, extra)]
    stats = {"n": len(lengths), "n_total": len(usable), "sampled": len(chosen) < len(usable),
             "max_seq_length": max_seq_length, "lengths": lengths}
    if not lengths:
        return {**stats, "min": 0, "median": 0, "p95": 0, "max": 0, "n_over": 0}
    ordered = sorted(lengths)
    return {**stats, "min": ordered[0], "median": statistics.median(ordered),
            "p95": ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], "max": ordered[-1],
            "n_over": sum(n > max_seq_length for n in lengths)}


def describe_stats(stats: dict) -> str:
    """One line about token lengths, for the CLI and the Data tab."""
    if not stats["n"]:
        return "No usable rows to measure."
    sample = f" (a sample of {stats['n']:,} of {stats['n_total']:,} rows)" if stats["sampled"] else ""
    line = (f"Tokens per example{sample}: min {stats['min']}, median {stats['median']:g}, 95% under {stats['p95']}, "
            f"max {stats['max']}.")
    if stats["n_over"]:
        share = 100 * stats["n_over"] / stats["n"]
        line += (f" {stats['n_over']:,} ({share:.0f}%) are longer than the cut-off of {stats['max_seq_length']} "
                 f"tokens and will be cut: raise max_seq_length or shorten them.")
    else:
        line += f" All fit in the cut-off of {stats['max_seq_length']} tokens."
    return line


# --- CLI -------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from .config import BUNDLED_MODEL

    p = ArgumentParser(prog="studio data", description="Check a dataset: detected format, rows, problems "
                                "and a preview with the model's chat template applied.")
    p.add_argument("file", help=f"the data file: {SUPPORTED_TEXT}")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of text")
    p.add_argument("--model", default=BUNDLED_MODEL, help="model whose tokenizer and chat template are used "
                   "(default: the bundled model)")
    p.add_argument("--max-seq-length", type=int, default=512, help="cut-off in tokens used for the length check "
                   "(default: 512)")
    p.add_argument("--prompt-column", default="", help="column holding the prompt (join several with '+')")
    p.add_argument("--response-column", default="", help="column holding the answer")
    p.add_argument("--system-column", default="", help="column holding a system prompt")
    p.add_argument("--text-column", default="", help="column of plain text (instead of prompt and response)")
    p.add_argument("--rows", type=int, default=3, help="how many rows to preview (default: 3)")
    p.add_argument("--all-problems", action="store_true", help="list every problem, not only the first 20")
    return p


def _cli_report(args: argparse.Namespace) -> dict:
    from .models import load_tokenizer

    mapping = ColumnMapping(args.prompt_column, args.response_column, args.system_column, args.text_column)
    started = time.perf_counter()
    report = load_data(args.file, mapping)
    tokenizer = load_tokenizer(args.model)
    stats = token_stats(report.examples, tokenizer, args.max_seq_length)
    preview = []
    for row, example in enumerate(report.examples, 1):
        if len(preview) >= args.rows:
            break
        if example is not None:
            preview.append({"row": row, "segments": [[t, m] for t, m in render_segments(example, tokenizer)]})
    return {"path": report.path, "format": report.format, "format_label": report.format_label,
            "columns": report.columns, "n_rows": report.n_rows, "n_usable": len(report.good_examples()),
            "mapping": dataclasses.asdict(report.mapping), "notes": report.notes, "message": report.message,
            "problems": [dataclasses.asdict(p) for p in report.problems],
            "token_stats": {k: v for k, v in stats.items() if k != "lengths"}, "stats_line": describe_stats(stats),
            "model": args.model, "preview": preview, "seconds": round(time.perf_counter() - started, 3)}


def _print_text(info: dict, all_problems: bool) -> None:
    color = sys.stdout.isatty()
    mapping = ", ".join(f"{k}={v}" for k, v in info["mapping"].items() if v)
    print(f"File:    {info['path']}")
    print(f"Format:  {info['format_label']}" + (f" ({mapping})" if mapping else ""))
    print(f"Columns: {', '.join(info['columns'])}")
    print(f"Rows:    {info['n_rows']:,} ({info['n_usable']:,} usable)")
    for note in info["notes"]:
        print(f"Note:    {note}")
    if info["message"]:
        print(f"Note:    {info['message']}")
    print(info["stats_line"])
    problems = info["problems"]
    if problems:
        shown = problems if all_problems else problems[:20]
        print(f"\nProblems ({len(problems):,}):")
        for p in shown:
            print(f"  row {p['row']:>6}  {p['kind']:<15} {p['message']}")
        if len(shown) < len(problems):
            print(f"  ... and {len(problems) - len(shown):,} more (use --all-problems)")
    legend = "trained-on text in green" if color else "trained-on text between [[ and ]]"
    print(f"\nPreview with the chat template of {info['model']} ({legend}):")
    for item in info["preview"]:
        print(f"--- row {item['row']} ---")
        out = []
        for text, trained in item["segments"]:
            if trained:
                out.append(f"\x1b[42m{text}\x1b[0m" if color else f"[[{text}]]")
            else:
                out.append(text)
        print("".join(out).rstrip("\n"))


def main(argv: list[str]) -> int:
    """`python -m studio data FILE ...`: 0 when the file was read, 1 with one 'Error: ...' line when not."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        info = _cli_report(args)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    except Exception as err:
        log.debug("studio data failed", exc_info=True)
        tell_user(f"Error: {type(err).__name__}: {err}".splitlines()[0])
        return 1
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
    if not info["n_usable"]:
        tell_user(f"Error: {no_usable_rows_sentence(info)}")
        return 1
    if not args.json:
        _print_text(info, args.all_problems)
    return 0


def no_usable_rows_sentence(info: dict) -> str:
    """Why the CLI found nothing to train on, with the flags that fix it."""
    name = Path(info["path"]).name
    if info["format"] == "manual" or not any(info["mapping"].values()):
        return (f"No usable rows in {name}: Studio could not tell which column is the prompt and which the answer; "
                f"name them with --prompt-column and --response-column (or --text-column for plain text). "
                f"Columns: {_names(info['columns'])}.")
    kinds = sorted({p["kind"] for p in info["problems"]})
    return (f"No usable rows in {name} ({', '.join(kinds) or 'every row is empty'}): fix the rows listed by "
            f"--json, or map other columns with --prompt-column and --response-column.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
