"""Load: read -> detect -> normalise -> check, as one DataReport; the split and a run's train/validation rows."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, UserError
from .checks import UNUSABLE, RowProblem
from .examples import Example, Preference, as_example
from .formats import (
    FORMAT_LABELS,
    PREFERENCE_FORMATS,
    PREFERENCE_NOTE,
    ColumnMapping,
    _apply_mapping,
    _columns_of,
    _normalise,
    detect_format,
)
from .hub import parse_hub_id, read_hub
from .readers import DEFAULT_MAX_BYTES, EXTENSIONS, _check_name, _read_table, _Table

if TYPE_CHECKING:
    from ..config import RunConfig

log = logging.getLogger(__name__)

PREVIEW_ROWS = 20  # rows kept as read, for the table in the Data tab
MAPPING_SURE = 0.9  # detections below this confidence ask the user to confirm the mapping

# Set by tests: unexpected exceptions in the readers propagate instead of becoming a DataError.
STRICT = False


@dataclass
class DataReport:
    path: str
    format: str
    columns: list[str]
    n_rows: int
    examples: list[Example | None]  # normalised, same order as rows; None where the row is unusable
    problems: list[RowProblem]
    mapping: ColumnMapping
    preview: Any  # pandas.DataFrame of the first rows as read (cells as display strings)
    notes: list[str] = field(default_factory=list)  # file-level remarks (encoding, sheet, JSON shape)
    message: str = ""  # why no row could be used (format not recognised), else ""
    rows: list[int] = field(default_factory=list)  # per example, its row as the file shows it (see row_unit)
    row_unit: str = "row"  # "row" (spreadsheet: header = row 1), "line" (JSONL, TXT) or "item" (JSON list)
    blank_rows: list[int] = field(default_factory=list)
    confidence: float = 1.0  # how sure the detected mapping is (0-1); below MAPPING_SURE the UI opens the mapping
    delimiter: str = ""  # CSV/TSV separator, for a cleaned copy written the same way

    def __post_init__(self):
        if not self.rows:
            self.rows = list(range(1, len(self.examples) + 1))

    @property
    def mapping_unsure(self) -> bool:
        """Detection guessed: show the column mapping opened and pre-filled, for the user to confirm."""
        return self.confidence < MAPPING_SURE

    @property
    def format_label(self) -> str:
        return FORMAT_LABELS.get(self.format, self.format)

    def usable(self) -> list[Example]:
        """The usable rows' examples, in file order."""
        return [e for e in self.examples if e is not None]

    def good_examples(self) -> list[dict]:
        """usable() in the dict shape, for code that has not switched to typed examples (chat.py)."""
        return [e.to_dict() for e in self.usable()]

    def bad_rows(self, include_duplicates: bool = True) -> list[int]:
        """Rows (as the file numbers them) that "Drop bad rows" removes: unusable ones, and repeats unless told
        otherwise."""
        kinds = UNUSABLE | ({"duplicate"} if include_duplicates else set())
        return sorted({p.row for p in self.problems if p.kind in kinds and p.index >= 0})

    def indexes_with(self, *kinds: str) -> set[int]:
        """0-based positions in examples of the rows with a problem of one of these kinds."""
        return {p.index for p in self.problems if p.kind in kinds and p.index >= 0}

    def summary(self) -> str:
        good = sum(e is not None for e in self.examples)
        text = f"{self.format_label}: {self.n_rows:,} rows, {good:,} usable"
        if good < self.n_rows:
            text += f", {self.n_rows - good:,} with problems"
        return text + "."



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
    """Read, detect, normalise and check one data file (or a hub dataset id, see hub.py). Raises DataError for a
    file that cannot be used at all. The cross-row checks (checks.check_report) are a separate, slower step."""
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
    if not path.exists() and parse_hub_id(str(path)):
        table = read_hub(str(path))  # "org/name[:subset][@split]", not a file here
    else:
        _check_name(path)
        table = _read_table(path, max_bytes)
    fmt, detected, conversation, confidence = detect_format(table.columns, table.records)
    used = detected
    if mapping is not None and mapping.is_set():
        for part in ("prompt", "response", "system", "text"):
            spec = (getattr(mapping, part) or "").strip()
            if spec:
                _columns_of(spec, table.columns, path.name, part)
        fmt, used = _apply_mapping(mapping, fmt, detected, path.name)
        confidence = 1.0 if used != detected else confidence  # the user chose it
    examples, problems = _normalise(table, fmt, used, conversation, path.name)
    notes = list(table.notes)
    if fmt in PREFERENCE_FORMATS:
        notes.append(PREFERENCE_NOTE)
    message = ""
    if fmt == "unknown":
        message = (f"Studio could not tell which column of {path.name} is the prompt and which is the answer: "
                   f"choose them in the column mapping.")
    if table.blank_rows:
        rows = ", ".join(map(str, table.blank_rows[:5])) + (", ..." if len(table.blank_rows) > 5 else "")
        notes.append(f"{len(table.blank_rows):,} blank {table.row_unit}(s) ({rows}) were skipped.")
    return DataReport(path=str(path), format=fmt, columns=list(table.columns), n_rows=len(table.records),
                      examples=examples, problems=problems, mapping=used, preview=_preview_frame(table),
                      notes=notes, message=message, rows=list(table.rows), row_unit=table.row_unit,
                      blank_rows=list(table.blank_rows), confidence=confidence, delimiter=table.delimiter)




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


def split_examples(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded random share held out (see split_sizes); both keep the original order.

    Repeats and reworded copies (near_duplicate) stay on one side together: a validation row that a training row
    repeats would flatter the validation loss. Without such groups the split is a plain seeded shuffle."""
    n = len(examples)
    n_val = split_sizes(n, fraction)[1]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    group = _similar_groups(examples) if n_val else {}
    held: set[int] = set()
    for i in order:
        if len(held) >= n_val:
            break
        members = group.get(i, [i])
        if i not in held and len(held) + len(members) <= n_val:
            held.update(members)
    train = [e for i, e in enumerate(examples) if i not in held]
    val = [e for i, e in enumerate(examples) if i in held]
    return train, val


def _similar_groups(examples: list) -> dict[int, list[int]]:
    """index -> every index of its group of repeats and reworded copies (only for rows in a group of 2 or more)."""
    from .checks import NEAR_DUPLICATE, whole_text
    from .similar import similar_pairs

    parent = list(range(len(examples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in similar_pairs([whole_text(as_example(e)) for e in examples], NEAR_DUPLICATE):
        parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for i in range(len(examples)):
        groups.setdefault(root(i), []).append(i)
    return {i: members for members in groups.values() if len(members) > 1 for i in members}


def mapping_from_config(config: RunConfig) -> ColumnMapping | None:
    mapping = ColumnMapping(prompt=config.prompt_column, response=config.response_column,
                            system=config.system_column, text=config.text_column)
    return mapping if mapping.is_set() else None


def _usable(report: DataReport, role: str) -> list[Example]:
    good = report.usable()
    if good:
        return good
    name = Path(report.path).name
    if report.message:
        raise DataError(report.message)
    kinds = Counter(p.kind for p in report.problems if p.kind in UNUSABLE)
    common = kinds.most_common(1)[0][0].replace("_", " ") if kinds else "unknown"
    raise DataError(f"No usable rows in the {role} file {name}: all {report.n_rows} rows have problems (most often: "
                    f"{common}); fix them, or check the column mapping in the Data tab.")


def objective_of(config: RunConfig, report: DataReport | None = None):
    """The run's training objective (studio.methods.Objective): "auto" is DPO for a file of preference pairs and
    supervised otherwise; DPO or ORPO need preference pairs, from the file or from the corrections made in Chat
    (each correction is a pair: the corrected answer chosen, the model's own rejected). Raises ConfigError with the
    fix. `report`: the training file's, when already read."""
    from .. import methods

    if config.objective == "sft":
        return methods.SFT
    if report is None and not config.data_path:
        raise DataError("No training data: upload a file in the Data tab.")
    if report is None:
        report = load_data(config.data_path, mapping_from_config(config))
    pairs = report.format in PREFERENCE_FORMATS
    corrected = bool(getattr(config, "corrections_path", "")) and config.objective != methods.AUTO
    return methods.resolve_objective(config.objective, pairs or corrected)


def load_examples(config: RunConfig) -> tuple[list[Example], list[Example]]:
    """Train and validation examples for a run, bad rows dropped, the run's own system prompt added to rows
    without one (config.system_prompt). For a preference objective (DPO, ORPO) only preference pairs; for
    supervised training a pair is its chosen conversation (Preference is a Chat)."""
    if not config.data_path:
        raise DataError("No training data: upload a file in the Data tab.")
    mapping = mapping_from_config(config)
    system = getattr(config, "system_prompt", "") or ""
    report = load_data(config.data_path, mapping)
    objective = objective_of(config, report)
    train = [e.with_system(system) for e in _usable(report, "training")]
    if config.validation_path:
        val = [e.with_system(system) for e in _usable(load_data(config.validation_path, mapping), "validation")]
    else:
        train, val = split_examples(train, config.validation_fraction, config.seed)
    if objective.needs_preferences:
        # Rows without a rejected answer have nothing to prefer (a plain file whose pairs come from corrections).
        train, val = ([e for e in rows if isinstance(e, Preference)] for rows in (train, val))
    return train + correction_examples(config, len(train), objective.needs_preferences), val


def correction_examples(config: RunConfig, n_train_rows: int, preferences: bool = False) -> list[Example]:
    """A next version's corrections from Chat (studio/feedback.py), as training rows only, weighted beside the
    data's own; the validation rows stay the data's, so v1 and v2 are measured on the same rows. `preferences`
    (DPO, ORPO): each correction once, as a pair (the corrected answer chosen, the model's own rejected)."""
    if not getattr(config, "corrections_path", ""):
        return []
    from .. import feedback

    system = getattr(config, "system_prompt", "") or ""
    if preferences:
        return [_correction_pair(row).with_system(system) for row in feedback.preference_rows(config.corrections_path)]
    return [as_example(row).with_system(system)
            for row in feedback.correction_rows(config.corrections_path, n_train_rows)]


def _correction_pair(row: dict) -> Preference:
    """feedback.preference_rows' {"chosen": turns, "rejected": turns} (the same prompt, two endings) as a pair."""
    chosen, rejected = as_example({"messages": row["chosen"]}), as_example({"messages": row["rejected"]})
    return Preference(chosen.messages, rejected.answer)


def load_for_config(config: RunConfig) -> tuple[list[dict], list[dict]]:
    """load_examples in the dict shape, for code that has not switched to typed examples (chat.py reads
    example["messages"]); encode_example takes either shape."""
    train, val = load_examples(config)
    return [e.to_dict() for e in train], [e.to_dict() for e in val]

