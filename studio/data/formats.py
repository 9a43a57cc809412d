"""Formats: name the shape of a table (detect_format), apply a hand-made column mapping, and turn each record
into an example (normalise), listing per-row problems with 1-based row numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import DataError
from . import checks
from .checks import RowProblem, quote
from .examples import Chat, Preference, Text
from .names import (
    CONVERSATION_NAMES,
    PROMPT_NAMES,
    PROMPT_WORDS,
    RESPONSE_NAMES,
    RESPONSE_WORDS,
    ROLE_ALIASES,
    SYSTEM_NAMES,
    TEXT_NAMES,
)
from .readers import _names, _Table, _type_name

DETECT_SAMPLE = 200  # rows looked at to recognise a conversation column
FORMAT_LABELS = {
    "alpaca": "Instruction / input / output (Alpaca)",
    "prompt_completion": "Prompt / completion",
    "question_answer": "Question / answer",
    "pairs": "Prompt and response columns",
    "messages": "Chat messages (OpenAI: role / content)",
    "sharegpt": "ShareGPT conversations (from / value)",
    "text": "Plain text",
    "preference": "Preference pairs (prompt / chosen / rejected)",
    "preference_chat": "Preference pairs (chosen / rejected conversations)",
    "manual": "Columns mapped by hand",
    "unknown": "Not recognised: map the columns by hand",
}
PAIR_FORMATS = ("alpaca", "prompt_completion", "question_answer", "pairs", "preference", "manual")
CONVERSATION_FORMATS = ("messages", "sharegpt", "preference_chat")
PREFERENCE_FORMATS = ("preference", "preference_chat")
REJECTED_NAME = "rejected"  # the rejected answers' column, by its normalised name (detect_format needs it too)
# Said on the Data tab (report notes) and by the CLI: what a preference file trains, by the run's training goal.
PREFERENCE_NOTE = ("This file holds preference pairs (a chosen and a rejected answer to each prompt): with the "
                   "training goal Automatic, DPO or ORPO the model learns to prefer the chosen answers; with "
                   "Supervised it learns to write the chosen answers, and the rejected ones are not used.")


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


class Detection(NamedTuple):
    format: str
    mapping: ColumnMapping
    conversation: str  # the column holding turn lists, or ""
    confidence: float  # 1.0 for names we know exactly; WORD_MATCH when a column was recognised by a word in it


WORD_MATCH = 0.7  # "Customer question" / "Our reply": very likely right, but the user should see it


def _by_word(columns: list[str], words: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str:
    """The first column whose name holds one of the words (accents and case off; "Customer question" -> question)."""
    from .similar import normalise

    wanted = {normalise(w) for w in words}
    spaced = [w for w in wanted if w.isascii() or " " in w]
    glued = [w for w in wanted if not w.isascii()]  # scripts written without spaces: a part of the name will do
    for column in columns:
        if column in exclude:
            continue
        name = normalise(column.replace("_", " "))
        if set(name.split()) & set(spaced) or any(w in name for w in glued):
            return column
    return ""


def detect_format(columns: list[str], records: list) -> Detection:
    """Name the shape of the data: its format, the mapping, the conversation column and how sure that is."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    system = _first_present(SYSTEM_NAMES, by_norm)
    if "chosen" in by_norm and REJECTED_NAME in by_norm:
        chosen = by_norm["chosen"]
        prompt = _first_present(PROMPT_NAMES, by_norm, exclude=(chosen, by_norm[REJECTED_NAME]))
        if _conversation_style(records, chosen):  # chosen/rejected as message lists (UltraFeedback style)
            return Detection("preference_chat", ColumnMapping(prompt=prompt, system=system), chosen, 1.0)
        if prompt:
            return Detection("preference", ColumnMapping(prompt=prompt, response=chosen, system=system), "", 1.0)
    for n in CONVERSATION_NAMES:
        if n in by_norm:
            style = _conversation_style(records, by_norm[n])
            if style:
                return Detection(style, ColumnMapping(system=system), by_norm[n], 1.0)
    if "instruction" in by_norm:
        response = _first_present(("output", "response", "answer", "completion"), by_norm)
        if response:
            prompt = by_norm["instruction"]
            extra = _first_present(("input", "context"), by_norm)
            return Detection("alpaca", ColumnMapping(prompt=f"{prompt}+{extra}" if extra else prompt,
                                                     response=response, system=system), "", 1.0)
    prompt = _first_present(PROMPT_NAMES, by_norm)
    response = _first_present(RESPONSE_NAMES, by_norm, exclude=(prompt,))
    if prompt and response:
        context = by_norm.get("context", "")
        if context and context != prompt:
            prompt = f"{prompt}+{context}"
        pair = (_norm(prompt.split("+")[0]), _norm(response))
        fmt = {("prompt", "completion"): "prompt_completion", ("question", "answer"): "question_answer"}.get(pair,
                                                                                                          "pairs")
        return Detection(fmt, ColumnMapping(prompt=prompt, response=response, system=system), "", 1.0)
    # Names in plain words or other languages: "Customer question" / "Our reply", "Frage" / "Antwort".
    both = tuple(c for c in columns if _by_word([c], PROMPT_WORDS) and _by_word([c], RESPONSE_WORDS))
    worded_prompt = prompt or _by_word(columns, PROMPT_WORDS, exclude=both)
    worded_response = response or _by_word(columns, RESPONSE_WORDS, exclude=both + (worded_prompt,))
    if worded_prompt and worded_response and worded_prompt != worded_response:
        return Detection("pairs", ColumnMapping(prompt=worded_prompt, response=worded_response, system=system), "",
                         WORD_MATCH)
    text = _first_present(TEXT_NAMES, by_norm)
    if not text and len(columns) == 1:
        sample = [r.get(columns[0]) for r in records[:DETECT_SAMPLE] if isinstance(r, dict)]
        if sample and all(isinstance(v, str) or v is None for v in sample):
            text = columns[0]
    if text:
        return Detection("text", ColumnMapping(text=text), "", 1.0)
    return Detection("unknown", ColumnMapping(system=system), "", 0.0)


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


def _pair_example(record: dict, mapping: ColumnMapping, columns_of) -> Chat:
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
    return Chat(messages)


def _conversation_example(record: dict, column: str, system_column: str, prompt_column: str = "") -> Chat:
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
    if prompt_column and not any(m["role"] == "user" for m in messages) and prompt_column in record:
        prompt = _text_of(record[prompt_column], "prompt").strip()  # chosen lists that hold only the answer
        if prompt:
            messages.insert(0, {"role": "user", "content": prompt})
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
    return Chat(messages)


def _rejected_column(columns: list[str]) -> str:
    return next((c for c in columns if _norm(c) == REJECTED_NAME), "")


def _rejected_answer(record: dict, column: str, fmt: str, prompt_column: str) -> str:
    """The rejected answer of a preference row: a cell, or the last assistant turn of a rejected conversation
    (lists that hold only the answer take the prompt from its own column, as the chosen ones do)."""
    if column not in record:
        raise _Bad("missing_column", f"The row has no {column!r} field: add the rejected answer or drop the row.")
    if fmt != "preference_chat":
        return _cell(record, column, f"{column!r} value")
    try:
        return _conversation_example(record, column, "", prompt_column).answer
    except _Bad as bad:
        if bad.kind in ("empty_response", "empty_prompt"):
            raise _Bad("empty_rejected", "The rejected answer is empty: write the worse answer or drop the "
                                         "row.") from None
        raise


def _preference_example(chat: Chat, rejected: str) -> Preference:
    """A preference pair from the chosen conversation and the rejected answer; pairs that teach no preference
    are row problems."""
    if not rejected:
        raise _Bad("empty_rejected", "The rejected answer is empty: write the worse answer or drop the row.")
    if rejected == chat.answer:
        raise _Bad("same_answers", "The chosen and rejected answers are the same, so there is nothing to prefer: "
                                   "write a worse rejected answer or drop the row.")
    return Preference(chat.messages, rejected)


def _quote_of(record, mapping: ColumnMapping, conversation: str, columns_of) -> str:
    """The start of a row's prompt as written in the file, for a problem about a row that may be unusable."""
    if not isinstance(record, dict):
        return quote(json.dumps(record, ensure_ascii=False, default=str))
    try:
        if mapping.text or mapping.prompt:
            column = columns_of(mapping.text or mapping.prompt)[0]
            value = record.get(column)
            if isinstance(value, str) and value.strip():
                return quote(value)
        if conversation:
            turns = record.get(conversation)
            turns = json.loads(turns) if isinstance(turns, str) else turns
            for turn in turns if isinstance(turns, list) else []:
                text = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
                if isinstance(text, str) and text.strip() and turn.get("role", turn.get("from")) != "system":
                    return quote(text)
    except (DataError, ValueError, RecursionError, AttributeError):
        pass
    first = next((v for v in record.values() if isinstance(v, str) and v.strip()), "")
    return quote(first)


def _normalise(table: _Table, fmt: str, mapping: ColumnMapping, conversation: str,
               name: str) -> tuple[list, list[RowProblem]]:
    """Examples (None where unusable) and the problems found row by row, numbered as the file shows its rows."""
    examples: list = []
    unit = table.row_unit
    problems = [RowProblem(b, "blank_row", f"{unit.capitalize()} {b} is blank and is skipped: delete it, or fill it "
                           f"in if an example belongs there.") for b in table.blank_rows]
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
    rejected_column = _rejected_column(table.columns) if fmt in PREFERENCE_FORMATS else ""
    seen: dict[Any, int] = {}
    for index, record in enumerate(table.records):
        row = table.rows[index]

        def problem(kind: str, message: str, row=row, record=record, index=index, **extra) -> RowProblem:
            return RowProblem(row, kind, message, quote=_quote_of(record, mapping, conversation, columns_of),
                              index=index, **extra)

        if index in table.fallback_rows:
            problems.append(problem("encoding", f"The {unit} is not UTF-8 and was read as Windows-1252: check its "
                                                f"accented characters."))
        try:
            if not isinstance(record, dict):
                raise _Bad("wrong_type", f"The {unit} is a {_type_name(record)}, not an object with columns: fix or "
                                         f"drop it.")
            if mapping.text:
                column = columns_of(mapping.text)[0]
                text = _cell(record, column, "text")
                if not text:
                    raise _Bad("empty_text", "The text is empty: write it or drop the row.")
                example = Text(text)
            elif fmt in CONVERSATION_FORMATS:
                prompt_column = columns_of(mapping.prompt)[0] if mapping.prompt else ""
                example = _conversation_example(record, conversation, system_column, prompt_column)
            else:
                example = _pair_example(record, mapping, columns_of)
            if rejected_column:
                prompt_column = columns_of(mapping.prompt)[0] if mapping.prompt else ""
                example = _preference_example(example, _rejected_answer(record, rejected_column, fmt, prompt_column))
            chars = example.chars()
            if chars > checks.MAX_EXAMPLE_CHARS:
                raise _Bad("oversized", f"The row is {chars:,} characters long, above the "
                                        f"{checks.MAX_EXAMPLE_CHARS:,} limit: shorten it or drop the row.")
            key = example.key()
            if key in seen:
                first = table.rows[seen[key]]
                problems.append(problem("duplicate", f"The row repeats {unit} {first}: drop it unless the repeat is "
                                                     f"deliberate.", other_row=first, similarity=100.0))
            else:
                seen[key] = index
        except _Bad as bad:
            problems.append(problem(bad.kind, bad.message))
            example = None
        examples.append(example)
    problems.sort(key=lambda p: (p.row, p.kind))
    return examples, problems
