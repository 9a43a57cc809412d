"""The run queue: runs and settings searches waiting for the machine, started one after another.

One machine trains one thing at a time (the runs-folder lock, studio/jobs.py). While something trains, Start
offers "Add to queue": the entry waits in RUNS_DIR/queue.json, on disk, so it outlives the page, the server and a
reboot. Whatever trains hands the machine on when it ends: the worker (or the sweep) that finishes starts the
first entry itself, passing its lock straight to the new process (no moment where a second start could slip in),
so an overnight queue needs no server running. A run the person stopped does not start the next one (they may be
about to change the queue); the server starts it when it next looks (on start-up, and when the Train tab polls),
and `studio queue start` starts it from a shell.

`studio queue add CONFIG.json | list | remove ID | move ID POSITION | start`. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError, UserError

log = logging.getLogger("studio.queue")

QUEUE_FILE = "queue.json"  # in the runs folder: the entries, first to start first
QUEUE_LOCK = ".queue.lock"  # serialises read-modify-write of QUEUE_FILE between the server, workers and the CLI
KINDS = ("run", "sweep")
MAX_ENTRIES = 100  # a queue is a night's or a weekend's work, not a backlog


@dataclass
class Entry:
    id: str  # short and unique: what `studio queue remove ID` takes
    kind: str  # "run" or "sweep" (a settings search, studio/tune.py)
    config: dict  # the RunConfig's fields
    added: float = field(default_factory=time.time)
    sweep: dict = field(default_factory=dict)  # for a sweep: budget_s, max_trials, space (tune.SearchSpace fields)

    @property
    def name(self) -> str:
        """What the person recognises the entry by: its run name, else its data file's name."""
        what = self.config.get("run_name") or Path(str(self.config.get("data_path") or "run")).name
        return f"settings search on {what}" if self.kind == "sweep" else what

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config)


def queue_file(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / QUEUE_FILE


@dataclass
class Queue:
    entries: list[Entry] = field(default_factory=list)
    paused: bool = False  # set when a run is stopped: nothing starts by itself until the person says so
    problem: str = ""  # why the last entry that could not start was taken out: shown until the person changes the
    # queue (adds, removes or moves an entry)


def read(runs_dir: str | Path) -> Queue:
    """The queue on disk; an unreadable file is an empty queue (and logged), never a crash: the next change keeps
    a copy of it beside (queue.json.bad) before writing a good one."""
    try:
        data = json.loads(queue_file(runs_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Queue()
    except (OSError, ValueError) as err:
        log.warning("queue file %s unreadable (%s): treated as empty", queue_file(runs_dir), err)
        return Queue(problem=f"The queue file {queue_file(runs_dir)} was damaged and could not be read; a copy is "
                             f"kept as {QUEUE_FILE}.bad.")
    data = data if isinstance(data, dict) else {}
    queued = []
    rows = data.get("entries")
    for row in rows if isinstance(rows, list) else []:
        try:
            queued.append(Entry(id=str(row["id"]), kind=str(row["kind"]), config=dict(row["config"]),
                                added=float(row.get("added") or 0), sweep=dict(row.get("sweep") or {})))
        except (KeyError, TypeError, ValueError) as err:
            log.warning("queue entry skipped (%s): %r", err, row)
    return Queue(entries=queued, paused=bool(data.get("paused")), problem=str(data.get("problem") or ""))


def entries(runs_dir: str | Path) -> list[Entry]:
    """The queued entries, first to start first."""
    return read(runs_dir).entries


@contextlib.contextmanager
def _editing(runs_dir: str | Path) -> Iterator[Queue]:
    """`with _editing(runs_dir) as queue:` change it in place; it is written back (whole, atomically) when the
    block ends without an error. One editor at a time, across processes."""
    from .fileio import write_text

    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / QUEUE_LOCK, "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        queue = read(runs_dir)
        if queue.problem.startswith("The queue file"):
            import shutil

            with contextlib.suppress(OSError):
                shutil.copyfile(queue_file(runs_dir), runs_dir / f"{QUEUE_FILE}.bad")
        yield queue
        data = {"paused": queue.paused, "problem": queue.problem,
                "entries": [dataclasses.asdict(e) for e in queue.entries]}
        write_text(queue_file(runs_dir), json.dumps(data, indent=1) + "\n")


def add(runs_dir: str | Path, config: RunConfig, kind: str = "run", sweep: dict | None = None) -> Entry:
    """Queue a run (or a settings search) and return its entry. Its data file is checked now, as a start would:
    a queue that fails in the night on a typo helps nobody."""
    from .train import check_data_files

    if kind not in KINDS:
        raise ConfigError(f"A queue entry is a run or a sweep, not {kind!r}.")
    check_data_files(config)
    if not config.data_path:
        raise ConfigError("No training data: choose a data file before adding the run to the queue.")
    entry = Entry(id=secrets.token_hex(3), kind=kind, config=anchored(config).to_dict(), sweep=dict(sweep or {}))
    with _editing(runs_dir) as queue:
        if len(queue.entries) >= MAX_ENTRIES:
            raise UserError(f"The queue already holds {MAX_ENTRIES} entries: remove some before adding more.")
        same = next((i for i, e in enumerate(queue.entries, 1) if (e.kind, e.config, e.sweep) ==
                     (entry.kind, entry.config, entry.sweep)), None)
        if same is not None:  # a second press of Add to queue (or Train v2) while the machine is busy
            raise UserError(f"These settings are already in the queue (position {same}): nothing added.")
        queue.entries.append(entry)
        queue.problem = ""
    return entry


def anchored(config: RunConfig) -> RunConfig:
    """The config with its files as absolute paths: it starts later, from the process of whatever ends before it,
    whose working folder may not be the one a relative path was written for."""
    from .paths import is_local_model

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve()) if path else path

    return dataclasses.replace(config, data_path=absolute(config.data_path),
                               validation_path=absolute(config.validation_path),
                               corrections_path=absolute(config.corrections_path),
                               model=absolute(config.model) if is_local_model(config.model) else config.model)


def position(runs_dir: str | Path, entry_id: str) -> int | None:
    """Where the entry stands (1 = starts next), None once it has left the queue."""
    return next((i for i, e in enumerate(entries(runs_dir), 1) if e.id == entry_id), None)


def sweep_fields(budget_s: float, space, max_trials: int | None = None) -> dict:
    """What a queued settings search needs besides its config: the time budget, the trials limit, the ranges
    (a tune.SearchSpace)."""
    return {"budget_s": float(budget_s), "max_trials": max_trials, "space": dataclasses.asdict(space)}


def _index(queued: list[Entry], entry_id: str) -> int:
    for i, entry in enumerate(queued):
        if entry.id == str(entry_id).strip():
            return i
    raise UserError(f"No queued entry {entry_id!r}: `studio queue list` shows the ids (it may have started "
                    f"already).")


def remove(runs_dir: str | Path, entry_id: str) -> Entry:
    with _editing(runs_dir) as queue:
        queue.problem = ""
        return queue.entries.pop(_index(queue.entries, entry_id))


def move(runs_dir: str | Path, entry_id: str, position: int) -> list[Entry]:
    """Put the entry at `position` (1 = starts next); a position past the end puts it last."""
    with _editing(runs_dir) as queue:
        queue.problem = ""
        entry = queue.entries.pop(_index(queue.entries, entry_id))
        queue.entries.insert(max(0, min(int(position) - 1, len(queue.entries))), entry)
        return list(queue.entries)


def _take_first(runs_dir: Path) -> Entry | None:
    """The first entry, out of the queue; starting one means the queue is no longer paused."""
    with _editing(runs_dir) as queue:
        queue.paused = False
        return queue.entries.pop(0) if queue.entries else None


def pause(runs_dir: str | Path) -> None:
    """A run was stopped: the queue waits (the person may be about to change it) until started again."""
    if queue_file(runs_dir).exists():
        with _editing(runs_dir) as queue:
            queue.paused = bool(queue.entries)


def _start(entry: Entry, runs_dir: Path, lock) -> Path:
    """Start one entry with the runs-folder lock held (and handed to its process)."""
    from . import jobs, tune
    from .train import check_data_files

    if entry.kind not in KINDS:
        raise ConfigError(f"it is a {entry.kind!r}, neither a run nor a sweep")
    config = entry.run_config()
    check_data_files(config)  # a file gone since it was queued: said now, before a run folder exists
    if config.parent_run:
        jobs.validate_run_id(config.parent_run)
    if entry.kind == "sweep":
        space = tune.SearchSpace(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in (entry.sweep.get("space") or {}).items()})
        return tune.begin_sweep(config, runs_dir, float(entry.sweep.get("budget_s") or 0), space,
                                entry.sweep.get("max_trials"), lock)
    return jobs.begin_run(config, runs_dir, lock)


def start_next(runs_dir: str | Path, lock=None, even_if_paused: bool = True, wait: bool = False) -> Path | None:
    """Start the first queued entry and return its folder; None when the queue is empty (or paused, unless
    `even_if_paused`: the person asked) or something trains. `wait`: when the lock's holder has just ended (its
    process still closing, past its own look at the queue), wait for it as a start does (jobs.wait_for_lock), so
    an entry added from a shell at that moment is not left waiting with no server to start it.

    `lock`: the runs-folder lock of a worker that is ending, handed on to the new process; without one it is taken
    here, and only if free. An entry that cannot start (its data file gone) is dropped with the reason logged and
    the next one tried: one bad entry must not hold up the night."""
    from . import jobs

    runs_dir = Path(runs_dir)
    queue = read(runs_dir)
    if not queue.entries or (queue.paused and not even_if_paused):
        return None
    own = lock is None
    if own:
        lock = jobs.wait_for_lock(runs_dir) if wait else jobs.try_lock(runs_dir)
        if lock is None or jobs.active_run(runs_dir) is not None:
            if lock is not None:
                lock.close()
            return None
    try:
        while (entry := _take_first(runs_dir)) is not None:
            try:
                started = _start(entry, runs_dir, lock)
            except Exception as err:  # noqa: BLE001 - one bad entry must not hold up (or crash) the rest
                reason = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
                log.warning("queued %s %s (%s) not started: %s", entry.kind, entry.id, entry.name, reason,
                            exc_info=not isinstance(err, UserError))
                with _editing(runs_dir) as queue:
                    queue.problem = f"The queued {entry.kind} {entry.name} ({entry.id}) could not start and was " \
                                    f"taken out of the queue: {reason}"
                continue
            log.info("queued %s %s started: %s", entry.kind, entry.id, started)
            return started
        return None
    finally:
        if own:
            lock.close()  # the started process holds its own copy: the lock stays held until it ends


def after_run(runs_dir: str | Path, status: str, lock) -> Path | None:
    """Called by a worker (or sweep) as it ends, still holding the lock: the next queued entry starts, unless the
    person stopped this one. Never raises: the run that ends is already saved."""
    try:
        if status == "stopped":
            pause(runs_dir)
            return None
        return start_next(runs_dir, lock, even_if_paused=False)
    except Exception:  # noqa: BLE001 - see the docstring
        log.warning("the next queued entry did not start", exc_info=True)
        return None


def waiting(runs_dir: str | Path) -> Path | None:
    """What the server does when it looks (start-up, the Train tab's poll): start the next entry if nothing trains
    and the queue is not paused; a worker killed before it could hand on leaves the queue waiting for this."""
    return start_next(runs_dir, even_if_paused=False)


def describe(runs_dir: str | Path) -> list[dict]:
    """The queue as rows for a table or the CLI: position, id, kind, name, model, data, added."""
    return [{"position": i, "id": e.id, "kind": e.kind, "name": e.name, "model": e.config.get("model", ""),
             "data": Path(str(e.config.get("data_path") or "")).name,
             "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.added))}
            for i, e in enumerate(entries(runs_dir), 1)]


# --- the command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from .logs import ArgumentParser, tell_user

    parser = ArgumentParser(prog="python -m studio queue",
                            description="Runs waiting for the machine, started one after another (kept in "
                                        "RUNS_DIR/queue.json).")
    parser.add_argument("--runs-dir", default=os.environ.get("STUDIO_RUNS_DIR", "runs"),
                        help="folder of runs (default: runs)")
    actions = parser.add_subparsers(dest="action", required=True)
    add_parser = actions.add_parser("add", help="queue a run from a config file; it starts now if nothing trains")
    add_parser.add_argument("config", help="a RunConfig JSON file (e.g. assets/quickstart.json)")
    add_parser.add_argument("--search", metavar="BUDGET", default=None,
                            help="queue a settings search around the config instead of one run, for this long "
                                 "(e.g. 20m, 1.5h; see `studio tune`)")
    actions.add_parser("list", help="show the queue, first to start first")
    remove_parser = actions.add_parser("remove", help="take an entry out of the queue")
    remove_parser.add_argument("id", help="the entry's id, from `list`")
    move_parser = actions.add_parser("move", help="move an entry to a position (1 = starts next)")
    move_parser.add_argument("id")
    move_parser.add_argument("position", type=int)
    actions.add_parser("start", help="start the first entry now, if nothing trains")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    try:
        if args.action == "add":
            config = RunConfig.load(args.config)
            if args.search:
                from . import tune

                tune.check_can_search(config)
                sweep = sweep_fields(tune.parse_budget(args.search), tune.SearchSpace())
                entry = add(runs_dir, config, kind="sweep", sweep=sweep)
            else:
                entry = add(runs_dir, config)
            started = start_next(runs_dir, even_if_paused=False, wait=True)
            if started is not None and position(runs_dir, entry.id) is None:
                print(f"Started {entry.name} now (nothing else was training): {started}")
            else:
                print(f"Queued {entry.id} ({entry.name}) at position {position(runs_dir, entry.id)}"
                      + (" (the queue is paused: `studio queue start` goes on)." if read(runs_dir).paused else "."))
        elif args.action == "list":
            rows, queue = describe(runs_dir), read(runs_dir)
            if queue.problem:
                print(queue.problem)
            if not rows:
                print("The queue is empty.")
            elif queue.paused:
                print("The queue is paused (a run was stopped): `studio queue start` goes on.")
            for row in rows:
                print(f"{row['position']:>3}  {row['id']}  {row['kind']:<5}  {row['name']}  ({row['model']}, "
                      f"{row['data']}, added {row['added']})")
        elif args.action == "remove":
            entry = remove(runs_dir, args.id)
            print(f"Removed {entry.id} ({entry.name}).")
        elif args.action == "move":
            queued = move(runs_dir, args.id, args.position)
            where = next(i for i, e in enumerate(queued, 1) if e.id == args.id.strip())
            print(f"Moved {args.id} to position {where}.")
        else:
            started = start_next(runs_dir, wait=True)
            problem = read(runs_dir).problem
            if problem:
                print(problem)
            print(f"Started the first entry: {started}" if started else "Nothing started: the queue is empty, or "
                  "something is training (the queue goes on when it ends).")
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    except OSError as err:
        tell_user(f"Error: the queue in {runs_dir} could not be read or written ({err.strerror or err}): check that "
                  f"--runs-dir names a folder you can write to.")
        return 1
    return 0
