"""The overfitting guard during training and the report card at its end (issue 14): early stopping, the best
evaluation's adapter, resume, the report written by the worker, report_to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio import evaluate, train
from studio.chat import ChatSession
from studio.config import TINY_TEST_MODEL, RunConfig
from studio.errors import ConfigError
from studio.events import STOP_FILE, read_events, read_status, replay

from .test_evaluate import HELD_OUT_PAIRS, TRAIN_PAIRS, run_config, write_pairs


def overfitting(root: Path, **overrides) -> RunConfig:
    """Eight distinct rows learned by heart at a high learning rate, validated on four other distinct rows (one
    validation batch): the validation loss falls while the model learns the answers' shape, then rises."""
    root.mkdir(parents=True, exist_ok=True)
    values = dict(max_steps=80, eval_every=5, early_stopping_patience=2, report_card=False)
    values.update(overrides)
    return run_config(TINY_TEST_MODEL, write_pairs(root / "train.jsonl", TRAIN_PAIRS),
                      write_pairs(root / "val.jsonl", HELD_OUT_PAIRS), **values)


def improving(root: Path, **overrides) -> RunConfig:
    """Validated on the training rows themselves: the validation loss keeps falling."""
    root.mkdir(parents=True, exist_ok=True)
    path = write_pairs(root / "train.jsonl", TRAIN_PAIRS[:4])
    values = dict(max_steps=30, eval_every=5, early_stopping_patience=2, report_card=False, learning_rate=5e-3)
    values.update(overrides)
    return run_config(TINY_TEST_MODEL, path, write_pairs(root / "val.jsonl", TRAIN_PAIRS[:4]), **values)


def run(config: RunConfig, run_dir: Path, **kwargs) -> dict:
    import torch

    torch.manual_seed(0)
    status = train.run(config, run_dir, **kwargs)
    assert status in ("finished", "stopped"), (run_dir / "worker.log").read_text()[-3000:]
    return replay(read_events(run_dir)).end


def evals(run_dir: Path) -> dict[int, float]:
    history = replay(read_events(run_dir))
    return dict(zip(history.eval_steps, history.eval_loss))


def adapter_loss(run_dir: Path, config: RunConfig) -> float:
    from studio import data

    _, val = data.load_for_config(config)
    return ChatSession.for_run(run_dir).eval_loss(val, max_seq_length=config.max_seq_length)["tuned"]


def test_a_run_that_overfits_stops_itself_and_keeps_the_best_adapter(tmp_path):
    config = overfitting(tmp_path / "data")
    run_dir = tmp_path / "run"
    end = run(config, run_dir)
    losses = evals(run_dir)
    assert end["status"] == "finished" and end["stopped_early"] is True
    assert end["step"] < 80  # it ended itself
    best = min((step for step in losses if step > 0), key=losses.get)
    assert end["best_step"] == best == end["adapter_step"] < end["step"]
    assert end["best_eval_loss"] == pytest.approx(losses[best])
    # The patience: exactly two validations after the best one, each higher.
    later = [step for step in losses if step > best]
    assert len(later) == 2 and all(losses[step] > losses[best] for step in later)
    assert "Stopped early at step" in end["message"] and "Stopped early" in read_status(run_dir)["message"]
    # The saved adapter is the best step's: its validation loss is the best evaluation's, not the last one's.
    saved = adapter_loss(run_dir, config)
    assert saved == pytest.approx(losses[best], rel=1e-3)
    assert abs(losses[end["step"]] - losses[best]) > 0.01  # so the two are told apart


def test_a_run_that_keeps_improving_is_not_stopped(tmp_path):
    run_dir = tmp_path / "run"
    end = run(improving(tmp_path / "data"), run_dir)
    losses = evals(run_dir)
    assert end["stopped_early"] is False and end["step"] == 30
    assert [step for step in losses] == [0, 5, 10, 15, 20, 25, 30]
    assert end["adapter_step"] == 30 and end["best_step"] == 30
    assert "message" not in read_status(run_dir)


def test_patience_zero_trains_every_step_and_still_keeps_the_best_adapter(tmp_path):
    config = overfitting(tmp_path / "data", early_stopping_patience=0, max_steps=50)
    run_dir = tmp_path / "run"
    end = run(config, run_dir)
    losses = evals(run_dir)
    assert end["stopped_early"] is False and end["step"] == 50
    best = min((step for step in losses if step > 0), key=losses.get)
    assert end["adapter_step"] == best < 50
    assert adapter_loss(run_dir, config) == pytest.approx(losses[best], rel=1e-3)


def test_a_resumed_run_remembers_its_best_evaluation(tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 25:
                (run_dir / STOP_FILE).touch()

    config = overfitting(tmp_path / "data", early_stopping_patience=0, max_steps=50, save_every=5)
    run_dir = tmp_path / "run"
    first = run(config, run_dir, callbacks=[StopAt()])
    assert first["status"] == "stopped" and first["step"] == 25
    before = evals(run_dir)
    best_before = min((step for step in before if step > 0), key=before.get)
    end = run(config, run_dir, resume=True)
    losses = evals(run_dir)
    assert end["status"] == "finished" and end["step"] == 50
    best = min((step for step in losses if step > 0), key=losses.get)
    assert end["best_step"] == best and end["best_eval_loss"] == pytest.approx(losses[best])
    assert best <= best_before or losses[best] < before[best_before]  # the first segment's best was counted
    assert adapter_loss(run_dir, config) == pytest.approx(losses[end["adapter_step"]], rel=1e-3)


def test_the_worker_writes_the_report_card_at_the_end_of_a_run_with_validation(tmp_path):
    run_dir = tmp_path / "run"
    end = run(improving(tmp_path / "data", report_card=True, max_steps=10), run_dir)
    report = json.loads((run_dir / evaluate.REPORT_JSON).read_text(encoding="utf-8"))
    assert (run_dir / evaluate.REPORT_HTML).is_file()
    assert end["report"] == evaluate.REPORT_HTML and end["verdict"] == report["verdict"]["text"]
    assert read_status(run_dir)["status"] == "finished"
    # Its validation loss is the run's own, though the "end" event naming the kept step comes after the report.
    history = replay(read_events(run_dir))
    losses = dict(zip(history.eval_steps, history.eval_loss))
    assert report["task"]["loss_steps"] == [0, end["adapter_step"]]
    assert report["task"]["loss"] == {"base": losses[0], "tuned": losses[end["adapter_step"]]}
    # Without validation rows, or with the report switched off: no report, and the run says so in its end event.
    for name, overrides in (("no-validation", {"validation_path": "", "validation_fraction": 0.0}),
                            ("off", {"report_card": False})):
        other = tmp_path / name
        values = improving(tmp_path / f"data-{name}", report_card=True, max_steps=3).to_dict()
        values.update(overrides)
        end = run(RunConfig(**values), other)
        assert end["report"] is None and not (other / evaluate.REPORT_JSON).exists()


def test_report_to_names_the_tracker_and_refuses_one_that_is_not_installed(tmp_path, monkeypatch):
    import importlib.util

    assert train.tracker(RunConfig(report_to="none")) == []
    with pytest.raises(ConfigError, match="comet"):
        RunConfig(report_to="comet")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install trackio"):
        train.tracker(RunConfig(report_to="trackio"))
    # A run that asks for it fails before its first step, with that one sentence.
    run_dir = tmp_path / "run"
    status = train.run(improving(tmp_path / "data", report_to="trackio", max_steps=2), run_dir)
    assert status == "failed"
    assert "pip install trackio" in read_status(run_dir)["message"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    assert train.tracker(RunConfig(report_to="wandb")) == ["wandb"]
    assert train.training_arguments(RunConfig(report_to="none"), _lora32(), tmp_path, has_eval=False).report_to == []


def _lora32():
    from studio import methods

    return methods.get(methods.LORA32)


def test_early_stopping_is_on_by_default_and_bounded():
    assert RunConfig().early_stopping_patience == 3 and RunConfig().report_card is True
    assert RunConfig().report_to == "none"
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        RunConfig(early_stopping_patience=-1)
