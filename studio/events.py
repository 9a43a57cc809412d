"""The run's event log (append-only JSONL) and status file: written by the worker, replayed by the UI.

events.jsonl holds one JSON object per line, flushed per line, so any reader - a refreshed
page, a second tab, a restarted server - rebuilds the whole run from the file alone:
  {"type": "start", "time": ..., "total_steps": ..., ...}
  {"type": "log", "step": 3, "loss": 2.1, "learning_rate": 1e-4, "epoch": 0.1, "tokens_per_s": ..., ...}
  {"type": "eval", "step": 20, "eval_loss": 1.9}
  {"type": "checkpoint", "step": 50, "path": "checkpoints/checkpoint-50"}
  {"type": "end", "status": "finished" | "stopped", ...}
  {"type": "error", "message": "one sentence for the user", "kind": "oom" | ...}
status.json holds the latest state, replaced atomically (temp file + rename).
"""

from __future__ import annotations

import errno
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .distributed import is_main
from .fileio import write_text

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
CONFIG_FILE = "config.json"
LOG_FILE = "worker.log"
STOP_FILE = "STOP"
PID_FILE = "worker.pid"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"  # peft's marker file: a folder holding it is a saved adapter
CHECKPOINTS_DIR = "checkpoints"

# Statuses a run can be in: LIVE while its worker process trains, FINAL once it has ended.
LIVE = ("starting", "running", "stopping")
FINAL = ("finished", "stopped", "failed", "pruned")  # pruned: a settings-search trial stopped early


class EventWriter:
    """Appends events to runs/<id>/events.jsonl, one flushed line each. In a run of several processes only rank 0
    writes (studio/distributed.py): on the others the writer does nothing, so the training code needs no rank checks
    for its events and a run keeps one log."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._file = open(self.run_dir / EVENTS_FILE, "a", encoding="utf-8") if is_main() else None

    def write(self, type_: str, **data) -> dict:
        event = {"type": type_, "time": time.time(), **data}
        if self._file is not None:
            self._file.write(json.dumps(event, default=str) + "\n")
            self._file.flush()
        return event

    def close(self):
        if self._file is not None:
            self._file.close()


def read_events(run_dir: str | Path) -> list:
    """Every complete line so far, parsed. A half-written last line (the worker mid-write) is skipped; a complete
    line that is not JSON is kept as None, so that replay counts it with the other lines that are not events."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # still being written
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                events.append(None)
    return events


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_status(run_dir: str | Path, **status) -> None:
    """Replace status.json atomically so a reader never sees half a file.

    On a full disk the temp file cannot be written: it is removed, and status.json is overwritten in place instead
    (its blocks are already allocated), so that a run failing for want of space still says "failed".

    Like EventWriter, only rank 0 of a run of several processes writes it."""
    if not is_main():
        return
    run_dir = Path(run_dir)
    status["updated"] = time.time()
    text = json.dumps(status, default=str)
    try:
        write_text(run_dir / STATUS_FILE, text)
    except OSError as err:
        if err.errno not in DISK_FULL_ERRNOS or not _overwrite_in_place(run_dir / STATUS_FILE, text):
            raise


def _overwrite_in_place(path: Path, text: str) -> bool:
    """Write text over an existing file without allocating (a status is far below one block); False if impossible."""
    try:
        with open(path, "r+b") as f:
            f.write(text.encode("utf-8"))
            f.truncate()
        return True
    except OSError:
        return False


def has_adapter(run_dir: str | Path) -> bool:
    """Whether the run has saved its adapter (finished, or stopped): what chat and export need."""
    return (Path(run_dir) / ADAPTER_DIR / ADAPTER_CONFIG).is_file()


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    """The last lines of the run's worker.log ("" when there is none): shown under a failed run."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_status(run_dir: str | Path) -> dict:
    """status.json as a dict; {} when it is missing, half-written or not an object."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return status if isinstance(status, dict) else {}


@dataclass
class RunHistory:
    """The curves and facts of one run, rebuilt from its events."""

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    # Preference runs (DPO, ORPO): how much more likely the model finds the chosen answer than the rejected one
    # (TRL's reward margin) and the share of pairs where it prefers the chosen one, per logged / evaluated step.
    reward_steps: list[int] = field(default_factory=list)
    reward_margin: list[float] = field(default_factory=list)
    reward_accuracy: list[float] = field(default_factory=list)
    eval_reward_steps: list[int] = field(default_factory=list)
    eval_reward_margin: list[float] = field(default_factory=list)
    last_log: dict = field(default_factory=dict)
    start: dict = field(default_factory=dict)
    end: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    checkpoints: list[dict] = field(default_factory=list)
    bad_lines: int = 0  # lines that are not events (damaged, or written by something else): skipped, not fatal
    first_time: float | None = None  # time of the first and the latest event, seconds since the epoch
    last_time: float | None = None

    @property
    def best_eval_loss(self) -> float | None:
        """The lowest validation loss the adapter reached: step 0 (the untouched model) does not count."""
        return min((loss for step, loss in zip(self.eval_steps, self.eval_loss) if step > 0), default=None)

    @property
    def validation_before_after(self) -> tuple[float, float] | None:
        """(validation loss of the untouched model at step 0, the latest one), once both are measured."""
        if len(self.eval_steps) >= 2 and self.eval_steps[0] == 0:
            return self.eval_loss[0], self.eval_loss[-1]
        return None


# Fields read as numbers by the replay and the UI, per event type: an event whose field holds anything else (text,
# a list) is not one of ours and is skipped, so no reader ever has to check a field's type again.
_NUMBER_FIELDS = {
    "start": ("total_steps", "resumed_from", "epochs"),
    "log": ("loss", "learning_rate", "epoch", "grad_norm", "elapsed_s", "eta_s", "tokens_per_s", "memory_gb",
            "total_steps", "reward_margin", "reward_accuracy"),
    "eval": ("eval_loss", "reward_margin", "reward_accuracy"),
    "checkpoint": (),
    "end": ("step", "peak_memory_gb"),
    "error": (),
}
_STEP_EVENTS = ("log", "eval", "checkpoint")  # these need a whole step number


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_event(event) -> bool:
    """A dict with a text type whose known fields hold what they should. A type this version does not know (a
    newer writer's) is an event too: replay passes it by without counting it as bad."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return False
    kind = event["type"]
    if kind in _STEP_EVENTS:
        step = event.get("step")
        if not _is_number(step) or not math.isfinite(step) or step != int(step):
            return False
    if not all(event.get(name) is None or _is_number(event[name]) for name in _NUMBER_FIELDS.get(kind, ())):
        return False
    return event.get("time") is None or _is_number(event["time"])


def replay(events: list) -> RunHistory:
    """Fold the event list into curves. A resumed run repeats steps: the later value wins.

    A line that is not an event (see _is_event) is counted in bad_lines and skipped: one damaged line must not
    hide a run, nor fail the worker that re-reads its own log."""
    history = RunHistory()
    train: dict[int, tuple[float, float]] = {}
    evals: dict[int, float] = {}
    rewards: dict[int, tuple[float, float]] = {}  # step -> (margin, accuracy)
    eval_rewards: dict[int, float] = {}
    for event in events:
        if not _is_event(event):
            history.bad_lines += 1
            continue
        kind = event["type"]
        when = event.get("time")
        if when is not None:
            history.first_time = when if history.first_time is None else min(history.first_time, when)
            history.last_time = when if history.last_time is None else max(history.last_time, when)
        if kind == "start":
            history.start = event
            history.end, history.error = {}, {}  # a resume starts a new segment
        elif kind == "log" and event.get("loss") is not None:
            train[int(event["step"])] = (float(event["loss"]), float(event.get("learning_rate") or 0.0))
            history.last_log = event
            if event.get("reward_margin") is not None:
                rewards[int(event["step"])] = (float(event["reward_margin"]),
                                               float(event.get("reward_accuracy") or 0.0))
        elif kind == "eval" and event.get("eval_loss") is not None:
            evals[int(event["step"])] = float(event["eval_loss"])
            if event.get("reward_margin") is not None:
                eval_rewards[int(event["step"])] = float(event["reward_margin"])
        elif kind == "checkpoint":
            history.checkpoints.append(event)
        elif kind == "end":
            history.end = event
        elif kind == "error":
            history.error = event
    for step in sorted(train):
        history.train_steps.append(step)
        history.train_loss.append(train[step][0])
        history.learning_rate.append(train[step][1])
    for step in sorted(evals):
        history.eval_steps.append(step)
        history.eval_loss.append(evals[step])
    for step in sorted(rewards):
        history.reward_steps.append(step)
        history.reward_margin.append(rewards[step][0])
        history.reward_accuracy.append(rewards[step][1])
    for step in sorted(eval_rewards):
        history.eval_reward_steps.append(step)
        history.eval_reward_margin.append(eval_rewards[step])
    return history


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard shows it)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out
