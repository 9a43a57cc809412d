"""Start, stop and watch training worker processes; list, compare and delete runs on disk.

The UI server calls these; the worker is `python -m studio train`, a child process in its own
session, so the server survives whatever happens to it and vice versa.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .events import (
    CONFIG_FILE,
    FINAL,
    LIVE,
    LOG_FILE,
    PID_FILE,
    STOP_FILE,
    read_events,
    read_status,
    replay,
    write_status,
)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
STOP_GRACE_S = 60.0  # after this long without the worker noticing STOP, it is sent SIGTERM


class RunBusyError(UserError):
    pass


def validate_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id or "") or ".." in run_id:
        raise UserError(f"{run_id!r} is not a valid run id: use letters, digits, '.', '_' and '-' only.")
    return run_id


def run_path(runs_dir: Path, run_id: str) -> Path:
    """The folder of a run, refusing ids that would escape runs_dir."""
    path = (Path(runs_dir) / validate_run_id(run_id)).resolve()
    if path.parent != Path(runs_dir).resolve():
        raise UserError(f"{run_id!r} is not a valid run id.")
    return path


def new_run_id(config: RunConfig) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", config.run_name or Path(config.data_path).stem or "run").strip("-")[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug or 'run'}"


def create_run_dir(config: RunConfig, runs_dir: Path, run_id: str | None = None) -> Path:
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id(config)
    path = run_path(runs_dir, run_id)
    suffix = 1
    while path.exists():
        suffix += 1
        path = run_path(runs_dir, f"{run_id}-{suffix}")
    path.mkdir()
    config.save(path / CONFIG_FILE)
    write_status(path, status="starting")
    return path


# --- process control --------------------------------------------------------------------
def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our exited child not yet reaped) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def run_state(run_dir: Path) -> dict:
    """status.json, corrected when the worker died without saying so (SIGKILL, power loss)."""
    status = read_status(run_dir)
    state = status.get("status", "unknown")
    if state in LIVE:
        pid = status.get("pid") or _read_pid(run_dir)
        started = status.get("updated", 0)
        # A run that says it is live but whose worker is gone was killed: say so.
        if not _pid_alive(pid) and time.time() - started > 2.0:
            message = ("The training process ended unexpectedly (killed, or out of system memory); "
                       "resume continues from the last checkpoint.")
            events = replay(read_events(run_dir))
            if not events.error and not events.end:
                from .events import EventWriter

                writer = EventWriter(run_dir)
                writer.write("error", message=message, kind="killed", log_tail=_tail(run_dir / LOG_FILE))
                writer.close()
            status = {**status, "status": "failed", "message": message}
            write_status(run_dir, **{k: v for k, v in status.items() if k != "updated"})
    return status


def _read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def active_run(runs_dir: Path) -> Path | None:
    """The run currently training, if any (one at a time per machine)."""
    for run_dir in _run_dirs(runs_dir):
        if run_state(run_dir).get("status") in LIVE:
            return run_dir
    return None


def ensure_none_training(runs_dir: Path) -> None:
    """One run at a time per machine: a second start is refused with one sentence."""
    busy = active_run(runs_dir)
    if busy is not None:
        raise RunBusyError(f"Run {busy.name} is still training: wait for it to finish or stop it first "
                           f"(one run at a time per machine).")


def start_run(config: RunConfig, runs_dir: Path, run_id: str | None = None) -> Path:
    """Start a worker process for config and return its run folder; refuses a second live run."""
    ensure_none_training(runs_dir)
    run_dir = create_run_dir(config, runs_dir, run_id)
    _spawn(run_dir, ["--resume", str(run_dir)], config_path=run_dir / CONFIG_FILE, fresh=True)
    return run_dir


def resume_run(runs_dir: Path, run_id: str) -> Path:
    run_dir = run_path(runs_dir, run_id)
    if not run_dir.is_dir():
        raise UserError(f"Run {run_id} does not exist.")
    state = run_state(run_dir).get("status")
    if state in LIVE:
        raise RunBusyError(f"Run {run_id} is already training.")
    busy = active_run(runs_dir)
    if busy is not None:
        raise RunBusyError(f"Run {busy.name} is still training: stop it before resuming another.")
    write_status(run_dir, status="starting")
    _spawn(run_dir, ["--resume", str(run_dir)], config_path=run_dir / CONFIG_FILE, fresh=False)
    return run_dir


def _spawn(run_dir: Path, extra: list[str], config_path: Path, fresh: bool):
    # A fresh run is also started via --resume on its own folder: with no checkpoint yet it
    # starts at step 0, and the folder (and its id) already exists for the UI to show.
    cmd = [sys.executable, "-m", "studio", "train", str(config_path), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "worker.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=os.getcwd())
    (run_dir / PID_FILE).write_text(str(proc.pid))
    write_status(run_dir, status="starting", pid=proc.pid)
    _children.append(proc)


_children: list[subprocess.Popen] = []  # kept so finished workers are reaped, not left as zombies


def reap_children():
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


def stop_run(run_dir: Path, grace_s: float = STOP_GRACE_S) -> None:
    """Ask the worker to stop (it saves the adapter and a checkpoint); SIGTERM if it does not in time."""
    (run_dir / STOP_FILE).touch()
    pid = read_status(run_dir).get("pid") or _read_pid(run_dir)
    if grace_s <= 0 or not pid:
        return

    def escalate():
        deadline = time.time() + grace_s
        while time.time() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.5)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    import threading

    threading.Thread(target=escalate, daemon=True).start()


def wait_for(run_dir: Path, timeout_s: float = 600.0, states=FINAL) -> dict:
    """Block until the run reaches one of `states` (tests and the CLI use this)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        reap_children()
        status = run_state(run_dir)
        if status.get("status") in states:
            return status
        time.sleep(0.3)
    raise TimeoutError(f"run {run_dir.name} did not reach {states} in {timeout_s} s")


# --- history ----------------------------------------------------------------------------
@dataclass
class RunSummary:
    run_id: str
    path: Path
    model: str
    data: str
    method: str
    status: str
    step: int
    total_steps: int
    best_eval_loss: float | None
    last_train_loss: float | None
    duration_s: float
    started: float
    message: str = ""


def _run_dirs(runs_dir: Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if p.is_dir() and (p / CONFIG_FILE).exists()),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def summarize(run_dir: Path) -> RunSummary:
    status = run_state(run_dir)
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    events = read_events(run_dir)
    history = replay(events)
    times = [e.get("time", 0) for e in events]
    start = history.start or {}
    return RunSummary(
        run_id=run_dir.name, path=run_dir, model=config.get("model", "?"),
        data=Path(config.get("data_path", "")).name, method=start.get("method") or config.get("method", "?"),
        status=status.get("status", "unknown"), step=history.train_steps[-1] if history.train_steps else 0,
        total_steps=int(status.get("total_steps") or start.get("total_steps") or 0),
        best_eval_loss=history.best_eval_loss,
        last_train_loss=history.train_loss[-1] if history.train_loss else None,
        duration_s=(max(times) - min(times)) if times else 0.0, started=min(times) if times else 0.0,
        message=status.get("message", ""))


def list_runs(runs_dir: Path) -> list[RunSummary]:
    return [summarize(p) for p in _run_dirs(runs_dir)]


def finished_runs(runs_dir: Path) -> list[RunSummary]:
    """Runs with a saved adapter (finished or stopped): what the Chat tab can load."""
    return [s for s in list_runs(runs_dir) if (s.path / "adapter" / "adapter_config.json").exists()]


def delete_run(runs_dir: Path, run_id: str) -> None:
    run_dir = run_path(runs_dir, run_id)
    if not run_dir.is_dir():
        raise UserError(f"Run {run_id} does not exist.")
    if run_state(run_dir).get("status") in LIVE:
        raise RunBusyError(f"Run {run_id} is still training: stop it before deleting it.")
    shutil.rmtree(run_dir)


def config_differences(run_dirs: list[Path]) -> dict[str, list]:
    """Settings that differ between runs: {field: [value in each run]}."""
    configs = []
    for d in run_dirs:
        try:
            configs.append(json.loads((Path(d) / CONFIG_FILE).read_text()))
        except (OSError, json.JSONDecodeError):
            configs.append({})
    keys = sorted({k for c in configs for k in c})
    return {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def log_tail(run_dir: Path, lines: int = 20) -> str:
    return _tail(Path(run_dir) / LOG_FILE, lines)
