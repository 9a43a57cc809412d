"""report_to with the two trackers that work offline (issue 14): a real `python -m studio train` process logs its
losses, and the report card's figures, to TensorBoard event files in the run folder and to a local Trackio project.
Nothing is sent anywhere: TensorBoard writes files, Trackio a SQLite file in TRACKIO_DIR."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from studio import train
from studio.config import TINY_TEST_MODEL

from .conftest import studio_cmd
from .test_evaluate import HELD_OUT_PAIRS, TRAIN_PAIRS, run_config, write_pairs


def _train(tmp_path: Path, report_to: str, **overrides) -> tuple[Path, dict]:
    data = tmp_path / "data"
    data.mkdir()
    values = dict(max_steps=4, eval_every=2, logging_every=1, report_to=report_to, report_card=False)
    values.update(overrides)
    config = run_config(TINY_TEST_MODEL, write_pairs(data / "train.jsonl", TRAIN_PAIRS),
                        write_pairs(data / "val.jsonl", HELD_OUT_PAIRS), **values)
    config.save(tmp_path / "config.json")
    env = {**os.environ, "STUDIO_LOG_DIR": str(tmp_path / "logs"), "STUDIO_TEST_MODELS": "1",
           "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    out = subprocess.run(studio_cmd("train", str(tmp_path / "config.json"), "--runs-dir", str(tmp_path / "runs")),
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    run_dir = Path(out.stdout.strip()) if out.stdout.strip() else None
    log = (run_dir / "worker.log").read_text()[-3000:] if run_dir and (run_dir / "worker.log").exists() else ""
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:] + log
    assert out.stdout == f"{run_dir}\n"  # the run folder only: what a tracker prints goes to the run's log
    return run_dir, env


def test_tensorboard_gets_the_losses_and_the_report_figures_in_the_run_folder(tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra; a hand-made venv without it skips, CI does not
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = _train(tmp_path, "tensorboard", report_card=True)
    folder = run_dir / train.TENSORBOARD_DIR
    assert folder.is_dir() and not any((run_dir / train.CHECKPOINTS_DIR).glob("**/events.out.tfevents*"))
    tags = set()
    for events in folder.glob("**/events.out.tfevents*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "eval/loss", "train/learning_rate"} <= tags, tags
    assert {"eval/report_chrf_tuned", "eval/report_val_loss_base", "eval/report_forgetting"} <= tags, tags


def test_trackio_logs_the_run_locally_under_the_studio_project(tmp_path):
    pytest.importorskip("trackio")
    run_dir, env = _train(tmp_path, "trackio")
    # Read back in a process of its own: trackio fixes its folder when it is first imported.
    script = ("import json, trackio.sqlite_storage as s; "
              f"print(json.dumps([sorted(k for k in row if '/' in k) for row in s.SQLiteStorage.get_logs("
              f"'{train.TRACKER_PROJECT}', '{run_dir.name}')]))")
    out = subprocess.run([str(Path(os.sys.executable)), "-c", script], capture_output=True, text=True, timeout=120,
                         env=env, check=True)
    import json

    rows = json.loads(out.stdout.strip().splitlines()[-1])
    keys = {key for row in rows for key in row}
    assert (tmp_path / "trackio").is_dir() and {"train/loss", "eval/loss"} <= keys, keys
    assert sum("train/loss" in row for row in rows) == 4  # one per step: logging_every=1, max_steps=4
