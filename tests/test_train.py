"""End-to-end training on the tiny model: files, events, loss, and the CLI."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from studio import train
from studio.config import TINY_TEST_MODEL, RunConfig
from studio.events import read_events, read_status, replay

from .conftest import studio_cmd


def tiny_config(data_path, **overrides) -> RunConfig:
    values = dict(model=TINY_TEST_MODEL, data_path=str(data_path), max_steps=30, learning_rate=5e-3,
                  batch_size=4, max_seq_length=128, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                  validation_fraction=0.2, eval_every=10, save_every=0, warmup_ratio=0.0,
                  lr_scheduler="constant_with_warmup", report_card=False)  # the report's own tests: test_evaluate
    values.update(overrides)
    return RunConfig(**values)


def test_run_writes_adapter_events_and_loss_falls(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    # The split keeps repeated rows on one side (studio.data): a fifth held out from five memorised answers is an
    # answer never trained on. Validating on the training answers themselves shows the fall this test is about.
    status = train.run(tiny_config(tiny_data, validation_path=str(tiny_data)), run_dir)
    assert status == "finished", (run_dir / "worker.log").read_text()[-2000:]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 30
    assert read_status(run_dir)["status"] == "finished"
    events = read_events(run_dir)
    kinds = [e["type"] for e in events]
    # The untouched model is evaluated first, so the validation curve starts at step 0.
    assert kinds[:2] == ["eval", "start"] and events[0]["step"] == 0 and kinds[-1] == "end"
    history = replay(events)
    assert history.train_steps == list(range(1, 31))
    assert all(e["learning_rate"] is not None for e in events if e["type"] == "log")
    # One evaluation per point: the Trainer's at the last step is the final one, not repeated after training.
    assert [e["step"] for e in events if e["type"] == "eval"] == [0, 10, 20, 30]
    # The rows repeat five memorised answers: the loss must fall a lot.
    first, last = sum(history.train_loss[:3]) / 3, sum(history.train_loss[-3:]) / 3
    assert last < 0.6 * first, history.train_loss
    assert history.eval_loss[-1] < history.eval_loss[0]
    assert history.last_log["tokens_per_s"] > 0


def test_padded_batches_train_too(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    status = train.run(tiny_config(tiny_data, packing=False, max_steps=4, eval_every=0), run_dir)
    assert status == "finished"
    # Validation every 0 steps: measured before training and once at the end.
    assert [e["step"] for e in read_events(run_dir) if e["type"] == "eval"] == [0, 4]


def test_a_run_in_process_leaves_no_log_handler_behind(tiny_data, tmp_path):
    # Tests and benchmarks run training inside their own process: a worker.log left attached to the root
    # logger broke a later, unrelated test once its run folder was deleted (CI, FileNotFoundError on a log line).
    handlers_before = list(logging.getLogger().handlers)
    run_dir = tmp_path / "run"
    assert train.run(tiny_config(tiny_data, max_steps=1, eval_every=0, validation_fraction=0.0), run_dir) == "finished"
    assert logging.getLogger().handlers == handlers_before
    shutil.rmtree(run_dir)
    logging.getLogger("httpx").warning("a log line after the run folder is gone")  # must not raise


def test_the_last_step_is_evaluated_once_when_the_interval_does_not_divide_it(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    assert train.run(tiny_config(tiny_data, max_steps=5, eval_every=3), run_dir) == "finished"
    assert [e["step"] for e in read_events(run_dir) if e["type"] == "eval"] == [0, 3, 5]


def test_stop_during_the_first_evaluation_trains_nothing(tiny_data, tmp_path, monkeypatch):
    from transformers import Trainer

    run_dir = tmp_path / "run"
    evaluate = Trainer.evaluate

    def evaluate_then_stop(self, *args, **kwargs):  # the user presses Stop while the step-0 loss is measured
        metrics = evaluate(self, *args, **kwargs)
        (run_dir / "STOP").touch()
        return metrics

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_stop)
    assert train.run(tiny_config(tiny_data, max_steps=5), run_dir) == "stopped"
    history = replay(read_events(run_dir))
    assert history.train_steps == [] and history.eval_steps == [0] and history.end["step"] == 0
    assert (run_dir / "adapter" / "adapter_config.json").is_file()


def test_qlora_without_cuda_fails_with_the_fix(tiny_data, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    assert train.run(tiny_config(tiny_data, method="qlora"), run_dir) == "failed"
    error = replay(read_events(run_dir)).error
    assert "needs a CUDA GPU" in error["message"] and "LoRA fp32" in error["message"]
    assert "Traceback" in (run_dir / "worker.log").read_text()  # the details go to the log only


def test_cli_train_prints_run_folder(tiny_data, tmp_path):
    config_path = tmp_path / "config.json"
    tiny_config(tiny_data, max_steps=3, eval_every=0).save(config_path)
    out = subprocess.run(studio_cmd("train", str(config_path), "--runs-dir", str(tmp_path / "runs")),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.strip().splitlines()) == 1  # only the run folder
    run_dir = Path(out.stdout.strip())
    assert run_dir.parent == tmp_path / "runs"
    assert read_status(run_dir)["status"] == "finished"


@pytest.mark.parametrize("content,words", [
    ('{"epochs": "many"}', ["epochs", "number"]),
    ("[1, 2", ["not valid JSON"]),
])
def test_cli_bad_config_is_one_line(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = subprocess.run(studio_cmd("train", str(path), "--runs-dir", str(tmp_path)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stderr.startswith("Error: ")
    assert len(out.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in out.stderr


def test_cli_bad_data_fails_cleanly(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"messages": [}\n')
    config_path = tmp_path / "config.json"
    tiny_config(bad).save(config_path)
    out = subprocess.run(studio_cmd("train", str(config_path), "--runs-dir", str(tmp_path / "runs")),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "line 1 " in out.stderr.lower()


def test_failures_become_one_sentence_with_the_fix():
    import torch

    message, kind = train.describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert kind == "oom" and "batch size" in message and "QLoRA" in message
    message, kind = train.describe_failure(OSError(28, "No space left on device"))
    assert kind == "disk" and "disk is full" in message
    message, kind = train.describe_failure(RuntimeError("boom"))
    assert kind == "crash" and "boom" in message


def test_batch_larger_than_data_is_caught_before_start(tmp_path):
    from studio.errors import ConfigError

    with pytest.raises(ConfigError, match="lower the batch size to 3"):
        RunConfig(batch_size=8).check_data_size(3)


def test_importing_the_worker_imports_no_heavy_library():
    # `python -m studio train` refuses a busy runs folder or a bad data path in well under a second because
    # studio.train (and studio.packing, studio.estimate) import torch and transformers only where they are used.
    code = ("import sys, studio.train, studio.packing, studio.estimate, studio.methods; "
            "print(sorted({'torch', 'transformers', 'peft', 'datasets'} & set(sys.modules)))")
    out = subprocess.run([*studio_cmd()[:1], "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_warm_up_starts_above_zero_and_reaches_the_full_rate(tiny_data, tmp_path):
    # 6 steps, half of them warm-up: the first step used to run at learning rate 0 (transformers' ramp starts
    # there) and so changed nothing. The events carry the rate each step used.
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_data, max_steps=6, warmup_ratio=0.5, lr_scheduler="cosine", learning_rate=1e-3,
                         validation_fraction=0.0, eval_every=0)
    assert train.run(config, run_dir) == "finished"
    rates = replay(read_events(run_dir)).learning_rate
    # Warm-up over 3 steps: 1/4, 2/4, 3/4 of the rate, then cosine from the full rate over the remaining 3 steps.
    expected = [0.25, 0.5, 0.75, 1.0, 0.75, 0.25]
    assert rates == pytest.approx([1e-3 * f for f in expected], rel=1e-6)
