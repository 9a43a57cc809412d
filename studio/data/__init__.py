"""Data: read a file -> detect its format -> normalise every row to one form -> check per row.

One internal form for every format: a typed example, Chat (messages with role and content) or Text (see
examples.py). The package's modules, in the order a file goes through them:

- readers.py   a file (CSV, TSV, JSON, JSONL, Parquet, TXT, XLSX) -> records keyed by column; DataError when
               the file as a whole cannot be used, one sentence naming the problem and the fix
- examples.py  Chat | Text | Preference (a Chat plus a rejected answer), and the dict shape at the boundary with
               code not yet switched
- names.py     the column names people use for each part
- formats.py   detect_format names the shape; normalising builds examples and per-row problems
- checks.py    the problem kinds; check_report adds near_duplicate, contradiction, personal_data, too_long, leak
- similar.py   reworded copies among many rows (rapidfuzz, MinHash buckets for large files)
- personal.py  e-mail addresses, phone numbers, card numbers and IBANs: found and masked
- load.py      load_data (all of the above as one DataReport), the split, a run's train/validation rows
- hub.py       a hub dataset id (org/name[:subset][@split]) read through datasets.load_dataset
- fixes.py     a clean copy in the user's own format: drop bad rows, repeats, long rows; mask personal data
- readiness.py "Is this enough?" in plain words
- template.py  encode_example / render_segments / token_stats with the model's chat template
- files.py     the cleaned copy, saved uploads, the shipped samples
- cli.py       `python -m studio data FILE`

Everything other code uses is importable from here (`from studio import data; data.load_data(...)`).
Nothing here imports gradio; pandas, pyarrow and openpyxl are imported lazily.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .checks import MAX_EXAMPLE_CHARS, UNUSABLE, WARNINGS, RowProblem, check_report
from .cli import main, no_usable_rows_sentence
from .examples import Chat, Example, Message, Preference, Text, as_example
from .files import SAMPLES_DIR, safe_filename, sample_files, save_upload, write_clean_copy
from .fixes import Fixes, FixResult, write_fixed_copy
from .formats import CONVERSATION_FORMATS, DETECT_SAMPLE, FORMAT_LABELS, PAIR_FORMATS, ColumnMapping, detect_format
from .load import (
    PREVIEW_ROWS,
    DataReport,
    load_data,
    load_examples,
    load_for_config,
    mapping_from_config,
    objective_of,
    split_examples,
    split_sizes,
)
from .names import CONVERSATION_NAMES, PROMPT_NAMES, RESPONSE_NAMES, ROLE_ALIASES, SYSTEM_NAMES, TEXT_NAMES
from .readers import DEFAULT_MAX_BYTES, EXTENSIONS, SUPPORTED_TEXT
from .readiness import readiness
from .template import (
    END_OF_TURN_MARKERS,
    describe_stats,
    encode_example,
    render_chat,
    render_segments,
    rendered_text,
    token_stats,
)


def source_files() -> list[Path]:
    """The package's code, for the tokenised-data cache key: a change in any module that reads, normalises,
    splits or encodes rows must never reuse stale tokens (hashing data.__file__ alone sees only this file)."""
    return sorted(Path(__file__).resolve().parent.glob("*.py"))


__all__ = [
    "source_files",
    "CONVERSATION_FORMATS", "CONVERSATION_NAMES", "DEFAULT_MAX_BYTES", "DETECT_SAMPLE", "END_OF_TURN_MARKERS",
    "EXTENSIONS", "FORMAT_LABELS", "MAX_EXAMPLE_CHARS", "PAIR_FORMATS", "PREVIEW_ROWS", "PROMPT_NAMES",
    "RESPONSE_NAMES", "ROLE_ALIASES", "SAMPLES_DIR", "SUPPORTED_TEXT", "SYSTEM_NAMES", "TEXT_NAMES", "UNUSABLE",
    "WARNINGS", "Chat", "ColumnMapping", "DataError", "DataReport", "Example", "FixResult", "Fixes", "Message",
    "Preference", "RowProblem", "Text", "as_example", "check_report", "describe_stats", "detect_format",
    "encode_example", "load_data", "load_examples", "load_for_config", "main", "mapping_from_config",
    "no_usable_rows_sentence", "objective_of",
    "readiness", "render_chat", "render_segments", "rendered_text", "safe_filename", "sample_files", "save_upload",
    "split_examples", "split_sizes", "token_stats", "write_clean_copy", "write_fixed_copy"
]
