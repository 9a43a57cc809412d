"""Template: an example -> the text the model sees (its chat template) and input_ids/labels.

`encode_example` masks everything but the assistant answers; `render_segments` shows the same split as text for
the preview; `token_stats` measures lengths against the cut-off.
"""

from __future__ import annotations

import math
import random
import statistics

from ..errors import DataError
from .examples import Chat, Example, Text, as_example

END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")



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


def encode_example(example: Example | dict, tokenizer, max_seq_length: int, train_on_answers_only: bool = True) -> dict:
    """{"input_ids", "labels"} for one example, cut to max_seq_length tokens; labels are -100 where no loss is
    computed (everything but the assistant answers when train_on_answers_only)."""
    example = as_example(example)
    match example:
        case Text():
            ids = list(tokenizer(example.text, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            labels = list(ids)
        case Chat() if train_on_answers_only:
            text, spans = _chat_spans(example.messages, tokenizer)
            ids, marks = _tokenize_marked(text, spans, tokenizer)
            labels = [t if m else -100 for t, m in zip(ids, marks)]
        case Chat():
            ids = list(tokenizer(render_chat(example.messages, tokenizer), add_special_tokens=False)["input_ids"])
            labels = list(ids)
    return {"input_ids": ids[:max_seq_length], "labels": labels[:max_seq_length]}


def render_segments(example: Example | dict, tokenizer, train_on_answers_only: bool = True) -> list[tuple[str, bool]]:
    """The text exactly as the model sees it, as (text, loss computed here) segments."""
    example = as_example(example)
    if isinstance(example, Text):
        return [(example.text + (tokenizer.eos_token or ""), True)]
    if not train_on_answers_only:
        return [(render_chat(example.messages, tokenizer), True)]
    text, spans = _chat_spans(example.messages, tokenizer)
    segments, pos = [], 0
    for start, end in spans:
        if start > pos:
            segments.append((text[pos:start], False))
        segments.append((text[start:end], True))
        pos = end
    if pos < len(text):
        segments.append((text[pos:], False))
    return segments


def rendered_text(example: Example | dict, tokenizer) -> str:
    """The whole example as the model reads it (chat template applied); a Text row's end token is added apart."""
    example = as_example(example)
    return example.text if isinstance(example, Text) else render_chat(example.messages, tokenizer)


def token_stats(examples: list, tokenizer, max_seq_length: int, sample: int = 2000) -> dict:
    """Token lengths (chat template applied) of up to `sample` examples, picked with a fixed seed.
    n_over counts the sampled rows longer than max_seq_length (they would be cut); n is the sample size
    and n_total the number of usable examples."""
    usable = [as_example(e) for e in examples if e is not None]
    chosen = usable
    if len(usable) > sample:
        chosen = [usable[i] for i in sorted(random.Random(0).sample(range(len(usable)), sample))]
    texts = [rendered_text(e, tokenizer) for e in chosen]
    extra = [1 if isinstance(e, Text) and tokenizer.eos_token_id is not None else 0 for e in chosen]
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
                 f"tokens and will be cut: raise the max sequence length (Settings tab) or shorten them.")
    else:
        line += f" All fit in the cut-off of {stats['max_seq_length']} tokens."
    return line

