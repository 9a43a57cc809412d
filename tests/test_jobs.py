"""The run as a process: stop, resume, a killed worker, one run at a time, history."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from studio import jobs
from studio.errors import UserError
from studio.events import read_events, replay, write_status

from .test_train import tiny_config


def wait_until(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met")


def steps_done(run_dir) -> int:
    history = replay(read_events(run_dir))
    return history.train_steps[-1] if history.train_steps else 0


def test_stop_saves_adapter_then_resume_continues_the_curve(tiny_data, runs_dir):
    config = tiny_config(tiny_data, max_steps=400, save_every=5, eval_every=0, validation_fraction=0.0)
    run_dir = jobs.start_run(config, runs_dir)
    wait_until(lambda: steps_done(run_dir) >= 6)
    # A second start while this one trains is refused with a clear sentence.
    with pytest.raises(jobs.RunBusyError, match="still training"):
        jobs.start_run(config, runs_dir)
    jobs.stop_run(run_dir)
    status = jobs.wait_for(run_dir, timeout_s=120)
    assert status["status"] == "stopped"
    stopped_at = steps_done(run_dir)
    assert stopped_at < 400
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / f"checkpoint-{status['step']}").is_dir()

    jobs.resume_run(runs_dir, run_dir.name)
    wait_until(lambda: steps_done(run_dir) >= stopped_at + 3)
    jobs.stop_run(run_dir)
    assert jobs.wait_for(run_dir, timeout_s=120)["status"] == "stopped"
    history = replay(read_events(run_dir))
    # Resumed from the checkpoint: the step count goes on instead of starting again at 1.
    assert history.start["resumed_from"] == stopped_at
    assert history.train_steps == list(range(1, history.train_steps[-1] + 1))


def test_killed_worker_shows_failed_and_can_resume(tiny_data, runs_dir):
    config = tiny_config(tiny_data, max_steps=400, save_every=3, eval_every=0, validation_fraction=0.0)
    run_dir = jobs.start_run(config, runs_dir)
    wait_until(lambda: (run_dir / "checkpoints" / "checkpoint-3").is_dir() and steps_done(run_dir) >= 4)
    pid = jobs.read_status(run_dir)["pid"]
    os.kill(pid, signal.SIGKILL)
    status = jobs.wait_for(run_dir, timeout_s=30)
    assert status["status"] == "failed"
    assert "ended unexpectedly" in replay(read_events(run_dir)).error["message"]
    # The saved checkpoint is still usable.
    jobs.resume_run(runs_dir, run_dir.name)
    wait_until(lambda: replay(read_events(run_dir)).start.get("resumed_from") is not None)
    assert replay(read_events(run_dir)).start["resumed_from"] >= 3
    jobs.stop_run(run_dir)
    assert jobs.wait_for(run_dir, timeout_s=120)["status"] == "stopped"


def test_history_lists_compares_and_deletes(tiny_data, runs_dir):
    from studio import train

    a = jobs.create_run_dir(tiny_config(tiny_data, max_steps=2, eval_every=0, run_name="a"), runs_dir)
    train.run(tiny_config(tiny_data, max_steps=2, eval_every=0, run_name="a"), a)
    b = jobs.create_run_dir(tiny_config(tiny_data, max_steps=3, eval_every=0, run_name="b", lora_rank=4), runs_dir)
    train.run(tiny_config(tiny_data, max_steps=3, eval_every=0, run_name="b", lora_rank=4), b)
    summaries = {s.run_id: s for s in jobs.list_runs(runs_dir)}
    assert summaries[a.name].status == "finished" and summaries[b.name].step == 3
    assert {s.run_id for s in jobs.finished_runs(runs_dir)} == {a.name, b.name}
    diffs = jobs.config_differences([a, b])
    assert diffs["lora_rank"] == [8, 4] and diffs["max_steps"] == [2, 3] and "model" not in diffs
    jobs.delete_run(runs_dir, a.name)
    assert not a.exists()
    with pytest.raises(UserError, match="not a valid run id"):
        jobs.delete_run(runs_dir, "../etc")


def test_stop_ends_a_paused_or_hung_worker(tmp_path):
    # A worker that ignores the stop file and SIGTERM, and is paused with SIGSTOP on top: Stop must still end it.
    hung = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    threading.Thread(target=hung.wait, daemon=True).start()  # reaped as the server reaps its workers
    try:
        assert hung.stdout.readline().strip() == "ready"
        os.kill(hung.pid, signal.SIGSTOP)
        write_status(tmp_path, status="running", pid=hung.pid, step=7)
        jobs.stop_run(tmp_path, grace_s=0.5)
        wait_until(lambda: jobs.run_state(tmp_path).get("status") == "stopped", timeout=20)
        assert hung.poll() is not None or not jobs._pid_alive(hung.pid)
        assert "Resume continues" in jobs.run_state(tmp_path)["message"]
    finally:
        hung.kill()
