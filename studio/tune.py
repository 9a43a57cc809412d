"""Find good settings: a time-boxed search that trains real trials, stops bad ones early, and keeps the winner.

`python -m studio tune CONFIG.json --budget 20m` samples settings around the config (learning rate, LoRA rank and
alpha, steps, dropout) with Optuna's TPE sampler and prunes a trial whose validation loss trails the others at the
same point of training (successive halving, on the validation losses each trial reports at a quarter, half and
three quarters of its steps). Optuna, not a search of ours: it is maintained, its samplers are the standard, and
its journal file lets a killed sweep resume where it stopped.

Each trial is a real run in the runs folder (its run name says which sweep and trial), trained in this process, one
after another, while this process holds the runs-folder lock: nothing else trains meanwhile. A pruned trial keeps
its partial curve and ends with status "pruned". The sweep folder (runs/sweeps/<id>/) holds:
- sweep.json: the budget, the search space and every trial (number, params, status, best validation loss, seconds,
  run id), rewritten after each change, so the UI can follow it;
- best_config.json: once a trial completes, the best one's RunConfig, which trains as it is;
- journal.log: Optuna's storage, which `--resume SWEEP_DIR` continues from;
- STOP: created to stop the sweep (the current trial stops and keeps its adapter).

The budget holds: no trial starts that the speed measured so far says cannot finish inside it, and a trial still
running at the deadline is stopped, so the sweep ends within a few steps of its budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError, UserError
from .events import LIVE, PID_FILE, STOP_FILE, read_events, read_status, replay, write_status
from .logs import ArgumentParser, tell_user

log = logging.getLogger("studio.tune")

SWEEP_FILE, BEST_CONFIG_FILE, JOURNAL_FILE = "sweep.json", "best_config.json", "journal.log"
SWEEPS_DIR = "sweeps"  # inside the runs folder; the run list skips it (it has no config.json)
MIN_BUDGET_S, MAX_BUDGET_S = 60, 8 * 3600
NO_VALIDATION = ("The trial measured no validation loss, so trials cannot be compared: the validation split came "
                 "out empty (rows that repeat are kept on one side). Give a separate validation file, raise the "
                 "validation share, or use more varied rows.")
EVALS_PER_TRIAL = 4  # the rungs the pruner compares trials at: a quarter, half, three quarters, the end


@dataclasses.dataclass
class SearchSpace:
    """What is searched, with ranges that suit small instruct models and a few hundred rows."""

    learning_rate: tuple[float, float] = (2e-5, 1e-3)  # sampled on a log scale
    lora_rank: tuple[int, ...] = (4, 8, 16, 32)
    lora_alpha_ratio: tuple[float, ...] = (1.0, 2.0)  # alpha = rank x ratio
    max_steps: tuple[int, int] | None = None  # None: keep the config's length
    lora_dropout: tuple[float, float] | None = (0.0, 0.1)

    def __post_init__(self):
        low, high = self.learning_rate
        if not 0 < low < high <= 1:
            raise ConfigError(f"The learning-rate range {low:g} to {high:g} is not valid: give two numbers with the "
                              f"first smaller, both between 0 and 1.")
        if not self.lora_rank or any(int(r) != r or r < 1 for r in self.lora_rank):
            raise ConfigError("LoRA ranks to try must be whole numbers of at least 1, e.g. 8, 16, 32.")
        if self.max_steps is not None and not 1 <= self.max_steps[0] <= self.max_steps[1]:
            raise ConfigError("The steps range must be two whole numbers, the first at least 1 and not above the "
                              "second.")

    def sample(self, trial, base: RunConfig) -> dict:
        params = {"learning_rate": trial.suggest_float("learning_rate", *self.learning_rate, log=True),
                  "lora_rank": trial.suggest_categorical("lora_rank", list(self.lora_rank))}
        ratio = trial.suggest_categorical("lora_alpha_ratio", list(self.lora_alpha_ratio))
        params["lora_alpha"] = max(1, int(round(params["lora_rank"] * ratio)))
        if self.max_steps is not None:
            params["max_steps"] = trial.suggest_int("max_steps", *self.max_steps)
        if self.lora_dropout is not None:
            params["lora_dropout"] = round(trial.suggest_float("lora_dropout", *self.lora_dropout), 3)
        return params


def parse_budget(text: str) -> float:
    """'20m', '1.5h', '90s' or a bare number of seconds -> seconds, between 1 minute and 8 hours."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not match:
        raise ConfigError(f"The budget {text!r} is not a time: write it like 20m, 1.5h or 90s.")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not MIN_BUDGET_S <= seconds <= MAX_BUDGET_S:
        raise ConfigError(f"A budget of {text} is outside what a search can use: give between 1 minute and 8 hours.")
    return seconds


def trial_config(base: RunConfig, params: dict, sweep_id: str, number: int) -> RunConfig:
    """The base config with the trial's settings, validation every quarter of its steps, and a run name that says
    which sweep it belongs to."""
    values = {**base.to_dict(), **params}
    values["run_name"] = f"{sweep_id} trial {number}"
    trial = RunConfig(**values)
    steps = trial.max_steps if trial.max_steps and trial.max_steps > 0 else None
    if steps:
        values["eval_every"] = max(1, steps // EVALS_PER_TRIAL)
    values["save_every"] = 0  # a trial is not resumed on its own: checkpoints would only cost time and disk
    # No report card per trial: it would spend the budget on answers nobody reads (about a minute a trial for the
    # bundled model). The winner's report comes when its settings train for real (best_config.json, or "Use these
    # settings"), or from `python -m studio eval` on the trial's run.
    values["report_card"] = False
    return RunConfig(**values)


# --- the sweep's record -------------------------------------------------------------------------------------------
def read_sweep(sweep_dir: str | Path) -> dict:
    try:
        return json.loads((Path(sweep_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    tmp.replace(path)


class Sweep:
    """One search: its folder, its Optuna study, and the trials it has run."""

    def __init__(self, sweep_dir: Path, base: RunConfig, runs_dir: Path, budget_s: float, max_trials: int | None,
                 space: SearchSpace, seed: int = 0):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dir, self.base, self.runs_dir = sweep_dir, base, runs_dir
        self.budget_s, self.max_trials, self.space = budget_s, max_trials, space
        storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))
        self.study = optuna.create_study(
            study_name="sweep", storage=storage, load_if_exists=True, direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
        self.record = read_sweep(sweep_dir) or {"id": sweep_dir.name, "trials": []}
        self.record.update(budget_s=budget_s, max_trials=max_trials, space=dataclasses.asdict(space),
                           base_config=base.to_dict())
        self.spent_s = float(self.record.get("spent_s", 0.0))  # a resumed sweep's budget counts what was spent

    # --- bookkeeping ---
    def _trial_entry(self, number: int) -> dict:
        for entry in self.record["trials"]:
            if entry["number"] == number:
                return entry
        entry = {"number": number}
        self.record["trials"].append(entry)
        return entry

    def save(self, status: str | None = None, message: str | None = None) -> None:
        if status:
            self.record["status"] = status
        if message is not None:
            self.record["message"] = message
        self.record["spent_s"] = round(self.spent_s, 1)
        self.record["updated"] = time.time()
        complete = [t for t in self.record["trials"] if t.get("status") == "complete" and t.get("best_val_loss")]
        if complete:
            best = min(complete, key=lambda t: t["best_val_loss"])
            self.record["best_trial"] = best["number"]
            # The base with the winner's settings: the trial's own validation cadence and its lack of checkpoints
            # suited a search, not the real run the person starts from this file.
            config = {**self.base.to_dict(), **best["params"], "run_name": f"{self.dir.name} best"}
            RunConfig(**config)  # trains as it is
            _write_json(self.dir / BEST_CONFIG_FILE, config)
        if len(complete) >= 2:
            try:
                import optuna

                self.record["importances"] = {k: round(v, 3) for k, v in
                                              optuna.importance.get_param_importances(self.study).items()}
            except Exception:  # noqa: BLE001 - importances need varied trials; their absence is not an error
                log.info("no parameter importances yet", exc_info=True)
        _write_json(self.dir / SWEEP_FILE, self.record)

    def fail_abandoned_trials(self) -> None:
        """Trials left running by a killed sweep are failed, and their settings queued to run again."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params)
            entry = self._trial_entry(trial.number)
            entry.update(status="failed", message="The sweep was killed during this trial; it is run again.")
            log.info("trial %d was left running: failed and queued again", trial.number)

    # --- running ---
    def seconds_per_step(self) -> float | None:
        done = [t for t in self.record["trials"] if t.get("steps") and t.get("seconds")]
        if not done:
            return None
        return sum(t["seconds"] for t in done) / sum(t["steps"] for t in done)

    def predicted_seconds(self, config: RunConfig) -> float | None:
        per_step = self.seconds_per_step()
        overhead = [t["seconds"] - t["steps"] * per_step for t in self.record["trials"]
                    if per_step and t.get("steps") and t.get("seconds")]
        if per_step is None or not config.max_steps or config.max_steps <= 0:
            return None
        return config.max_steps * per_step * 0.8 + max(0.0, min(overhead, default=0.0))

    def run(self) -> str:
        from . import jobs, train

        self.dir.mkdir(parents=True, exist_ok=True)
        if self.record.get("status") != "starting":  # a Stop pressed while the process was starting still counts
            (self.dir / STOP_FILE).unlink(missing_ok=True)
        self.fail_abandoned_trials()
        started = time.time() - self.spent_s
        deadline = started + self.budget_s
        self.record["started_at"] = started  # the UI counts the time left from it
        self.save(status="running", message="")
        outcome = "finished"
        while True:
            n_done = len([t for t in self.record["trials"] if t.get("status") in ("complete", "pruned")])
            if self.max_trials is not None and n_done >= self.max_trials:
                break
            if (self.dir / STOP_FILE).exists():
                outcome = "stopped"
                break
            trial = self.study.ask()
            params = self.space.sample(trial, self.base)
            config = trial_config(self.base, params, self.dir.name, trial.number)
            left = deadline - time.time()
            predicted = self.predicted_seconds(config)
            if left <= 0 or (predicted is not None and predicted > left):
                from optuna.trial import TrialState

                self.study.tell(trial, state=TrialState.FAIL)  # never ran: Optuna must not count it as running
                self.record.setdefault("skipped", 0)
                self.record["skipped"] += 1
                log.info("trial %d not started: %.0f s left, it needs about %s s", trial.number, left, predicted)
                break
            run_dir = jobs.create_run_dir(config, self.runs_dir)
            entry = self._trial_entry(trial.number)
            entry.update(params=params, status="running", run_id=run_dir.name, best_val_loss=None, seconds=None)
            self.save()
            hooks = _TrialHooks(trial, self.dir / STOP_FILE, deadline, run_dir)
            trial_started = time.time()
            on_sigterm = _sigterm_handler()
            try:
                status = train.run(config, run_dir, callbacks=[hooks.callback()])
            finally:  # train.run points SIGTERM at the trial alone; between trials it stops the sweep again
                _set_sigterm(on_sigterm)
            seconds = time.time() - trial_started
            history = replay(read_events(run_dir))
            best = history.best_eval_loss
            entry.update(seconds=round(seconds, 1), best_val_loss=best,
                         steps=history.train_steps[-1] if history.train_steps else 0)
            self.spent_s = time.time() - started
            self._finish_trial(trial, entry, run_dir, status, hooks, best)
            self.save()
            if entry.get("message") == NO_VALIDATION:  # every trial would end the same way
                self.save(status="failed", message=NO_VALIDATION)
                return "failed"
            if hooks.stop_requested:
                outcome = "stopped"
                break
            if hooks.out_of_time:
                break
        message = self._summary(outcome)
        self.save(status=outcome, message=message)
        return outcome

    def _finish_trial(self, trial, entry: dict, run_dir: Path, status: str, hooks: _TrialHooks,
                      best: float | None) -> None:
        from optuna.trial import TrialState

        if hooks.pruned or hooks.out_of_time:
            why = ("its validation loss trailed the other trials at the same point" if hooks.pruned else
                   "the time budget ran out")
            entry.update(status="pruned", message=f"Stopped early: {why}.")
            write_status(run_dir, status="pruned", message=f"Pruned by the settings search: {why}.",
                         step=entry.get("steps"))
            self.study.tell(trial, state=TrialState.PRUNED)
        elif status == "finished" and best is not None and math.isfinite(best):
            entry.update(status="complete")
            self.study.tell(trial, best)
        elif status == "finished":  # trained, but never validated: nothing to compare trials on
            entry.update(status="failed", message=NO_VALIDATION)
            self.study.tell(trial, state=TrialState.FAIL)
        elif status == "stopped":  # the person pressed Stop: the trial is not a result
            entry.update(status="stopped")
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            entry.update(status="failed", message=replay(read_events(run_dir)).error.get("message", ""))
            self.study.tell(trial, state=TrialState.FAIL)

    def _summary(self, outcome: str) -> str:
        trials = self.record["trials"]
        counts = {s: sum(1 for t in trials if t.get("status") == s) for s in ("complete", "pruned", "failed")}
        head = {"finished": "The search finished", "stopped": "The search was stopped"}[outcome]
        text = (f"{head} after {self.spent_s / 60:.1f} of {self.budget_s / 60:.0f} minutes: {counts['complete']} "
                f"trials finished, {counts['pruned']} stopped early as unpromising")
        if counts["failed"]:
            text += f", {counts['failed']} failed"
        best = self.record.get("best_trial")
        if best is not None:
            entry = self._trial_entry(best)
            text += f". Best: trial {best} (validation loss {entry['best_val_loss']:.3f})."
        else:
            text += ". No trial completed, so there are no best settings yet: give the search more time."
        return text


class _TrialHooks:
    """Reports each validation loss to Optuna, and stops the trial when Optuna prunes it, when the budget runs out,
    or when the sweep is stopped."""

    def __init__(self, trial, stop_file: Path, deadline: float, run_dir: Path | None = None):
        self.trial, self.stop_file, self.deadline, self.run_dir = trial, stop_file, deadline, run_dir
        self.pruned = self.out_of_time = self.stop_requested = False
        self.rung = 0

    def callback(self):
        from transformers import TrainerCallback

        hooks = self

        class PruneOnValidation(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                # SIGTERM (a stop that was not noticed in time) stops the sweep, not only this trial.
                if hooks.run_dir is not None:
                    _set_sigterm(lambda *_: (hooks.stop_file.touch(), (hooks.run_dir / STOP_FILE).touch()))

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                loss = (metrics or {}).get("eval_loss")
                if state.global_step == 0 or loss is None or not math.isfinite(loss):
                    return  # step 0 is the untouched model: the same for every trial
                hooks.rung += 1
                hooks.trial.report(float(loss), hooks.rung)
                if hooks.trial.should_prune():
                    hooks.pruned = True
                    control.should_training_stop = True

            def on_step_end(self, args, state, control, **kwargs):
                if time.time() > hooks.deadline:
                    hooks.out_of_time = True
                    control.should_training_stop = True
                if hooks.stop_file.exists():
                    hooks.stop_requested = True
                    control.should_training_stop = True

        return PruneOnValidation()


def _sigterm_handler():
    return signal.getsignal(signal.SIGTERM)


def _set_sigterm(handler) -> None:
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


# --- a sweep as a job: started, watched and stopped like a run (the UI's twin of the CLI) -------------------------
WORKER_OUT = "worker.out"  # the sweep process's stdout and stderr, in its folder


def check_budget(budget_s: float) -> float:
    if not MIN_BUDGET_S <= float(budget_s) <= MAX_BUDGET_S:
        raise ConfigError(f"A budget of {float(budget_s) / 60:.0f} minutes is outside what a search can use: give "
                          f"between 1 minute and 8 hours.")
    return float(budget_s)


def check_can_search(config: RunConfig) -> None:
    """What a search needs beyond a run: held-out rows to compare trials on."""
    if config.validation_fraction <= 0 and not config.validation_path:
        raise UserError("A settings search compares validation losses: set validation_fraction above 0 (e.g. "
                        "0.1) or give a validation file.")


def sweep_dirs(runs_dir: Path) -> list[Path]:
    """Every sweep folder, newest first (their names start with the time they were made)."""
    folder = Path(runs_dir) / SWEEPS_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and (p / SWEEP_FILE).is_file()),
                  key=lambda p: p.name, reverse=True)


def _sweep_pid(sweep_dir: Path) -> int | None:
    try:
        return int((Path(sweep_dir) / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def last_output_line(sweep_dir: Path) -> str:
    try:
        lines = (Path(sweep_dir) / WORKER_OUT).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def sweep_state(sweep_dir: Path) -> dict:
    """sweep.json, its status corrected from the process: "stopping" once Stop was pressed, and "failed" when the
    sweep process died without saying so (killed, out of memory, or a start refused by the worker)."""
    from . import jobs

    sweep_dir = Path(sweep_dir)
    record = read_sweep(sweep_dir)
    state = record.get("status", "unknown")
    if state in LIVE:
        forced = read_status(sweep_dir)  # jobs.stop_run writes this after it had to kill the process
        if not jobs._pid_alive(_sweep_pid(sweep_dir)) and time.time() - float(record.get("updated") or 0) > 2.0:
            if forced.get("status") == "stopped":
                record.update(status="stopped", message="The search was stopped by force: it did not answer.")
            else:
                why = last_output_line(sweep_dir).removeprefix("Error: ")
                record.update(status="failed", message=why or (
                    "The search process ended unexpectedly (killed, or out of system memory); "
                    f"`python -m studio tune --resume {sweep_dir}` continues it."))
        elif (sweep_dir / STOP_FILE).exists():
            record["status"] = "stopping"
    return record


def active_sweep(runs_dir: Path) -> Path | None:
    """The sweep searching now, if any (it holds the runs-folder lock: one at a time, and no run beside it)."""
    for sweep_dir in sweep_dirs(runs_dir):
        if sweep_state(sweep_dir).get("status") in LIVE:
            return sweep_dir
    return None


def start_sweep(config: RunConfig, runs_dir: Path, budget_s: float, space: SearchSpace,
                max_trials: int | None = None) -> Path:
    """Start `python -m studio tune` in its own process group and return its sweep folder; refused (one sentence)
    while a run or another sweep trains. The lock is taken here and handed to the process, as jobs.start_run does."""
    from . import jobs
    from .train import check_data_files

    check_data_files(config)
    check_can_search(config)
    budget_s = check_budget(budget_s)
    if max_trials is not None and max_trials < 1:
        raise UserError("The number of trials must be at least 1.")
    runs_dir = Path(runs_dir)
    busy = active_sweep(runs_dir)
    if busy is not None:
        raise jobs.RunBusyError(f"The settings search {busy.name} is still running: wait for it or stop it first.")
    with jobs.runs_lock(runs_dir) as lock:
        live = jobs.active_run(runs_dir)
        if live is not None:
            raise jobs.RunBusyError(f"Run {live.name} is still training: wait for it to finish or stop it first "
                                    f"(one run at a time per machine).")
        return begin_sweep(config, runs_dir, budget_s, space, max_trials, lock)


def begin_sweep(config: RunConfig, runs_dir: Path, budget_s: float, space: SearchSpace, max_trials: int | None,
                lock) -> Path:
    """Make the sweep's folder and start its process, handing it `lock` (held by the caller: start_sweep, or a
    queue entry started by whatever ends before it)."""
    budget_s = check_budget(budget_s)
    sweep_dir = new_sweep_dir(Path(runs_dir))
    lock.note(f"{SWEEPS_DIR}/{sweep_dir.name}")
    _write_json(sweep_dir / SWEEP_FILE, {
        "id": sweep_dir.name, "status": "starting", "message": "", "budget_s": budget_s, "max_trials": max_trials,
        "space": dataclasses.asdict(space), "base_config": config.to_dict(), "trials": [], "spent_s": 0.0,
        "updated": time.time()})
    _spawn_sweep(sweep_dir, lock)
    return sweep_dir


def _spawn_sweep(sweep_dir: Path, lock) -> None:
    """The sweep process, in a session of its own, handed the runs-folder lock (see jobs._spawn)."""
    from . import jobs

    cmd = [sys.executable, "-m", "studio", "tune", "--resume", str(sweep_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", jobs.LOCK_FD_ENV: str(lock.fd)}
    with open(sweep_dir / WORKER_OUT, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=os.getcwd(), pass_fds=(lock.fd,))
    threading.Thread(target=proc.wait, name=f"reap-sweep-{proc.pid}", daemon=True).start()
    (sweep_dir / PID_FILE).write_text(str(proc.pid))


def stop_sweep(sweep_dir: Path, grace_s: float = 60.0) -> None:
    """Stop the sweep and its current trial (which keeps its adapter); SIGTERM, then SIGKILL, if it does not stop
    in time (jobs.stop_run's escalation, on the sweep's process)."""
    from . import jobs

    sweep_dir = Path(sweep_dir)
    for trial in read_sweep(sweep_dir).get("trials", []):
        if trial.get("status") == "running" and trial.get("run_id"):
            with contextlib.suppress(OSError):
                (sweep_dir.parent.parent / jobs.validate_run_id(trial["run_id"]) / STOP_FILE).touch()
    jobs.stop_run(sweep_dir, grace_s=grace_s)


def wait_for_sweep(sweep_dir: Path, timeout_s: float = 600.0) -> dict:
    """Block until the sweep is no longer live (tests and scripts use this)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = sweep_state(sweep_dir)
        if state.get("status") not in (*LIVE, "unknown"):
            return state
        time.sleep(0.3)
    raise TimeoutError(f"sweep {Path(sweep_dir).name} did not end in {timeout_s} s")


# --- CLI ----------------------------------------------------------------------------------------------------------
def new_sweep_dir(runs_dir: Path) -> Path:
    folder = runs_dir / SWEEPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"sweep-{stamp}", 1
    while path.exists():
        n += 1
        path = folder / f"sweep-{stamp}-{n}"
    path.mkdir()
    return path


def main(argv: list[str] | None = None) -> int:
    from . import jobs, run_queue
    from .train import check_data_files

    parser = ArgumentParser(prog="python -m studio tune",
                            description="Search for good settings within a time budget: real trials, the "
                                        "unpromising stopped early, the best settings saved as a config that "
                                        "trains as it is.")
    parser.add_argument("config", nargs="?", help="the RunConfig JSON to search around (data, model, length)")
    parser.add_argument("--budget", default="20m", help="time to spend, e.g. 20m, 1.5h, 600s (default: 20m)")
    parser.add_argument("--trials", type=int, default=None, help="stop after this many trials (default: budget only)")
    parser.add_argument("--runs-dir", default="runs", help="runs folder; the sweep lives in RUNS/sweeps/ (default: "
                                                           "runs)")
    parser.add_argument("--resume", metavar="SWEEP_DIR", default=None, help="continue a sweep that was stopped or "
                                                                           "killed")
    args = parser.parse_args(argv)
    lock = None
    try:
        if args.resume:
            sweep_dir = Path(args.resume)
            record = read_sweep(sweep_dir)
            if not record.get("base_config"):
                raise UserError(f"{sweep_dir} is not a sweep folder (it has no {SWEEP_FILE}): give the folder "
                                f"`studio tune` printed.")
            base = RunConfig(**record["base_config"])
            budget_s, max_trials = float(record["budget_s"]), record.get("max_trials")
            space = SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["space"].items()})
            runs_dir = sweep_dir.parent.parent
        else:
            if not args.config:
                raise UserError("Give a config file to search around, e.g. `studio tune assets/quickstart.json "
                                "--budget 20m`, or --resume SWEEP_DIR.")
            base = RunConfig.load(args.config)
            budget_s, max_trials, space = parse_budget(args.budget), args.trials, SearchSpace()
            if max_trials is not None and max_trials < 1:
                raise UserError("--trials must be at least 1.")
            runs_dir = Path(args.runs_dir)
        check_data_files(base)
        check_can_search(base)
        lock = jobs.inherited_lock(runs_dir) or jobs.try_lock(runs_dir)
        if lock is None:
            raise jobs.busy_error(runs_dir)
        sweep_dir = sweep_dir if args.resume else new_sweep_dir(runs_dir)
        lock.note(f"{SWEEPS_DIR}/{sweep_dir.name}")
    except (UserError, OSError) as err:
        tell_user(f"Error: {err}")
        if lock is not None:
            lock.close()
        return 1
    with lock:
        print(sweep_dir, flush=True)
        (sweep_dir / PID_FILE).write_text(str(os.getpid()))  # the UI stops a sweep started here too
        # SIGTERM (the UI's stop after a timeout) stops the current trial, which keeps its adapter.
        signal.signal(signal.SIGTERM, lambda *_: (sweep_dir / STOP_FILE).touch())
        sweep = Sweep(sweep_dir, base, runs_dir, budget_s, max_trials, space)
        try:
            outcome = sweep.run()
        except Exception as err:  # noqa: BLE001 - one sentence; the details are in the log
            log.exception("sweep failed")
            sweep.save(status="failed", message=f"The search failed ({type(err).__name__}); see the log.")
            tell_user(f"Error: the search failed ({type(err).__name__}: {err}).")
            run_queue.after_run(runs_dir, "failed", lock)
            return 1
        run_queue.after_run(runs_dir, outcome, lock)  # the next queued entry, handed this lock
        if outcome == "failed":
            tell_user(f"Error: {sweep.record.get('message')}")
            return 1
        print(sweep.record.get("message", outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
