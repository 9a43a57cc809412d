"""Checks: the kinds of per-row problem, which make a row unusable and which are warnings."""

from __future__ import annotations

from dataclasses import dataclass

MAX_EXAMPLE_CHARS = 100_000  # longer rows are flagged: even a 32k-token context would cut most of them
# Problems that make a row unusable for training (good_examples() leaves them out). The others are warnings:
# "encoding" (read with a fallback) and "duplicate" (a repeat may be deliberate upsampling; "Drop bad rows" removes it).
UNUSABLE = frozenset({"empty_prompt", "empty_response", "empty_text", "missing_column", "wrong_type",
                      "bad_message", "too_long"})
WARNINGS = frozenset({"encoding", "duplicate"})


@dataclass
class RowProblem:
    row: int  # 1-based, the first data row is 1 (as in the preview table)
    kind: str  # one of UNUSABLE or WARNINGS
    message: str

