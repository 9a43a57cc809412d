"""Start, stop and watch training worker processes; list, compare and delete runs on disk.

The UI server calls these; the worker is `python -m studio train`, a child process in its own
session, so the server survives whatever happens to it and vice versa.

One run at a time per runs folder: whoever trains holds an exclusive lock (flock) on runs/.train.lock for its
whole life. The UI takes it, creates the run folder, then hands the open lock to the worker it spawns; `studio
train` takes it itself. A sweep or a queue takes the same lock with `runs_lock` / `try_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import feedback
from .config import RunConfig
from .errors import UserError
from .events import (
    CONFIG_FILE,
    EVENTS_FILE,
    FINAL,
    LIVE,
    PID_FILE,
    STOP_FILE,
    has_adapter,
    log_tail,  # noqa: F401 - the UI shows jobs.log_tail under a failed run
    read_events,
    read_status,
    replay,
    write_status,
)

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
STOP_GRACE_S = 60.0  # after this long without the worker noticing STOP, it is sent SIGTERM
LOCK_FILE = ".train.lock"  # inside the runs folder; not a run (no config.json), so never listed
LOCK_FD_ENV = "STUDIO_RUNS_LOCK_FD"  # the number of the lock's file descriptor handed to a spawned worker


class RunBusyError(UserError):
    pass


# --- the runs-folder lock -----------------------------------------------------------------
class RunsLock:
    """An exclusive flock on runs/.train.lock, held while this object's descriptor is open.

    flock belongs to the open file description, not the process: a child that inherits the descriptor holds the
    same lock, and it is released only when the last copy is closed (or its process dies, however it dies). So it
    is never unlocked explicitly, only closed."""

    def __init__(self, fd: int, runs_dir: Path):
        self.fd, self.runs_dir = fd, Path(runs_dir)

    def note(self, run_id: str) -> None:
        """Write the run this lock trains into the lock file, for the busy sentence others get."""
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, run_id.encode(), 0)
        except OSError as err:  # a full disk: the busy sentence names no run, the lock still holds
            log.info("could not note the run in the lock file: %s", err)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunsLock:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def try_lock(runs_dir: Path) -> RunsLock | None:
    """The runs-folder lock if nobody holds it (without waiting), else None. Creates the runs folder."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(runs_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    lock = RunsLock(fd, runs_dir)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # the previous holder's run id is not ours
    return lock


# A worker that has written its last status (stopped, finished, failed) still holds the lock until its process
# has ended: torch's teardown takes a second or two. A Resume pressed right after Stop waits that long, not fails.
ENDING_GRACE_S = 15.0


def wait_for_lock(runs_dir: Path) -> RunsLock | None:
    """try_lock, waiting up to ENDING_GRACE_S while the holder's run has already ended (its process is closing);
    None at once when the holder's run still trains, or when the lock names no run."""
    lock = try_lock(runs_dir)
    deadline = time.monotonic() + ENDING_GRACE_S
    while lock is None and _holder_has_ended(runs_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
        lock = try_lock(runs_dir)
    return lock


def _holder_has_ended(runs_dir: Path) -> bool:
    run_id = _noted_run(runs_dir)
    return run_id is not None and run_state(Path(runs_dir) / run_id).get("status") not in (*LIVE, None)


@contextlib.contextmanager
def runs_lock(runs_dir: Path):
    """`with runs_lock(runs_dir) as lock:` holds the runs-folder lock; raises RunBusyError when another holds it
    (after the short wait of wait_for_lock when the holder's run has just ended)."""
    lock = wait_for_lock(runs_dir)
    if lock is None:
        raise busy_error(runs_dir)
    with lock:
        yield lock


def inherited_lock(runs_dir: Path) -> RunsLock | None:
    """The lock a spawning parent handed over (LOCK_FD_ENV), if it is really this runs folder's lock file."""
    value = os.environ.pop(LOCK_FD_ENV, None)
    if not value:
        return None
    try:
        fd = int(value)
        held, expected = os.fstat(fd), os.stat(Path(runs_dir) / LOCK_FILE)
    except (ValueError, OSError):
        return None
    if (held.st_dev, held.st_ino) != (expected.st_dev, expected.st_ino):
        return None
    os.set_inheritable(fd, False)  # ours alone: a program the worker starts must not keep the runs folder locked
    return RunsLock(fd, Path(runs_dir))


def busy_error(runs_dir: Path) -> RunBusyError:
    """The one sentence for a start refused because the lock is held, naming the run that trains when known."""
    run_id = _noted_run(runs_dir)
    if run_id is not None:
        return _busy_run_error(run_id)
    return RunBusyError(f"Another run is still training in {runs_dir}: wait for it to finish or stop it first "
                        f"(one run at a time per machine).")


def _noted_run(runs_dir: Path) -> str | None:
    """The run the lock's holder noted in the lock file (RunsLock.note), when it names a run folder; None for a
    sweep's note, an empty file or one that cannot be read."""
    try:
        run_id = (Path(runs_dir) / LOCK_FILE).read_text(encoding="utf-8", errors="replace").strip()[:200]
    except OSError:
        return None
    return run_id if RUN_ID_PATTERN.match(run_id) and (Path(runs_dir) / run_id).is_dir() else None


def _busy_run_error(run_id: str) -> RunBusyError:
    return RunBusyError(f"Run {run_id} is still training: wait for it to finish or stop it first "
                        f"(one run at a time per machine).")


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


def create_next_version_dir(config: RunConfig, parent_dir: Path, run_id: str | None = None) -> Path:
    """The folder of a run's next version (config from feedback.next_version_config), beside its parent, holding a
    copy of the parent's corrections that its config points at."""
    import dataclasses

    run_dir = create_run_dir(config, Path(parent_dir).parent, run_id)
    corrections, _ = feedback.snapshot(parent_dir, run_dir)
    dataclasses.replace(config, corrections_path=str(corrections.resolve())).save(run_dir / CONFIG_FILE)
    return run_dir


def next_version(parent_dir: Path, config: RunConfig | None = None) -> RunConfig:
    """The config of a run's next version, everything it needs checked before a folder or a queue entry exists:
    a parent with an adapter, at least one correction, its data files. `config`: settings that replace the
    parent's (None = its own). The one preparation behind the CLI's --from-run, Train v2 and its queueing."""
    from .train import check_data_files

    config = feedback.next_version_config(parent_dir, config)
    feedback.require_corrections(parent_dir)
    check_data_files(config)
    return config


def start_next_version(runs_dir: Path, parent_id: str, config: RunConfig | None = None) -> Path:
    """Start "Train v2 with my corrections" for the run parent_id: like start_run, from the parent's adapter, on
    its data plus the corrections made in Chat."""
    config = next_version(run_path(runs_dir, parent_id), config)
    with runs_lock(runs_dir) as lock:
        _ensure_no_live_run(runs_dir)
        return begin_run(config, runs_dir, lock)


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
        pid = _int(status.get("pid")) or _read_pid(run_dir)
        started = _number(status.get("updated"))
        # A run that says it is live but whose worker is gone was killed: say so.
        if not _pid_alive(pid) and time.time() - started > 2.0:
            message = ("The training process ended unexpectedly (killed, or out of system memory); "
                       "resume continues from the last checkpoint.")
            status = {**status, "status": "failed", "message": message}
            try:
                events = replay(read_events(run_dir))
                if not events.error and not events.end:
                    from .events import EventWriter

                    writer = EventWriter(run_dir)
                    writer.write("error", message=message, kind="killed", log_tail=log_tail(run_dir))
                    writer.close()
                write_status(run_dir, **{k: v for k, v in status.items() if k != "updated"})
            except OSError as err:  # a full or read-only disk: the run is still shown as failed, just not saved
                log.info("could not record that run %s died: %s", run_dir.name, err)
    return status


def stalled_for(run_dir: Path, status: dict | None = None, now: float | None = None) -> float | None:
    """Seconds since a training run last showed progress (a step, an evaluation batch, an event), or None when it
    is not training: finished, failed, or still starting (loading a model can take minutes without a step).

    A worker stopped with SIGSTOP, or hung, stays "running" with a live pid; this is how the UI tells it apart.
    `status`: the run's status when the caller has just read it (saves reading it again)."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) if status is None else status
    if status.get("status") not in ("running", "stopping"):
        return None
    latest = _number(status.get("updated"))
    try:
        latest = max(latest, (run_dir / EVENTS_FILE).stat().st_mtime)
    except OSError:
        pass
    if not latest:
        return None
    return max(0.0, (time.time() if now is None else now) - latest)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


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
    """One run at a time per machine: a second start is refused with one sentence.

    A check ahead of time (the UI asks before it frees the GPU for a run); start_run and resume_run decide under
    the lock."""
    lock = wait_for_lock(runs_dir)
    if lock is None:
        raise busy_error(runs_dir)
    with lock:
        _ensure_no_live_run(runs_dir)


def _ensure_no_live_run(runs_dir: Path) -> None:
    """A run whose status says it trains, though nobody holds the lock (an older worker, or one run in-process)."""
    busy = active_run(runs_dir)
    if busy is not None:
        raise _busy_run_error(busy.name)


def start_run(config: RunConfig, runs_dir: Path, run_id: str | None = None) -> Path:
    """Start a worker process for config and return its run folder; refuses a second live run.

    The data file is checked (type, size) before anything else: a refused start leaves no folder behind. The lock
    is taken before the folder is made and handed to the worker, so no second start can slip in between."""
    from .train import check_data_files

    check_data_files(config)
    with runs_lock(runs_dir) as lock:
        _ensure_no_live_run(runs_dir)
        return begin_run(config, runs_dir, lock, run_id)


def begin_run(config: RunConfig, runs_dir: Path, lock: RunsLock, run_id: str | None = None) -> Path:
    """Make the run's folder and start its worker, handing it `lock` (held by the caller: start_run, or a queue
    entry started by the run that ends before it)."""
    if config.parent_run and not config.corrections_path:  # a next version, queued: its corrections as of now
        run_dir = create_next_version_dir(config, run_path(runs_dir, config.parent_run), run_id)
    else:
        run_dir = create_run_dir(config, runs_dir, run_id)
    lock.note(run_dir.name)
    _spawn(run_dir, ["--resume", str(run_dir)], config_path=run_dir / CONFIG_FILE, lock=lock)
    return run_dir


def resume_run(runs_dir: Path, run_id: str) -> Path:
    run_dir = run_path(runs_dir, run_id)
    if not run_dir.is_dir():
        raise UserError(f"Run {run_id} does not exist.")
    with runs_lock(runs_dir) as lock:
        state = run_state(run_dir).get("status")
        if state in LIVE:
            raise RunBusyError(f"Run {run_id} is already training.")
        busy = active_run(runs_dir)
        if busy is not None:
            raise RunBusyError(f"Run {busy.name} is still training: stop it before resuming another.")
        write_status(run_dir, status="starting")
        lock.note(run_dir.name)
        _spawn(run_dir, ["--resume", str(run_dir)], config_path=run_dir / CONFIG_FILE, lock=lock)
    return run_dir


def _spawn(run_dir: Path, extra: list[str], config_path: Path, lock: RunsLock):
    """Start the worker, handing it the runs-folder lock: the child inherits the descriptor (pass_fds), so the
    lock's holder changes from us to it with no moment where nobody holds it; our copy is closed by the caller."""
    # A fresh run is also started via --resume on its own folder: with no checkpoint yet it
    # starts at step 0, and the folder (and its id) already exists for the UI to show.
    cmd = [sys.executable, "-m", "studio", "train", str(config_path), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LOCK_FD_ENV: str(lock.fd)}
    with open(run_dir / "worker.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=os.getcwd(), pass_fds=(lock.fd,))
    # Waited on by a thread of its own, so a finished worker is reaped at once, not left a zombie until some
    # caller polls: the server may run for days.
    threading.Thread(target=proc.wait, name=f"reap-worker-{proc.pid}", daemon=True).start()
    (run_dir / PID_FILE).write_text(str(proc.pid))
    write_status(run_dir, status="starting", pid=proc.pid)


def stop_run(run_dir: Path, grace_s: float = STOP_GRACE_S) -> None:
    """Ask the worker to stop (it saves the adapter and a checkpoint); SIGTERM if it does not in time, and SIGKILL
    if it still does not (a hung worker): Stop always ends the run."""
    (run_dir / STOP_FILE).touch()
    pid = _int(read_status(run_dir).get("pid")) or _read_pid(run_dir)
    if not pid:
        return
    # A worker paused with SIGSTOP (Ctrl+Z, a debugger) can neither see the stop file nor act on SIGTERM.
    _send(pid, signal.SIGCONT)
    if grace_s <= 0:
        return

    def escalate():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if _gone_within(pid, grace_s):
                return
            log.info("run %s did not stop in %.0f s: sending %s", run_dir.name, grace_s, sig.name)
            _send(pid, sig)
        if _gone_within(pid, 10.0):
            write_status(run_dir, status="stopped", step=read_status(run_dir).get("step"),
                         message="Stopped by force: the training process did not answer. Resume continues from "
                                 "the last checkpoint.")

    threading.Thread(target=escalate, name=f"stop-{run_dir.name}", daemon=True).start()


def _send(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.2)
    return not _pid_alive(pid)


def wait_for(run_dir: Path, timeout_s: float = 600.0, states=FINAL) -> dict:
    """Block until the run reaches one of `states` (tests and the CLI use this)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
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
    lineage: tuple[str, ...] = ()  # the run ids from the first version to this one (feedback.lineage)
    corrections: int = 0  # corrections from Chat it trained on (a next version's)
    objective: str = ""  # "dpo" / "orpo" for preference training, "sft" or "" (older runs) for supervised

    @property
    def version(self) -> str:
        """"v1" for a run from the base model alone, "v2, from <parent id>" for a next version."""
        if len(self.lineage) <= 1:
            return "v1"
        return f"v{len(self.lineage)}, from {self.lineage[-2]}"


def _run_dirs(runs_dir: Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if p.is_dir() and (p / CONFIG_FILE).exists()),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def summarize(run_dir: Path) -> RunSummary:
    status = run_state(run_dir)
    config = _read_json(run_dir / CONFIG_FILE)
    history = replay(read_events(run_dir))
    start = history.start
    total = _number(status.get("total_steps")) or _number(start.get("total_steps"))
    return RunSummary(
        run_id=run_dir.name, path=run_dir, model=str(config.get("model", "?")),
        data=Path(str(config.get("data_path", ""))).name,
        method=str(start.get("method") or config.get("method", "?")),
        status=str(status.get("status", "unknown")), step=history.train_steps[-1] if history.train_steps else 0,
        total_steps=int(total), best_eval_loss=history.best_eval_loss,
        last_train_loss=history.train_loss[-1] if history.train_loss else None,
        duration_s=(history.last_time - history.first_time) if history.first_time is not None else 0.0,
        started=history.first_time or 0.0, message=str(status.get("message", "")),
        lineage=tuple(feedback.lineage(run_dir)), corrections=_int(start.get("corrections")) or 0,
        objective=str(start.get("objective") or config.get("objective") or ""))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run on disk. One whose files cannot be summarised is still listed (as unreadable), never hides the
    others."""
    summaries = []
    for run_dir in _run_dirs(runs_dir):
        try:
            summaries.append(summarize(run_dir))
        except Exception:  # noqa: BLE001 - one damaged run must not take the whole list down
            log.warning("run %s could not be summarised", run_dir.name, exc_info=True)
            summaries.append(RunSummary(run_id=run_dir.name, path=run_dir, model="?", data="", method="?",
                                        status="unknown", step=0, total_steps=0, best_eval_loss=None,
                                        last_train_loss=None, duration_s=0.0, started=0.0,
                                        message="The run's files could not be read."))
    return summaries


def finished_runs(runs_dir: Path) -> list[RunSummary]:
    """Runs with a saved adapter (finished or stopped): what the Chat tab can load."""
    return [s for s in list_runs(runs_dir) if has_adapter(s.path)]


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

