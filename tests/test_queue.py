"""The run queue (studio/run_queue.py): runs wait on disk and start one after another, each ending worker handing
the machine to the next; a stopped run pauses it; the server (a fresh one after a restart) goes on with it."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from studio import jobs, run_queue
from studio.config import RunConfig
from studio.errors import UserError
from studio.events import read_events, write_status
from studio.ui import train_tab
from studio.ui.common import UIContext

from .conftest import studio_cmd
from .test_train import tiny_config

WAIT_S = 240  # a tiny run on a busy 2-core machine: seconds to start, a fraction of a second a step


def quick(data, **overrides) -> RunConfig:
    return tiny_config(data, max_steps=4, eval_every=0, **overrides)


def test_entries_are_kept_on_disk_in_order_and_can_be_moved_and_removed(tiny_data, runs_dir):
    a, b, c = (run_queue.add(runs_dir, quick(tiny_data, run_name=name)) for name in ("a", "b", "c"))
    assert [e.name for e in run_queue.entries(runs_dir)] == ["a", "b", "c"]
    assert len({a.id, b.id, c.id}) == 3
    run_queue.move(runs_dir, c.id, 1)
    assert [e.name for e in run_queue.entries(runs_dir)] == ["c", "a", "b"]
    run_queue.move(runs_dir, c.id, 99)  # past the end: last
    assert [e.name for e in run_queue.entries(runs_dir)] == ["a", "b", "c"]
    assert run_queue.remove(runs_dir, b.id).name == "b"
    assert [r["position"] for r in run_queue.describe(runs_dir)] == [1, 2]
    with pytest.raises(UserError, match="No queued entry 'nope'"):
        run_queue.remove(runs_dir, "nope")
    # The entry holds the whole config: it trains as it was queued, whatever the form says later.
    assert run_queue.entries(runs_dir)[0].run_config() == quick(tiny_data, run_name="a")


def test_a_bad_entry_is_refused_when_queued_and_a_damaged_file_is_an_empty_queue(tiny_data, runs_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_queue.add(runs_dir, quick(tmp_path / "gone.jsonl"))
    assert run_queue.entries(runs_dir) == []
    run_queue.queue_file(runs_dir).write_text("{not json")
    assert run_queue.entries(runs_dir) == [] and "damaged" in run_queue.read(runs_dir).problem
    run_queue.add(runs_dir, quick(tiny_data))  # and the next add writes a good file again, the bad one kept
    assert len(json.loads(run_queue.queue_file(runs_dir).read_text())["entries"]) == 1
    assert (runs_dir / "queue.json.bad").read_text() == "{not json"
    with pytest.raises(UserError, match=r"already in the queue \(position 1\)"):
        run_queue.add(runs_dir, quick(tiny_data))  # a second press of Add to queue


def test_a_queued_config_holds_absolute_paths(tiny_data, runs_dir, monkeypatch):
    """It starts later from another process, whose working folder may be another."""
    monkeypatch.chdir(tiny_data.parent)
    entry = run_queue.add(runs_dir, quick(tiny_data.name))
    assert entry.config["data_path"] == str(tiny_data.resolve())


def test_an_entry_that_cannot_start_is_taken_out_said_and_the_next_one_starts(tiny_data, runs_dir, tmp_path):
    gone = tmp_path / "gone.jsonl"
    gone.write_text(tiny_data.read_text())
    doomed = run_queue.add(runs_dir, quick(gone, run_name="doomed"))
    good = run_queue.add(runs_dir, quick(tiny_data, run_name="good"))
    gone.unlink()  # the file went away while the entry waited
    started = run_queue.start_next(runs_dir)
    assert started is not None and json.loads((started / "config.json").read_text())["run_name"] == "good"
    problem = run_queue.read(runs_dir).problem
    assert f"The queued run doomed ({doomed.id}) could not start" in problem and "does not exist" in problem
    assert not any(json.loads((p / "config.json").read_text())["run_name"] == "doomed"
                   for p in runs_dir.iterdir() if (p / "config.json").exists())  # no folder for it
    assert run_queue.position(runs_dir, good.id) is None
    assert jobs.wait_for(started, timeout_s=WAIT_S)["status"] == "finished"


def test_adding_to_a_paused_queue_does_not_start_what_the_person_paused(tiny_data, runs_dir):
    paused = run_queue.add(runs_dir, quick(tiny_data, run_name="paused"))
    run_queue.pause(runs_dir)
    result = subprocess.run(studio_cmd("queue", "--runs-dir", str(runs_dir), "add", str(write_config(
        runs_dir.parent / "new.json", quick(tiny_data, run_name="new")))), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    assert "at position 2 (the queue is paused" in result.stdout, result.stdout
    assert [e.name for e in run_queue.entries(runs_dir)] == ["paused", "new"] and paused.id
    assert jobs.active_run(runs_dir) is None


def write_config(path, config: RunConfig):
    config.save(path)
    return path


def test_queued_runs_start_one_after_another_each_handed_on_by_the_run_before(tiny_data, runs_dir):
    first = jobs.start_run(quick(tiny_data, run_name="first"), runs_dir)
    for name in ("second", "third"):
        run_queue.add(runs_dir, quick(tiny_data, run_name=name))
    deadline = time.time() + WAIT_S
    while time.time() < deadline and (run_queue.entries(runs_dir) or jobs.active_run(runs_dir) is not None):
        time.sleep(0.5)
    runs = sorted((p for p in runs_dir.iterdir() if (p / "config.json").exists()), key=lambda p: p.stat().st_mtime)
    assert [json.loads((p / "config.json").read_text())["run_name"] for p in runs] == ["first", "second", "third"]
    assert runs[0] == first
    spans = []
    for run_dir in runs:
        assert jobs.wait_for(run_dir, timeout_s=60)["status"] == "finished"
        events = read_events(run_dir)
        spans.append((events[0]["time"], events[-1]["time"]))
    # One at a time: each run's first event comes after the previous run's last.
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), spans


def test_a_stopped_run_pauses_the_queue_until_the_person_starts_it_again(tiny_data, runs_dir):
    running = jobs.start_run(tiny_config(tiny_data, max_steps=2000, eval_every=0, save_every=0), runs_dir)
    entry = run_queue.add(runs_dir, quick(tiny_data, run_name="next"))
    jobs.wait_for(running, timeout_s=WAIT_S, states=("running",))
    jobs.stop_run(running)
    assert jobs.wait_for(running, timeout_s=WAIT_S)["status"] == "stopped"
    jobs.wait_for_lock(runs_dir).close()  # the stopped worker has ended
    queue = run_queue.read(runs_dir)
    assert queue.paused and [e.id for e in queue.entries] == [entry.id]
    assert run_queue.waiting(runs_dir) is None  # the server's look does not start a paused queue
    result = subprocess.run(studio_cmd("queue", "--runs-dir", str(runs_dir), "start"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("Started "), result
    assert result.stderr == ""
    started = runs_dir / result.stdout.split("Started ", 1)[1].strip().split("/")[-1]
    assert jobs.wait_for(started, timeout_s=WAIT_S)["status"] == "finished"
    assert run_queue.read(runs_dir) == run_queue.Queue()


def test_a_fresh_server_goes_on_with_a_queue_left_on_disk(tiny_data, runs_dir, tmp_path):
    """The queue is only files: after a server restart (or a worker killed before it could hand on), the first
    look of a fresh page starts the next entry and shows the rest."""
    for name in ("waiting-1", "waiting-2"):
        run_queue.add(runs_dir, quick(tiny_data, run_name=name))
    ctx = UIContext(runs_dir=runs_dir, uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    view = train_tab.poll_queue(ctx, None, None)
    live = jobs.active_run(runs_dir)
    assert live is not None and json.loads((live / "config.json").read_text())["run_name"] == "waiting-1"
    assert "1 waiting; the first starts when run" in view.note and view.start["value"].startswith("Add to queue")
    assert list(view.table["Name"]) == ["waiting-2"]
    assert train_tab.poll_queue(ctx, None, view.seen) == train_tab.QueueView()  # nothing changed: nothing drawn
    assert jobs.wait_for(live, timeout_s=WAIT_S)["status"] == "finished"


def test_start_while_a_run_trains_queues_other_settings_and_not_a_second_press(tiny_data, runs_dir, tmp_path):
    live = runs_dir / "20261206-090000-live"
    live.mkdir()
    write_status(live, status="running", pid=os.getpid())  # this test's process: alive, so the run is live
    ctx = UIContext(runs_dir=runs_dir, uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    ctx.uploads_dir.mkdir()
    data = ctx.uploads_dir / "train.jsonl"
    data.write_text(tiny_data.read_text())
    names = ["model", "data_path", "max_steps", "eval_every", "learning_rate", "batch_size", "max_seq_length",
             "lora_rank", "lora_alpha", "lora_dropout", "validation_fraction", "save_every", "warmup_ratio",
             "lr_scheduler", "report_card"]

    def values(config: RunConfig) -> list:
        return [getattr(config, n) for n in names]

    same = quick(data)
    live_config = RunConfig(**{**quick(tiny_data).to_dict(), "data_path": str(data)})
    live_config.save(live / "config.json")
    view = train_tab.start_training(ctx, names, *values(same))
    assert "is training with these settings" in view.notice and run_queue.entries(runs_dir) == []
    view = train_tab.start_training(ctx, names, *values(quick(data, learning_rate=1e-3)))
    assert "waits in the queue (position 1)" in view.notice
    assert run_queue.entries(runs_dir)[0].config["learning_rate"] == 1e-3


def test_a_queued_settings_search_starts_when_the_run_before_it_ends(tiny_data, runs_dir):
    from studio import tune

    first = jobs.start_run(quick(tiny_data, run_name="first"), runs_dir)
    space = tune.SearchSpace(max_steps=(2, 2), lora_rank=(4,))
    entry = run_queue.add(runs_dir, tiny_config(tiny_data, max_steps=4, eval_every=1), kind="sweep",
                          sweep=run_queue.sweep_fields(60, space, max_trials=1))
    assert entry.name == "settings search on train.jsonl"
    assert jobs.wait_for(first, timeout_s=WAIT_S)["status"] == "finished"
    deadline = time.time() + WAIT_S
    while time.time() < deadline and not tune.sweep_dirs(runs_dir):
        time.sleep(0.5)
    (sweep_dir,) = tune.sweep_dirs(runs_dir)
    record = tune.wait_for_sweep(sweep_dir, timeout_s=WAIT_S)
    assert record["status"] == "finished" and len(record["trials"]) == 1, record
    assert run_queue.entries(runs_dir) == []


def test_an_entry_added_from_a_shell_while_the_last_run_closes_is_started_not_stranded(tiny_data, runs_dir):
    """The run that ends looked at the queue before this entry came; its process still holds the lock for a moment
    (torch's teardown). `queue add` waits that moment out, as a start does, instead of leaving the entry behind."""
    import sys

    ended = runs_dir / "20261206-080000-ended"
    ended.mkdir()
    quick(tiny_data).save(ended / "config.json")
    write_status(ended, status="finished")
    jobs.try_lock(runs_dir).close()  # makes the lock file
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, sys.argv[2].encode(), 0); "
                               "print('held', flush=True); time.sleep(1.5)",
         str(runs_dir / jobs.LOCK_FILE), ended.name], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = runs_dir.parent / "late.json"
        quick(tiny_data, run_name="late").save(config)
        result = subprocess.run(studio_cmd("queue", "--runs-dir", str(runs_dir), "add", str(config)),
                                capture_output=True, text=True, timeout=120)
    finally:
        holder.wait(timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("Started late now"), result
    assert run_queue.entries(runs_dir) == []
    started = jobs.active_run(runs_dir) or max(runs_dir.glob("*-late"))
    assert jobs.wait_for(started, timeout_s=WAIT_S)["status"] == "finished"
