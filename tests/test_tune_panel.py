"""The Settings tab's "Find good settings" panel: a search started as a job of its own, refused twice, stopped,
drawn again from disk after a reload, and its winner put into the form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from studio import jobs, tune
from studio.errors import UserError
from studio.events import read_status
from studio.ui import tune_panel
from studio.ui.common import UIContext

from .conftest import write_messages_jsonl
from .test_train import tiny_config


@pytest.fixture
def ctx(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return UIContext(runs_dir=tmp_path / "runs", uploads_dir=uploads, model_choices=["tiny-test"],
                     default_model="tiny-test")


def form_of(config) -> tuple[list[str], list]:
    values = config.to_dict()
    return list(values), list(values.values())


def request(**changes) -> list:
    """The panel's inputs in the order the page sends them."""
    values = tune_panel.SearchRequest(**{"budget_minutes": 5, "ranks": [4, 8], "search_dropout": False, **changes})
    return [getattr(values, name) for name in tune_panel.REQUEST_FIELDS]


def wait_until(check, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_search_is_a_job_refused_twice_stopped_redrawn_after_a_reload_and_its_winner_fills_the_form(ctx):
    data = write_messages_jsonl(ctx.uploads_dir / "train.jsonl", 20)
    names, values = form_of(tiny_config(data, max_steps=8, validation_fraction=0.25))
    started = tune_panel.start_search(ctx, names, *request(), *values)
    assert started.notice.startswith("Started the search"), started.notice
    sweep_dir = tune_panel.shown_sweep(ctx.runs_dir)
    pid = int((sweep_dir / "worker.pid").read_text())
    try:
        assert jobs._pid_alive(pid) and os.getpgid(pid) == pid  # its own process group, like a run's worker
        # A second press, and a run from the Train tab, are refused with one sentence while it searches.
        again = tune_panel.start_search(ctx, names, *request(), *values)
        assert "already running" in again.notice and again.notice.count(". ") <= 1
        with pytest.raises(jobs.RunBusyError):
            jobs.start_run(tiny_config(data), ctx.runs_dir)
        # Trials are runs: wait for two finished ones (the importances need two) and a third training.
        wait_until(lambda: sum(t.get("status") == "complete" for t in tune.read_sweep(sweep_dir)["trials"]) >= 2
                   and any(t.get("status") == "running" for t in tune.read_sweep(sweep_dir)["trials"]),
                   180, "two finished trials and a third training")
        assert tune_panel.stop_search(ctx).startswith("Stopping the search")
        state = tune.wait_for_sweep(sweep_dir, timeout_s=60)
        wait_until(lambda: not jobs._pid_alive(pid), 30, "the search process to end")
    finally:
        if jobs._pid_alive(pid):
            os.killpg(pid, 9)
    assert state["status"] == "stopped"
    record = tune.read_sweep(sweep_dir)
    last = max(record["trials"], key=lambda t: t["number"])  # the trial training when Stop was pressed ended too
    assert last["status"] in ("stopped", "pruned", "complete") and read_status(ctx.runs_dir / last["run_id"])[
        "status"] in ("stopped", "pruned", "finished")
    lock = jobs.try_lock(ctx.runs_dir)  # the lock is free again: a run may start
    assert lock is not None
    lock.close()

    # A reload: a fresh page (no "seen") draws everything from the sweep folder.
    view = tune_panel.poll_search(ctx, None)
    assert "stopped" in view.status and sweep_dir.name in view.status
    table = view.table["value"]
    assert list(table["Trial"]) == sorted(t["number"] for t in record["trials"])
    assert "finished" in set(table["Status"]) and set(table["Status"]) <= set(tune_panel.STATUS_WORDS.values())
    plot = view.plot["value"]
    assert {f"trial {t['number']}" for t in record["trials"]} <= set(plot["trial"])
    assert view.stop["interactive"] is False and view.use["interactive"] is True
    assert "Which setting mattered most" in view.importances and "%" in view.importances
    assert tune_panel.poll_search(ctx, view.seen) == tune_panel.SearchView()  # nothing changed: nothing redrawn

    # "Use these settings": the best trial's values into the form, the rest left as it is.
    updates = tune_panel.use_best(ctx, names)
    best = json.loads((sweep_dir / "best_config.json").read_text())
    filled = {n: u["value"] for n, u in zip(names, updates[:-1]) if isinstance(u, dict) and "value" in u}
    assert filled == {k: best[k] for k in ("learning_rate", "lora_rank", "lora_alpha")}
    assert f"trial {record['best_trial']}" in updates[-1]


def test_a_killed_search_is_shown_as_failed_with_how_to_resume(tmp_path):
    runs = tmp_path / "runs"
    sweep_dir = tune.new_sweep_dir(runs)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (sweep_dir / "sweep.json").write_text(json.dumps({"status": "running", "trials": [], "updated": 0}))
    (sweep_dir / "worker.pid").write_text(str(dead.pid))
    state = tune.sweep_state(sweep_dir)
    assert state["status"] == "failed" and "--resume" in state["message"]
    assert tune.active_sweep(runs) is None


def test_bad_ranges_are_one_sentence_and_nothing_starts(ctx):
    data = write_messages_jsonl(ctx.uploads_dir / "train.jsonl", 20)
    names, values = form_of(tiny_config(data, max_steps=8, validation_fraction=0.25))
    for changes, words in (({"ranks": []}, "LoRA rank"), ({"lr_low": 1e-2, "lr_high": 1e-4}, "learning-rate"),
                           ({"budget_minutes": 2}, "5 minutes")):
        notice = tune_panel.start_search(ctx, names, *request(**changes), *values).notice
        assert notice.startswith("**Cannot start the search:**") and words in notice, notice
    names, values = form_of(tiny_config(data, max_steps=8, validation_fraction=0.0))
    assert "validation" in tune_panel.start_search(ctx, names, *request(), *values).notice
    assert tune.sweep_dirs(ctx.runs_dir) == []
    with pytest.raises(UserError):
        tune_panel.SearchRequest(dropout_low=0.5, dropout_high=0.1).space()


def test_a_stop_pressed_while_the_search_starts_still_stops_it(ctx):
    data = write_messages_jsonl(ctx.uploads_dir / "train.jsonl", 20)
    names, values = form_of(tiny_config(data, max_steps=8, validation_fraction=0.25))
    assert tune_panel.start_search(ctx, names, *request(), *values).notice.startswith("Started")
    sweep_dir = tune_panel.shown_sweep(ctx.runs_dir)
    assert "starting" in tune_panel.draw_search(ctx.runs_dir).status
    assert tune_panel.stop_search(ctx).startswith("Stopping")  # before the process has even imported torch
    state = tune.wait_for_sweep(sweep_dir, timeout_s=120)
    assert state["status"] == "stopped" and state["trials"] == []
