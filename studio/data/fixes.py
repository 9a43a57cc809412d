"""One-click fixes: a clean copy of the user's file, in the user's own format (an .xlsx stays an .xlsx).

The copy keeps the file's columns and order, drops the rows the chosen fixes name (keeping the first of repeats
and reworded copies) and can mask personal data in every cell ([EMAIL], [PHONE], [CARD], [IBAN]). An Excel
copy is the workbook itself with rows deleted, so other sheets and formatting survive.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from . import checks, personal
from .readers import DEFAULT_MAX_BYTES, _read_table

if TYPE_CHECKING:
    from .load import DataReport


@dataclass
class Fixes:
    drop_unusable: bool = True  # rows training cannot use (empty answer, wrong type, ...)
    drop_duplicates: bool = True  # exact repeats of an earlier row
    drop_near_duplicates: bool = False  # reworded copies of an earlier row
    drop_long: bool = False  # rows over the cut-off (needs the tokenizer and max_seq_length)
    mask_personal_data: bool = False


@dataclass
class FixResult:
    path: Path
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    masked: int = 0  # cells in which personal data was masked

    def summary(self) -> str:
        parts = [f"{n:,} {why.replace('_', ' ')}" for why, n in self.dropped.items() if n]
        text = f"Kept {self.kept:,} rows" + (f", dropped {', '.join(parts)}" if parts else "")
        if self.masked:
            text += f", masked personal data in {self.masked:,} cells"
        return text + f": {self.path.name}."


def rows_to_drop(report: DataReport, fixes: Fixes, tokenizer=None, max_seq_length: int | None = None
                 ) -> dict[str, set[int]]:
    """reason -> 0-based record indexes the fixes drop (the first of repeats and reworded copies is kept)."""
    drop: dict[str, set[int]] = {}
    if fixes.drop_unusable:
        drop["unusable"] = {i for i, e in enumerate(report.examples) if e is None}
    if fixes.drop_duplicates:
        drop["duplicates"] = report.indexes_with("duplicate")
    if fixes.drop_near_duplicates:
        drop["near_duplicates"] = {p.index for p in checks.near_duplicate_problems(report)}
    if fixes.drop_long:
        if tokenizer is None or not max_seq_length:
            raise DataError("Dropping long rows needs the model's tokenizer and the cut-off: choose a model first.")
        drop["long_rows"] = {p.index for p in checks.too_long_problems(report, tokenizer, max_seq_length)}
    seen: set[int] = set()
    for reason in drop:  # a row dropped for two reasons counts once, under the first
        drop[reason] -= seen
        seen |= drop[reason]
    return drop


def write_fixed_copy(report: DataReport, folder, fixes: Fixes, tokenizer=None,
                     max_seq_length: int | None = None) -> FixResult:
    """Write `<stem>.clean<suffix>` in folder with the fixes applied; the source file is never changed."""
    from .files import safe_filename

    source = Path(report.path)
    drop = rows_to_drop(report, fixes, tokenizer, max_seq_length)
    dropped = set().union(*drop.values()) if drop else set()
    if len(dropped) >= report.n_rows:
        raise DataError(f"The fixes would drop every row of {source.name}: keep some rows, or fix them by hand.")
    table = _read_table(source, DEFAULT_MAX_BYTES)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = source.suffix.lower()
    stem = safe_filename(source.stem).removesuffix(".clean")
    target = folder / f"{stem}.clean{suffix}"
    tmp = target.with_name(target.name + ".tmp")
    kept = [i for i in range(len(table.records)) if i not in dropped]
    masked = 0
    records = []
    for i in kept:
        record, n = _masked(table.records[i]) if fixes.mask_personal_data else (table.records[i], 0)
        records.append(record)
        masked += n
    if suffix == ".xlsx":
        masked = _write_excel(source, tmp, report, set(report.rows[i] for i in dropped) | set(report.blank_rows),
                              fixes.mask_personal_data)
    elif suffix in (".csv", ".tsv"):
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter=report.delimiter or ("\t" if suffix == ".tsv" else ","))
            writer.writerow(table.columns)
            writer.writerows([["" if r.get(c) is None else r.get(c) for c in table.columns] for r in records])
    elif suffix in (".jsonl", ".ndjson"):
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), tmp)
    else:  # .txt: one paragraph per example, which reads back the same whether the source was lines or paragraphs
        tmp.write_text("\n\n".join(r["text"] for r in records) + "\n", encoding="utf-8")
    tmp.replace(target)
    return FixResult(target, kept=len(kept), dropped={k: len(v) for k, v in drop.items()}, masked=masked)


def _masked(value: Any) -> tuple[Any, int]:
    """value with personal data masked in every string inside it, and how many strings changed."""
    if isinstance(value, str):
        new = personal.mask(value)
        return new, int(new != value)
    if isinstance(value, dict):
        items = {k: _masked(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, sum(n for _, n in items.values())
    if isinstance(value, list):
        items = [_masked(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def _write_excel(source: Path, target: Path, report: DataReport, drop_rows: set[int], mask: bool) -> int:
    """The workbook with the first sheet's dropped rows deleted (bottom up, so numbers stay right) and cells
    masked; returns the masked cell count."""
    import openpyxl

    book = openpyxl.load_workbook(source)
    sheet = book.worksheets[0]
    masked = 0
    if mask:
        header = min(report.rows) - 1 if report.rows else 1
        for row in sheet.iter_rows(min_row=header + 1):
            for cell in row:
                if isinstance(cell.value, str) and cell.row not in drop_rows:
                    new = personal.mask(cell.value)
                    if new != cell.value:
                        cell.value, masked = new, masked + 1
    for number in sorted(drop_rows, reverse=True):
        sheet.delete_rows(number)
    book.save(target)
    return masked
