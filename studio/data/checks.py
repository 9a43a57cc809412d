"""Checks: the kinds of per-row problem, and the checks that look across rows (issue 15).

Reading a file already finds what makes a row unusable (empty prompt or answer, wrong type, ...), exact repeats,
blank rows and rows read with a legacy encoding. `check_report` adds what spoils a small fine-tune without
making a row unusable: reworded copies (near_duplicate), the same question with clearly different answers
(contradiction), personal data, rows the cut-off shortens (too_long, given a tokenizer) and validation rows that
repeat training rows (leak). Every problem carries the row number as the user's file shows it and the start of
its prompt, so the row can be found.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import personal
from .examples import Chat, Text
from .similar import similar_pairs

if TYPE_CHECKING:
    from .load import DataReport

MAX_EXAMPLE_CHARS = 100_000  # longer rows are unusable ("oversized"): even a 32k-token context would cut most of them
# Problems that make a row unusable for training (usable() leaves them out). The others are warnings: the row is
# trained on as it is unless the user drops or fixes it ("Drop bad rows" and the fixes in fixes.py).
UNUSABLE = frozenset({"empty_prompt", "empty_response", "empty_text", "missing_column", "wrong_type",
                      "bad_message", "oversized",
                      "empty_rejected", "same_answers"})  # preference pairs: no worse answer, nothing to prefer
WARNINGS = frozenset({"encoding", "duplicate", "blank_row", "near_duplicate", "contradiction", "personal_data",
                      "too_long", "leak"})
CROSS_ROW = frozenset({"near_duplicate", "contradiction", "personal_data", "too_long", "leak"})  # check_report's
NEAR_DUPLICATE = 85.0  # rapidfuzz ratio (0-100) of whole rows, normalised: reworded copies score 85 and up
SAME_PROMPT = 93.0  # prompts this similar ask the same thing ("dog" vs "cat" in a 40-character question is 92)
SAME_PROMPT_EDITS = 12  # ...and differ by at most this many characters: a long shared quote with different
# instructions ("Classify this clause" / "Explain this clause") asks different things
DIFFERENT_ANSWER = 50.0  # answers below this similarity say different things
QUOTE_CHARS = 60


@dataclass
class RowProblem:
    row: int  # the row as the user's file shows it (see DataReport.row_unit): spreadsheet row, line or item
    kind: str  # one of UNUSABLE or WARNINGS
    message: str
    quote: str = ""  # the start of the row's prompt, so it can be found
    index: int = -1  # 0-based position in DataReport.examples; -1 for a blank row, which has no example
    other_row: int | None = None  # the row this one repeats, resembles, contradicts or leaks from
    similarity: float | None = None  # 0-100 (rapidfuzz ratio) for near_duplicate, contradiction and leak
    detail: str = ""  # what exactly: the kinds of personal data, what the cut-off loses


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """The start of a text on one line: 'How do I reset my pass…'."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def whole_text(example: Chat | Text) -> str:
    """Every turn's words in one string, for comparing rows (the system prompt is the same in most rows: left out)."""
    if isinstance(example, Text):
        return example.text
    return "\n".join(m["content"] for m in example.messages if m["role"] != "system")


def check_report(report: DataReport, tokenizer=None, max_seq_length: int | None = None,
                 validation: DataReport | None = None) -> DataReport:
    """Add the cross-row problems to report.problems (and leaks to validation.problems), in row order.

    too_long needs the model's tokenizer and the cut-off; the rest need only the rows. Returns report."""
    report.problems = [p for p in report.problems if p.kind not in CROSS_ROW]  # checking twice adds nothing twice
    found = near_duplicate_problems(report) + contradiction_problems(report) + personal_data_problems(report)
    if tokenizer is not None and max_seq_length:
        found += too_long_problems(report, tokenizer, max_seq_length)
    report.problems = sorted(report.problems + found, key=lambda p: (p.row, p.kind))
    if validation is not None:
        check_report(validation, tokenizer, max_seq_length)
        leaks = leak_problems(report, validation)
        validation.problems = sorted(validation.problems + leaks, key=lambda p: (p.row, p.kind))
    return report


def _usable(report: DataReport) -> list[tuple[int, Chat | Text]]:
    return [(i, e) for i, e in enumerate(report.examples) if e is not None]


def _problem(report: DataReport, index: int, kind: str, message: str, **extra) -> RowProblem:
    example = report.examples[index]
    return RowProblem(report.rows[index], kind, message, quote=quote(example.prompt if example else ""),
                      index=index, **extra)


def near_duplicate_problems(report: DataReport) -> list[RowProblem]:
    """A row that rewords an earlier row (exact repeats are already "duplicate"): flagged once, naming the first."""
    usable = _usable(report)
    unit = report.row_unit
    firsts: dict[int, tuple[int, float]] = {}  # later index -> (earliest similar index, score)
    for a, b, score in similar_pairs([whole_text(e) for _, e in usable], NEAR_DUPLICATE):
        i, j = usable[a][0], usable[b][0]
        if usable[a][1].key() == usable[b][1].key():
            continue  # an exact repeat: reported as "duplicate" while reading
        if j not in firsts or i < firsts[j][0]:
            firsts[j] = (i, score)
    problems = []
    for j, (i, score) in sorted(firsts.items()):
        other = report.rows[i]
        problems.append(_problem(report, j, "near_duplicate", f"The row rewords {unit} {other} ({score:.0f}% alike): "
                                 f"drop one of them, or keep both if the wording is meant to vary.",
                                 other_row=other, similarity=round(score, 1)))
    return problems


def contradiction_problems(report: DataReport) -> list[RowProblem]:
    """The same or nearly the same prompt with clearly different answers: the model cannot learn both."""
    from rapidfuzz import fuzz
    from rapidfuzz.distance import Levenshtein

    from .similar import normalise

    usable = [(i, e) for i, e in _usable(report) if isinstance(e, Chat)]
    flagged: dict[int, tuple[int, float]] = {}
    for a, b, _ in similar_pairs([e.prompt for _, e in usable], SAME_PROMPT):
        (i, first), (j, second) = usable[a], usable[b]
        if Levenshtein.distance(normalise(first.prompt), normalise(second.prompt)) > SAME_PROMPT_EDITS:
            continue
        alike = fuzz.ratio(normalise(first.first_answer), normalise(second.first_answer))
        if alike < DIFFERENT_ANSWER and (j not in flagged or i < flagged[j][0]):
            flagged[j] = (i, alike)
    problems = []
    for j, (i, alike) in sorted(flagged.items()):
        other = report.rows[i]
        problems.append(_problem(report, j, "contradiction", f"The same question as {report.row_unit} {other} gets a "
                                 f"different answer ({alike:.0f}% alike): keep the right one, or make the questions "
                                 f"say what differs.", other_row=other, similarity=round(alike, 1)))
    return problems


def personal_data_problems(report: DataReport) -> list[RowProblem]:
    """E-mail addresses, phone numbers, card numbers and IBANs in any turn: a model can repeat them to anyone."""
    problems = []
    for i, example in _usable(report):
        kinds = sorted({kind for _, _, kind in personal.find(whole_text(example))}, key=list(personal.KINDS).index)
        if kinds:
            names = [personal.KINDS[k][0] for k in kinds]
            what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            problems.append(_problem(report, i, "personal_data", f"The row holds personal data ({what}): hide it "
                                     f"(the fix Hide personal data) or drop the row.", detail=", ".join(kinds)))
    return problems


def too_long_problems(report: DataReport, tokenizer, max_seq_length: int) -> list[RowProblem]:
    """Rows longer than the cut-off, naming what training will not see (the answer's end, or all of it)."""
    from .template import encode_example

    usable = _usable(report)
    if not usable:
        return []
    lengths = _rough_lengths([e for _, e in usable], tokenizer, max_seq_length - ROUGH_MARGIN)
    problems = []
    for (i, example), length in zip(usable, lengths):
        if length < max_seq_length - ROUGH_MARGIN:
            continue
        full = encode_example(example, tokenizer, max_seq_length=10**9)
        total = len(full["input_ids"])
        if total <= max_seq_length:
            continue
        kept_labels = sum(label != -100 for label in full["labels"][:max_seq_length])
        trained = sum(label != -100 for label in full["labels"])
        lost = _lost_words(example, full, tokenizer, max_seq_length)
        if isinstance(example, Chat) and kept_labels == 0:
            what = "nothing of the answer is left, so the row teaches nothing"
        elif isinstance(example, Chat):
            what = f"the end of the answer is cut ({trained - kept_labels:,} of its {trained:,} tokens: “…{lost}”)"
        else:
            what = f"the end of the text is cut (“…{lost}”)"
        problems.append(_problem(report, i, "too_long", f"The row is {total:,} tokens, over the cut-off of "
                                 f"{max_seq_length:,}: {what}; raise the max sequence length (Settings tab), "
                                 f"shorten it or drop it.",
                                 detail=what))
    return problems


ROUGH_MARGIN = 32  # tokens the rough length may be short by (tokens merging across a turn's edge): checked exactly


TOKEN_SAMPLE = 1000  # rows tokenised to learn how many tokens a byte of this data makes at most
DENSITY_MARGIN = 1.5  # rows are assumed up to 50% denser in tokens than the densest sampled row


def _rough_lengths(examples: list, tokenizer, limit: int) -> list[int]:
    """Token counts, exact where they matter: for rows that may reach `limit`; below it, an upper bound.

    Tokenising every row is the slow part (about 3 MB of text a second on 2 busy cores), so first a bound: a token
    covers at least one byte (byte-level BPE, SentencePiece), so bytes + 2 per turn bound a turn's tokens; rows
    under `limit` by that are done. Of the rest, a seeded sample is tokenised to learn the data's densest tokens
    per byte; rows under `limit` at DENSITY_MARGIN times that density are done too (a row 50% denser in tokens
    than any of 1,000 sampled rows could be missed). The remaining rows are tokenised: each turn's content in one
    batched call, plus the template's own tokens for that sequence of roles, rendered once with empty turns."""
    import random

    from .template import render_chat

    overhead: dict[tuple, int] = {}

    def template_tokens(e) -> int:
        if isinstance(e, Text):
            return 1  # the end-of-text token
        roles = tuple(m["role"] for m in e.messages)
        if roles not in overhead:
            empty = [{"role": r, "content": ""} for r in roles]
            overhead[roles] = len(tokenizer(render_chat(empty, tokenizer), add_special_tokens=False)["input_ids"])
        return overhead[roles]

    def contents(e) -> list[str]:
        return [e.text] if isinstance(e, Text) else [m["content"] for m in e.messages]

    def exact(rows: list[int]) -> None:
        counts = iter(_token_counts([c for k in rows for c in contents(examples[k])], tokenizer))
        for k in rows:
            lengths[k] = template_tokens(examples[k]) + sum(next(counts) for _ in contents(examples[k]))

    sizes = [[len(c.encode("utf-8")) for c in contents(e)] for e in examples]
    lengths = [template_tokens(e) + sum(n + 2 for n in size) for e, size in zip(examples, sizes)]
    near = [k for k, n in enumerate(lengths) if n >= limit]
    if len(near) > 2 * TOKEN_SAMPLE:
        sample = sorted(random.Random(0).sample(near, TOKEN_SAMPLE))
        exact(sample)
        density = max((lengths[k] - template_tokens(examples[k])) / max(1, sum(sizes[k])) for k in sample)
        sampled, rest = set(sample), []
        for k in near:
            if k not in sampled:
                lengths[k] = template_tokens(examples[k]) + math.ceil(sum(n * density * DENSITY_MARGIN + 2
                                                                         for n in sizes[k]))
                if lengths[k] >= limit:
                    rest.append(k)
        near = rest
    exact(near)
    return lengths


def _token_counts(pieces: list[str], tokenizer) -> list[int]:
    """Tokens per piece; a fast tokenizer's Rust backend directly (no offsets, no Python objects per token)."""
    if not pieces:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [len(e.ids) for e in backend.encode_batch_fast(pieces, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]]


def _lost_words(example, full: dict, tokenizer, max_seq_length: int) -> str:
    """The last words of what the cut-off removes, e.g. 'Kind regards, the clinic team' (template markers off)."""
    tail = [t for t, label in zip(full["input_ids"][max_seq_length:], full["labels"][max_seq_length:])
            if label != -100 or isinstance(example, Text)]
    text = tokenizer.decode(tail, skip_special_tokens=True) if tail else ""
    words = re.sub(r"\s+", " ", text).strip().split(" ")
    return " ".join(words[-8:])


def leak_problems(train: DataReport, validation: DataReport) -> list[RowProblem]:
    """Validation rows that repeat or reword a training row: the validation loss would flatter the model."""
    train_rows, val_rows = _usable(train), _usable(validation)
    texts = [whole_text(e) for _, e in train_rows] + [whole_text(e) for _, e in val_rows]
    n = len(train_rows)
    first: dict[int, tuple[int, float]] = {}  # validation index -> (training index, score)
    for a, b, score in similar_pairs(texts, NEAR_DUPLICATE):
        if a < n <= b:
            i, j = train_rows[a][0], val_rows[b - n][0]
            if j not in first or score > first[j][1]:
                first[j] = (i, score)
    problems = []
    for j, (i, score) in sorted(first.items()):
        other = train.rows[i]
        how = "repeats" if score >= 100 else f"rewords ({score:.0f}% alike)"
        problems.append(_problem(validation, j, "leak", f"The validation row {how} training {train.row_unit} {other}: "
                                 f"the validation loss would look better than the model is; drop it from one file.",
                                 other_row=other, similarity=round(score, 1)))
    return problems
