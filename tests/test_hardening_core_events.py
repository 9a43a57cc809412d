"""Issue 12: run records that survive a bad line, and a status file that a full disk cannot leave stale."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest

from studio.events import read_events, read_status, replay, write_status

BAD_LINES = [[1, 2, 3], None, "x", 5, {"type": "log", "step": None, "loss": 1.0},
             {"type": "log", "step": "3", "loss": 1.0}, {"type": "log", "step": 4, "loss": "low"},
             {"type": "eval", "step": 2, "eval_loss": "low"}, {"type": "log", "step": 5, "loss": 1.0,
                                                                "tokens_per_s": "fast"}]


def test_replay_skips_and_counts_events_that_are_not_events():
    good = [{"type": "start", "time": 10.0, "total_steps": 2}, {"type": "log", "time": 11.0, "step": 1, "loss": 2.0},
            {"type": "eval", "time": 12.0, "step": 1, "eval_loss": 1.5}]
    history = replay(good[:1] + BAD_LINES + good[1:])
    assert history.bad_lines == len(BAD_LINES)
    assert history.train_steps == [1] and history.train_loss == [2.0] and history.eval_loss == [1.5]
    assert history.last_log["step"] == 1
    assert (history.first_time, history.last_time) == (10.0, 12.0)
    assert replay(good).bad_lines == 0


def test_a_line_that_is_not_json_is_counted_too(tmp_path):
    lines = [json.dumps({"type": "log", "step": 1, "loss": 1.0}), "not json {", *map(json.dumps, BAD_LINES[:2])]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    history = replay(read_events(tmp_path))
    assert history.train_steps == [1] and history.bad_lines == 3


class FailingWrites:
    """A file whose writes fail as on a full disk (its buffered data could not be flushed either)."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.inner.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def full_disk(monkeypatch, folder: Path):
    """From the moment the returned switch is called, every new write under `folder` fails with ENOSPC; an existing
    file can still be overwritten in place (its blocks are already allocated, as on ext4 or tmpfs)."""
    real_open = io.open
    full = []

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(folder.resolve())
        if full and inside and any(c in mode for c in "wax"):
            return FailingWrites(f)
        return f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)
    return lambda: full.append(True)


def test_write_status_leaves_no_temp_file_and_still_says_failed_on_a_full_disk(tmp_path, monkeypatch):
    write_status(tmp_path, status="running", step=3)
    full_disk(monkeypatch, tmp_path)()
    write_status(tmp_path, status="failed", message="The disk is full: free some space.")
    assert read_status(tmp_path)["status"] == "failed"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    with pytest.raises(OSError):  # a first status cannot be written anywhere: the error is not hidden
        write_status(tmp_path / "missing", status="running")
