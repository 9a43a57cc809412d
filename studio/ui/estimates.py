"""What the Settings and Train tabs say about time and memory: the estimate before a run, then the pace the run
itself measures. Before the first step only the estimate exists (a speed assumed or remembered from an earlier run);
once steps exist their own time is the better guess: a busy machine can be several times slower than assumed."""

from __future__ import annotations

from dataclasses import dataclass

from .. import jobs
from ..events import read_events, replay
from .common import UIContext, client_config, user_message


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


@dataclass
class Pace:
    """A run's speed so far, from its status and events."""

    steps: int  # training steps timed (a resumed run counts from where it resumed)
    step_s: float  # seconds per step, validation passes included
    elapsed_s: float
    left_s: float  # at this pace, to the last step
    tokens_per_s: float


def measured_pace(status: dict, history) -> Pace | None:
    """The pace of a run from its status.json (`status`) and replayed events; None before its first step."""
    step = max(int(status.get("step") or 0), history.train_steps[-1] if history.train_steps else 0)
    first = int(history.start.get("resumed_from") or 0)
    elapsed = float(status.get("elapsed_s") or history.last_log.get("elapsed_s") or 0)
    total = int(status.get("total_steps") or history.start.get("total_steps") or 0)
    if step <= first or elapsed <= 0 or not total:
        return None
    step_s = elapsed / (step - first)
    return Pace(steps=step - first, step_s=step_s, elapsed_s=elapsed, left_s=step_s * max(total - step, 0),
                tokens_per_s=float(status.get("tokens_per_s") or history.last_log.get("tokens_per_s") or 0))


def measured_line(run_id: str, pace: Pace) -> str:
    return (f"**Measured so far** (run {run_id}, {pace.steps} steps): {pace.step_s:.1f} s a step, "
            f"{pace.tokens_per_s:,.0f} tokens/s; at this pace the run takes about "
            f"**{fmt_time(pace.elapsed_s + pace.left_s)}** in all, **{fmt_time(pace.left_s)}** left.")


def estimate_text(ctx: UIContext, names: list[str], *values) -> str:
    """The memory and time the form's run needs (or what to fix first); while a run trains, its measured pace
    follows."""
    from ..estimate import estimate_run

    try:
        text = estimate_run(client_config(ctx, names, list(values))).summary()
    except Exception as err:  # noqa: BLE001
        text = f"**Fix this before starting:** {user_message(err)}"
    live = jobs.active_run(ctx.runs_dir)
    pace = live and measured_pace(jobs.run_state(live), replay(read_events(live)))
    return text + "\n\n" + measured_line(live.name, pace) if pace else text
