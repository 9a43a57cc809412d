"""Issue 12, the core part: one run at a time across processes, reaped workers, run lists and workers that survive a
bad line, data paths checked before anything reads them, a full disk, stalled workers. (Replay and the status file
alone: test_hardening_core_events.py; settings: test_hardening_core_config.py.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio import jobs, train
from studio.config import RunConfig
from studio.errors import DataError
from studio.events import FINAL, EventWriter, read_events, read_status, replay

from .conftest import studio_cmd
from .test_hardening_core_events import BAD_LINES, FailingWrites, full_disk
from .test_train import tiny_config


def run_folders(runs_dir: Path) -> list[Path]:
    return [p for p in Path(runs_dir).iterdir() if p.is_dir()] if Path(runs_dir).is_dir() else []


def wait_until(predicate, timeout=120.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not met in {timeout} s")


# --- 1. one run at a time, for real ------------------------------------------------------------------------------
def test_five_cli_trainings_started_together_give_one_run(tiny_data, tmp_path):
    runs_dir = tmp_path / "runs"
    config_path = tmp_path / "config.json"
    tiny_config(tiny_data, max_steps=400, eval_every=0, validation_fraction=0.0).save(config_path)
    procs = [subprocess.Popen(studio_cmd("train", str(config_path), "--runs-dir", str(runs_dir)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    try:
        # The four refused ones exit at once; the one that trains goes on until it is stopped below.
        wait_until(lambda: sum(p.poll() is not None for p in procs) >= 4, timeout=90, what="four refusals")
        refused = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p.poll() is None]
        for p in refused:
            err = p.stderr.read()
            assert p.returncode == 1, err
            assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
            assert "still training" in err and "one run at a time" in err
        (run_dir,) = run_folders(runs_dir)
        wait_until(lambda: replay(read_events(run_dir)).start, timeout=120, what="training started")
        (run_dir / "STOP").touch()
        out, err = winner.communicate(timeout=120)
        assert winner.returncode == 0, err
        assert Path(out.strip()) == run_dir and read_status(run_dir)["status"] == "stopped"
        assert run_folders(runs_dir) == [run_dir]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_threads_starting_at_once_give_one_run(tiny_data, runs_dir, monkeypatch):
    create = jobs.create_run_dir

    def slow_create(*args, **kwargs):  # widens the window between the busy check and the new folder
        time.sleep(0.5)
        return create(*args, **kwargs)

    monkeypatch.setattr(jobs, "create_run_dir", slow_create)
    config = tiny_config(tiny_data, max_steps=1, eval_every=0, validation_fraction=0.0)
    barrier = threading.Barrier(2)
    started, refused = [], []

    def start():
        barrier.wait()
        try:
            started.append(jobs.start_run(config, runs_dir))
        except jobs.RunBusyError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for run_dir in started:
        jobs.wait_for(run_dir, timeout_s=120)
    assert len(started) == 1 and len(refused) == 1, (started, refused)
    assert "one run at a time" in refused[0]
    assert run_folders(runs_dir) == started


def test_the_runs_lock_is_public_and_refuses_a_second_holder(tiny_data, runs_dir):
    with jobs.runs_lock(runs_dir) as lock:
        assert jobs.try_lock(runs_dir) is None  # a sweep or a queue asks the same lock
        with pytest.raises(jobs.RunBusyError, match="one run at a time"):
            jobs.ensure_none_training(runs_dir)
        with pytest.raises(jobs.RunBusyError, match="still training"):
            jobs.start_run(tiny_config(tiny_data), runs_dir)
        lock.note("20240101-000000-other")
    assert run_folders(runs_dir) == []
    again = jobs.try_lock(runs_dir)
    assert again is not None
    again.close()


# --- 2. finished workers are reaped -----------------------------------------------------------------------------
def test_a_finished_worker_is_not_left_a_zombie(tiny_data, runs_dir):
    run_dir = jobs.start_run(tiny_config(tiny_data, max_steps=1, eval_every=0, validation_fraction=0.0), runs_dir)
    pid = read_status(run_dir)["pid"]
    # Only the files are watched here: nothing waits on the process.
    wait_until(lambda: read_status(run_dir).get("status") in FINAL, timeout=120, what="run finished")

    def reaped() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[-1].split()[0] != "Z" and not jobs._pid_alive(pid)
        except FileNotFoundError:
            return True

    wait_until(reaped, timeout=20, what="worker reaped")


# --- 3. run records that survive a bad line (replay itself: test_hardening_core_events.py) ------------------------
def fake_run(runs_dir: Path, name: str, event_lines: list, status=None, config=None) -> Path:
    run_dir = runs_dir / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config if config is not None else {"model": "m"}))
    (run_dir / "status.json").write_text(json.dumps(status if status is not None else {"status": "finished"}))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in event_lines))
    return run_dir


def test_the_run_list_shows_every_run_whatever_its_files_hold(runs_dir):
    fine = fake_run(runs_dir, "fine", [{"type": "start", "time": 1.0}, {"type": "log", "time": 2.0, "step": 3,
                                                                        "loss": 1.0}])
    fake_run(runs_dir, "bad-events", [{"type": "start", "time": 1.0}, *BAD_LINES])
    fake_run(runs_dir, "bad-status", [], status=[1, 2], config=None)
    fake_run(runs_dir, "bad-values", [], status={"status": "running", "pid": "x", "updated": "y",
                                                 "total_steps": "many"}, config=[1])
    summaries = {s.run_id: s for s in jobs.list_runs(runs_dir)}
    assert set(summaries) == {"fine", "bad-events", "bad-status", "bad-values"}
    assert summaries["fine"].step == 3 and summaries["fine"].duration_s == 1.0
    assert summaries["bad-events"].status == "finished"
    assert jobs.summarize(fine).last_train_loss == 1.0


def test_a_bad_line_in_its_own_log_never_fails_a_finished_run(tiny_data, tmp_path, monkeypatch):
    write = EventWriter.write

    def write_then_garbage(self, type_, **data):
        event = write(self, type_, **data)
        if type_ == "log":  # something else appends lines that are JSON but not events
            for bad in BAD_LINES:
                self._file.write(json.dumps(bad) + "\n")
            self._file.flush()
        return event

    monkeypatch.setattr(EventWriter, "write", write_then_garbage)
    run_dir = tmp_path / "run"
    status = train.run(tiny_config(tiny_data, max_steps=2, eval_every=0, validation_fraction=0.0), run_dir)
    assert status == "finished", (run_dir / "worker.log").read_text()[-2000:]
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert read_status(run_dir)["status"] == "finished"
    history = replay(read_events(run_dir))
    assert history.train_steps == [1, 2] and history.bad_lines == 2 * len(BAD_LINES)


# --- 4. data paths checked before anything reads them -----------------------------------------------------------
def cli_refuses(tmp_path, data_path, words):
    runs_dir = tmp_path / "runs"
    config_path = tmp_path / "config.json"
    tiny_config(data_path).save(config_path)
    started = time.time()
    out = subprocess.run(studio_cmd("train", str(config_path), "--runs-dir", str(runs_dir)), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("Error: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for word in words:
        assert word in out.stderr
    assert run_folders(runs_dir) == []
    return time.time() - started


def test_cli_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    cli_refuses(tmp_path, fifo, ["pipe.jsonl", "not a regular file"])


def test_cli_refuses_dev_zero_at_once(tmp_path):
    cli_refuses(tmp_path, "/dev/zero", ["/dev/zero", "not a regular file"])


def test_cli_refuses_a_huge_sparse_file_without_reading_it(tmp_path):
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as f:
        f.truncate(2 * 2**30)
    cli_refuses(tmp_path, huge, ["huge.jsonl", "200 MB"])


@pytest.mark.parametrize("kind", ["sparse", "folder", "fifo", "dev-zero"])
def test_start_run_checks_the_data_file_before_making_a_folder(tmp_path, runs_dir, kind):
    path = {"sparse": tmp_path / "huge.jsonl", "folder": tmp_path / "data", "fifo": tmp_path / "pipe.jsonl",
            "dev-zero": Path("/dev/zero")}[kind]
    if kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(2 * 2**30)
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    started = time.time()
    with pytest.raises(DataError) as info:
        jobs.start_run(tiny_config(path), runs_dir)
    assert time.time() - started < 2.0
    assert path.name in str(info.value) and len(str(info.value).splitlines()) == 1
    assert run_folders(runs_dir) == []


def test_the_size_limit_is_the_data_modules_own(tiny_data, runs_dir, monkeypatch):
    from studio import data

    monkeypatch.setattr(data, "DEFAULT_MAX_BYTES", 100)  # one home for the limit: changed there, obeyed here
    with pytest.raises(DataError, match="above the"):
        jobs.start_run(tiny_config(tiny_data), runs_dir)
    assert run_folders(runs_dir) == []


# --- 5. a full disk (the status file itself: test_hardening_core_events.py) ----------------------------------------
def test_a_full_disk_is_one_sentence_and_a_failed_status(tiny_data, tmp_path, monkeypatch, capfd):
    runs_dir = tmp_path / "runs"
    config_path = tmp_path / "config.json"
    tiny_config(tiny_data).save(config_path)
    make_full = full_disk(monkeypatch, runs_dir)

    def train_until_the_disk_fills(config, run_dir, writer, resume, callbacks=()):
        make_full()
        writer._file = FailingWrites(writer._file)  # the events file, already open, cannot grow either
        for handler in logging.getLogger().handlers:
            if getattr(handler, "baseFilename", "").startswith(str(run_dir)):
                handler.stream = FailingWrites(handler.stream)  # nor the worker's log
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train, "_train", train_until_the_disk_fills)
    assert train.main([str(config_path), "--runs-dir", str(runs_dir)]) == 1
    out, err = capfd.readouterr()
    (run_dir,) = run_folders(runs_dir)
    assert out.strip() == str(run_dir)
    assert err.startswith("Error: The disk is full") and len(err.strip().splitlines()) == 1, err
    status = read_status(run_dir)
    assert status["status"] == "failed" and "disk is full" in status["message"]
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# --- 7. a worker that makes no progress ---------------------------------------------------------------------------
def test_stalled_for_counts_from_the_last_sign_of_progress(tmp_path):
    now = time.time()
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid(), "updated": now - 300}))
    (tmp_path / "events.jsonl").write_text(json.dumps({"type": "log", "step": 1, "loss": 1.0}) + "\n")
    os.utime(tmp_path / "events.jsonl", (now - 200, now - 200))
    assert jobs.stalled_for(tmp_path, now=now) == pytest.approx(200, abs=1)
    os.utime(tmp_path / "events.jsonl", (now - 500, now - 500))
    assert jobs.stalled_for(tmp_path, now=now) == pytest.approx(300, abs=1)
    # Not live, or not training yet (loading a model or the first validation pass can take minutes): no stall.
    for state in ("finished", "stopped", "failed", "starting"):
        (tmp_path / "status.json").write_text(json.dumps({"status": state, "updated": now - 300}))
        assert jobs.stalled_for(tmp_path, now=now) is None
    assert jobs.stalled_for(tmp_path / "nothing", now=now) is None


def test_a_stopped_worker_shows_as_stalled(tmp_path):
    # A stand-in worker that reports progress twice a second, as the real one does at every step.
    code = ("import sys, time; from studio.events import write_status\n"
            "while True:\n    write_status(sys.argv[1], status='running', step=1); time.sleep(0.2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    try:
        wait_until(lambda: read_status(tmp_path).get("status") == "running", timeout=30, what="worker up")
        assert jobs.stalled_for(tmp_path) < 2
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        assert jobs.stalled_for(tmp_path, now=time.time() + 180) > 120
        assert jobs.run_state(tmp_path)["status"] == "running"  # alive, but stuck: the UI says so, not "failed"
    finally:
        proc.kill()
        proc.wait()


def test_the_worker_reports_progress_during_a_long_evaluation(tmp_path):
    from types import SimpleNamespace

    writer = EventWriter(tmp_path)
    callback = train.EventCallback(tmp_path, writer, RunConfig(), "lora32")
    state = SimpleNamespace(global_step=4, max_steps=10, epoch=0.4, num_input_tokens_seen=0)
    callback.on_train_begin(SimpleNamespace(num_train_epochs=1, world_size=1), state, None)
    before = read_status(tmp_path)["updated"]
    callback.last_status = 0.0  # as if the last report were long ago: a validation pass of many batches
    callback.on_prediction_step(SimpleNamespace(), state, None)
    writer.close()
    status = read_status(tmp_path)
    assert status["updated"] > before and status["status"] == "running" and status["step"] == 4


def test_a_start_right_after_a_run_ended_waits_for_its_process_to_let_go_of_the_lock(tmp_path):
    """A worker writes 'stopped' and then spends a second or two closing (torch's teardown) with the lock still
    held: Resume pressed right after Stop must wait that out, not say the run is still training. A run that still
    trains is refused at once."""
    from studio.events import write_status

    runs = tmp_path / "runs"
    run_dir = runs / "20260101-000000-clinic"
    run_dir.mkdir(parents=True)
    jobs.try_lock(runs).close()  # makes the lock file
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, sys.argv[2].encode(), 0); "
                               "print('held', flush=True); time.sleep(float(sys.argv[3]))",
         str(runs / jobs.LOCK_FILE), run_dir.name, "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        write_status(run_dir, status="running", pid=holder.pid)
        started = time.monotonic()
        assert jobs.wait_for_lock(runs) is None and time.monotonic() - started < 1.0  # still training: no wait
        write_status(run_dir, status="stopped")
        lock = jobs.wait_for_lock(runs)
        assert lock is not None and holder.poll() is not None  # got it once the ending process let go
        lock.close()
    finally:
        holder.kill()
        holder.wait()
