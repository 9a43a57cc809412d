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

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
CONFIG_FILE = "config.json"
LOG_FILE = "worker.log"
STOP_FILE = "STOP"
PID_FILE = "worker.pid"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"

# Statuses a run can be in. "running" and "queued" are live; the rest are final.
LIVE = ("starting", "running", "stopping")
FINAL = ("finished", "stopped", "failed")


class EventWriter:
    """Appends events to runs/<id>/events.jsonl, one flushed line each."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._file = open(self.run_dir / EVENTS_FILE, "a", encoding="utf-8")

    def write(self, type_: str, **data) -> dict:
        event = {"type": type_, "time": time.time(), **data}
        self._file.write(json.dumps(event, default=str) + "\n")
        self._file.flush()
        return event

    def close(self):
        self._file.close()


def read_events(run_dir: str | Path) -> list[dict]:
    """Every complete event so far. A half-written last line (the worker mid-write) is skipped."""
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
                continue
    return events


def write_status(run_dir: str | Path, **status) -> None:
    """Replace status.json atomically so a reader never sees half a file."""
    run_dir = Path(run_dir)
    status["updated"] = time.time()
    tmp = run_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / STATUS_FILE)


def read_status(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@dataclass
class RunHistory:
    """The curves and facts of one run, rebuilt from its events."""

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    last_log: dict = field(default_factory=dict)
    start: dict = field(default_factory=dict)
    end: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    checkpoints: list[dict] = field(default_factory=list)

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


def replay(events: list[dict]) -> RunHistory:
    """Fold the event list into curves. A resumed run repeats steps: the later value wins."""
    history = RunHistory()
    train: dict[int, tuple[float, float]] = {}
    evals: dict[int, float] = {}
    for event in events:
        kind = event.get("type")
        if kind == "start":
            history.start = event
            history.end, history.error = {}, {}  # a resume starts a new segment
        elif kind == "log" and event.get("loss") is not None:
            train[int(event["step"])] = (float(event["loss"]), float(event.get("learning_rate") or 0.0))
            history.last_log = event
        elif kind == "eval" and event.get("eval_loss") is not None:
            evals[int(event["step"])] = float(event["eval_loss"])
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
    return history


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard shows it)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out
