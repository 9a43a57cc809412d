""""Is this enough?": plain words about a dataset's size and what a preset will do with it.

From the usable rows, the distinct prompts and the tokens (when a tokenizer is given), and the steps a run with
the chosen settings takes: "150 rows x 1 epoch = 38 steps: Quick test stops at 30 steps and sees 120 rows once".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .load import split_sizes
from .similar import normalise

if TYPE_CHECKING:
    from ..config import RunConfig
    from .load import DataReport

# Rough sizes from fine-tuning guides for a small model learning a task or a tone (rows of good quality):
FEW, FIRST_TRY, GOOD = 50, 200, 1000


def planned_steps(n_train: int, config: RunConfig) -> tuple[int, int]:
    """(optimiser steps the run takes, steps one pass over n_train rows takes)."""
    per_step = config.batch_size * config.gradient_accumulation
    per_epoch = max(1, math.ceil(n_train / per_step))
    steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(per_epoch * config.epochs))
    return steps, per_epoch


def readiness(report: DataReport, config: RunConfig | None = None, preset: str = "", tokenizer=None) -> str:
    """A few sentences: how much usable data there is, whether that is enough, what the settings do with it."""
    usable = report.usable()
    n = len(usable)
    if not n:
        return "No usable rows yet: nothing to train on. Fix the problems listed, or map the columns."
    prompts = len({normalise(e.prompt) for e in usable})
    facts = f"{_count(n, 'usable row')} ({_count(prompts, 'different prompt')}"
    if tokenizer is not None:
        from .template import token_stats

        stats = token_stats(usable, tokenizer, max_seq_length=10**9)
        total = round(sum(stats["lengths"]) / max(1, stats["n"]) * n)
        facts += f", about {total:,} tokens"
    lines = [facts + ")."]
    if n < FEW:
        lines.append(f"That is very few: the model may pick up the tone and format, but little else. {FIRST_TRY:,} "
                     f"to {GOOD:,} good rows is where a small fine-tune usually starts to pay off.")
    elif n < FIRST_TRY:
        lines.append("Enough for a first try: check the answers in the Chat tab, and add rows where they are weak.")
    elif n < GOOD:
        lines.append("A good size for a small fine-tune, if the answers are the ones you want the model to give.")
    else:
        lines.append("Plenty for a small fine-tune: quality matters more now than adding rows.")
    if prompts < 0.8 * n:
        lines.append(f"{n - prompts:,} rows repeat a prompt already there: the model sees those questions more "
                     f"often than the rest.")
    if config is not None:
        lines.append(_plan(n, config, preset))
    return " ".join(lines)


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def _plan(n: int, config: RunConfig, preset: str) -> str:
    n_train = split_sizes(n, config.validation_fraction)[0] if not config.validation_path else n
    steps, per_epoch = planned_steps(n_train, config)
    per_step = config.batch_size * config.gradient_accumulation
    name = preset or "These settings"
    epochs = f"{config.epochs:g} epoch{'s' if config.epochs != 1 else ''}"
    by_epochs = math.ceil(per_epoch * config.epochs)
    line = f"{_count(n_train, 'training row')} x {epochs} = {_count(by_epochs, 'step')}"
    seen = steps * per_step / n_train
    if config.max_steps > 0 and steps != by_epochs:
        verb = "stops at" if steps < by_epochs else "runs"
        line += f", but {name} {verb} {_count(steps, 'step')} (max_steps)"
        if seen < 1:
            return f"{line}, so it sees {min(n_train, steps * per_step):,} of the {n_train:,} rows once."
        return f"{line}, so it sees each row about {seen:.1f} times."
    if seen < 1.05:
        return f"{line}: {name} sees each row once."
    return f"{line}: {name} sees each row {seen:.1f} times."
