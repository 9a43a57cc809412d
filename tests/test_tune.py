"""The settings search: real trials in the runs folder, pruning, best_config.json, budget, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from studio import jobs, tune
from studio.config import RunConfig
from studio.errors import ConfigError
from studio.events import read_status

from .conftest import studio_cmd
from .test_train import tiny_config


def test_budget_words():
    assert tune.parse_budget("20m") == 1200 and tune.parse_budget("1.5h") == 5400 and tune.parse_budget("90") == 90
    for bad in ("soon", "5s", "9h", "-1m"):
        with pytest.raises(ConfigError):
            tune.parse_budget(bad)


def test_a_sweep_runs_trials_prunes_the_weak_and_writes_the_best_config(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    base = tiny_config(tiny_data, max_steps=8, validation_fraction=0.25, report_card=True)
    sweep_dir = tune.new_sweep_dir(runs)
    # A wide learning-rate range on purpose: some trials barely move and must be stopped early.
    space = tune.SearchSpace(learning_rate=(1e-6, 1e-2), lora_rank=(4, 8), lora_dropout=None)
    sweep = tune.Sweep(sweep_dir, base, runs, budget_s=900, max_trials=6, space=space, seed=3)
    assert sweep.run() == "finished"
    record = tune.read_sweep(sweep_dir)
    statuses = [t["status"] for t in record["trials"]]
    assert len(statuses) == 6 and "complete" in statuses and "pruned" in statuses, statuses
    for trial in record["trials"]:
        run_dir = runs / trial["run_id"]
        trial_config = RunConfig.load(run_dir / "config.json")
        assert trial_config.run_name == f"{sweep_dir.name} trial {trial['number']}"
        # No report card per trial (it would spend the budget); the winner's config asks for one again.
        assert trial_config.report_card is False and not (run_dir / "report.json").exists()
        if trial["status"] == "pruned":  # stopped early, its partial curve kept, and it says so
            assert read_status(run_dir)["status"] == "pruned" and trial["steps"] < 8
        assert set(trial["params"]) >= {"learning_rate", "lora_rank", "lora_alpha"} and trial["seconds"] > 0
    # The trials are runs: the run history lists them (and not the sweeps folder).
    assert {s.run_id for s in jobs.list_runs(runs)} == {t["run_id"] for t in record["trials"]}
    best = min((t for t in record["trials"] if t["status"] == "complete"), key=lambda t: t["best_val_loss"])
    config = json.loads((sweep_dir / "best_config.json").read_text())
    assert config["learning_rate"] == best["params"]["learning_rate"] and config["max_steps"] == 8
    assert config["report_card"] is True  # the base's choice, for the run that trains the winner
    RunConfig(**config)  # trains as it is
    assert record["best_trial"] == best["number"] and "trials finished" in record["message"]


def test_the_sweep_ends_inside_its_budget_and_starts_no_trial_that_cannot_finish(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    sweep_dir = tune.new_sweep_dir(runs)
    base = tiny_config(tiny_data, max_steps=6, validation_fraction=0.25)
    sweep = tune.Sweep(sweep_dir, base, runs, budget_s=60, max_trials=None,
                       space=tune.SearchSpace(lora_dropout=None), seed=0)
    started = time.time()
    assert sweep.run() == "finished"
    elapsed = time.time() - started
    record = tune.read_sweep(sweep_dir)
    # Trials run while the measured pace says the next one fits; the one that would not is never started.
    assert record["skipped"] == 1 and len(record["trials"]) >= 2
    assert 0.5 * 60 < elapsed < 60 * 1.1
    assert all(t["status"] in ("complete", "pruned") for t in record["trials"])


def test_a_killed_sweep_resumes_and_reruns_the_interrupted_trial(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    config = tmp_path / "config.json"
    tiny_config(tiny_data, max_steps=400, validation_fraction=0.25).save(config)
    proc = subprocess.Popen(studio_cmd("tune", str(config), "--budget", "10m", "--trials", "2", "--runs-dir",
                                       str(runs)), stdout=subprocess.PIPE, text=True, start_new_session=True)
    sweep_dir = None
    try:
        sweep_dir = __import__("pathlib").Path(proc.stdout.readline().strip())
        deadline = time.time() + 120
        while time.time() < deadline:
            trials = tune.read_sweep(sweep_dir).get("trials", [])
            if trials and (runs / trials[0]["run_id"] / "events.jsonl").is_file() and \
                    '"log"' in (runs / trials[0]["run_id"] / "events.jsonl").read_text():
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the first trial did not start training")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a crash or `kill -9` would
        proc.wait(timeout=30)
    interrupted = tune.read_sweep(sweep_dir)["trials"][0]["params"]
    # Resumed with short trials this time would change the search; it keeps its own settings. Shorten the trials
    # through the record (what a person cannot do) only to keep the test short.
    record = tune.read_sweep(sweep_dir)
    record["base_config"]["max_steps"] = 4
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    out = subprocess.run(studio_cmd("tune", "--resume", str(sweep_dir)), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    record = tune.read_sweep(sweep_dir)
    first = next(t for t in record["trials"] if t["number"] == 0)
    assert first["status"] == "failed" and "killed" in first["message"]
    rerun = [t for t in record["trials"] if t["number"] > 0 and t["params"] == interrupted]
    assert rerun and rerun[0]["status"] in ("complete", "pruned")
    assert len([t for t in record["trials"] if t["status"] in ("complete", "pruned")]) == 2
    assert (sweep_dir / "best_config.json").is_file()


def test_a_search_whose_trials_cannot_validate_stops_at_once_and_says_why(tmp_path):
    from .conftest import write_messages_jsonl

    runs = tmp_path / "runs"
    # 40 rows repeating five answers: the split keeps repeats on one side, so a tenth held out comes out empty.
    data = write_messages_jsonl(tmp_path / "repeats.jsonl", 40)
    sweep_dir = tune.new_sweep_dir(runs)
    sweep = tune.Sweep(sweep_dir, tiny_config(data, max_steps=4, validation_fraction=0.1), runs, budget_s=300,
                       max_trials=4, space=tune.SearchSpace(lora_dropout=None))
    assert sweep.run() == "failed"
    record = tune.read_sweep(sweep_dir)
    assert len(record["trials"]) == 1 and record["status"] == "failed" and record["message"] == tune.NO_VALIDATION
