"""The training worker: run(config, run_dir) fine-tunes one LoRA adapter and reports through events.

It runs in its own process (`python -m studio train CONFIG.json`), never inside the UI server,
so a crash or an out-of-memory error takes down only the run. It never imports gradio.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .events import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LOG_FILE,
    STOP_FILE,
    EventWriter,
    read_events,
    replay,
    write_status,
)

log = logging.getLogger("studio.train")

OOM_ADVICE = ("Out of memory: lower the batch size, shorten the max sequence length, or use QLoRA 4-bit "
              "(then resume from the last checkpoint).")


# --- entry ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio train",
                                     description="Fine-tune one LoRA adapter from a config file and print the run "
                                                 "folder. Every field of the config is listed in README.md.")
    parser.add_argument("config", help="path to a RunConfig JSON file (e.g. assets/quickstart.json)")
    parser.add_argument("--runs-dir", default="runs", help="folder that holds one sub-folder per run (default: runs)")
    parser.add_argument("--run-id", default=None, help="use this run id instead of a new timestamped one")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its last checkpoint (the config argument is ignored)")
    args = parser.parse_args(argv)
    from . import jobs

    try:
        if args.resume:
            run_dir = Path(args.resume)
            config = RunConfig.load(run_dir / CONFIG_FILE)
        else:
            config = RunConfig.load(args.config)
            run_dir = jobs.create_run_dir(config, Path(args.runs_dir), args.run_id)
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(run_dir, flush=True)
    status = run(config, run_dir, resume=bool(args.resume))
    if status == "failed":
        error = replay(read_events(run_dir)).error
        print(f"Error: {error.get('message', 'the run failed')} (log: {run_dir / LOG_FILE})", file=sys.stderr)
        return 1
    return 0


def run(config: RunConfig, run_dir: str | Path, resume: bool = False) -> str:
    """Train, writing events and status into run_dir. Returns the final status; never raises."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _log_to_file(run_dir / LOG_FILE)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    config.save(run_dir / CONFIG_FILE)
    (run_dir / "worker.pid").write_text(str(os.getpid()))
    events = EventWriter(run_dir)
    # SIGTERM (the UI's stop after a timeout) ends the run as "stopped", saving what we have.
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / STOP_FILE).touch())
    write_status(run_dir, status="starting", pid=os.getpid())
    started = time.time()
    try:
        status = _train(config, run_dir, events, resume)
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence plus the log
        message, kind = describe_failure(err)
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        events.write("error", message=message, kind=kind, log_tail=_tail(run_dir / LOG_FILE))
        write_status(run_dir, status="failed", message=message, pid=os.getpid(), elapsed=time.time() - started)
        status = "failed"
    finally:
        events.close()
        (run_dir / "worker.pid").unlink(missing_ok=True)
    return status


def describe_failure(err: BaseException) -> tuple[str, str]:
    """(one sentence for the user, kind) for any exception from a run."""
    import torch

    if isinstance(err, UserError):
        return str(err), "user"
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
        return OOM_ADVICE, "oom"
    if isinstance(err, OSError) and err.errno in (28, 122):  # ENOSPC, EDQUOT
        return "The disk is full: free some space (old runs can be deleted in the Train tab), then resume.", "disk"
    if isinstance(err, OSError):
        return f"A file could not be read or written ({err.strerror or err}): check the disk and permissions, " \
               f"then resume.", "disk"
    return f"Training crashed ({type(err).__name__}: {err}); the log below has the details.", "crash"


# --- build ------------------------------------------------------------------------------
def _train(config: RunConfig, run_dir: Path, events: EventWriter, resume: bool) -> str:
    from transformers import PrinterCallback, ProgressCallback, Trainer

    from . import data, models

    method = models.resolve_method(config)
    log.info("method %s, config %s", method, config.to_json())
    tokenizer = models.load_tokenizer(config.model, config.trust_remote_code)
    train_examples, val_examples = data.load_for_config(config)
    train_set = encode_dataset(train_examples, tokenizer, config)
    val_set = encode_dataset(val_examples, tokenizer, config) if val_examples else None
    config.check_data_size(len(train_set))

    model = build_model(config, method)
    args = training_arguments(config, method, run_dir, has_eval=val_set is not None,
                              n_train=len(train_set))
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=make_collator(config, tokenizer), processing_class=tokenizer,
                      callbacks=[EventCallback(run_dir, events, config, method)])
    # Progress goes to events.jsonl; the worker's stdout carries only the run folder.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        log.info("no checkpoint to resume from; starting from step 0")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    stopped = (run_dir / STOP_FILE).exists()
    if val_set is not None and not stopped:
        metrics = trainer.evaluate()
        events.write("eval", step=trainer.state.global_step, eval_loss=metrics.get("eval_loss"))
    adapter_dir = run_dir / ADAPTER_DIR
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    status = "stopped" if stopped else "finished"
    speed = replay(read_events(run_dir)).last_log.get("tokens_per_s")
    if speed and trainer.state.global_step >= 10:  # too short a run measures start-up, not speed
        from .estimate import record_speed

        record_speed(config.model, method, speed)
    events.write("end", status=status, step=trainer.state.global_step, adapter=ADAPTER_DIR,
                 peak_memory_gb=peak_memory_gb())
    write_status(run_dir, status=status, step=trainer.state.global_step, total_steps=trainer.state.max_steps,
                 pid=os.getpid())
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    return status


def encode_dataset(examples: list[dict], tokenizer, config: RunConfig):
    """Tokenise once into a datasets.Dataset of input_ids / labels (and a length for grouping)."""
    from datasets import Dataset

    from . import data

    rows = [data.encode_example(ex, tokenizer, config.max_seq_length, config.train_on_answers_only)
            for ex in examples]
    rows = [r for r in rows if any(label != -100 for label in r["labels"])]
    if not rows:
        from .errors import DataError

        raise DataError("No example has any trained token left after cutting to max_seq_length: raise "
                        "max_seq_length or check the response column.")
    return Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
                              "length": [len(r["input_ids"]) for r in rows]})


def build_model(config: RunConfig, method: str):
    from peft import get_peft_model, prepare_model_for_kbit_training

    from . import models

    model = models.load_base_model(config.model, method, config.trust_remote_code)
    checkpointing = config.gradient_checkpointing or method == "qlora"
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False  # the KV cache is useless while training and costs memory
    return get_peft_model(model, models.lora_config(config))


def make_collator(config: RunConfig, tokenizer):
    """Padding-free batches when packing is on (attention boundaries from position_ids), else pad to longest."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if config.packing:
        return _DropLength(DataCollatorWithFlattening(return_position_ids=True, separator_id=-100))
    return _DropLength(DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))


class _DropLength:
    """The 'length' column is for the sampler only; the model must not see it."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        return self.inner([{k: v for k, v in f.items() if k != "length"} for f in features])


def training_arguments(config: RunConfig, method: str, run_dir: Path, has_eval: bool, n_train: int):
    import importlib.util

    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    half = method in ("qlora", "lora16")
    bf16 = half and cuda and torch.cuda.is_bf16_supported()
    eval_every = config.eval_every if has_eval and config.eval_every > 0 else 0
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        logging_steps=config.logging_every,
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every or None,
        save_strategy="steps" if config.save_every > 0 else "no",
        save_steps=config.save_every if config.save_every > 0 else 500,
        save_total_limit=config.keep_checkpoints,
        seed=config.seed,
        data_seed=config.seed,
        optim="paged_adamw_8bit" if method == "qlora" else "adamw_torch",
        bf16=bf16,
        fp16=half and cuda and not bf16,
        use_cpu=not cuda,
        # Similar lengths in a batch waste less on padding (and balance packed batches).
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = Path(run_dir) / CHECKPOINTS_DIR
    candidates = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


def peak_memory_gb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


# --- loop reporting ---------------------------------------------------------------------
def _make_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class EventCallback(_make_callback_base()):
    """Turns Trainer hooks into events and status updates; checks the STOP file every step."""

    def __init__(self, run_dir: Path, events: EventWriter, config: RunConfig, method: str):
        self.run_dir, self.events, self.config, self.method = run_dir, events, config, method
        self.t0 = time.time()
        self.tokens_at_start = 0
        self.last_status = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        self.tokens_at_start = state.num_input_tokens_seen or 0
        self.step_at_start = state.global_step
        self.events.write("start", total_steps=state.max_steps, method=self.method, model=self.config.model,
                          resumed_from=state.global_step or None, epochs=args.num_train_epochs)
        self._status(state, "running", force=True)

    def on_step_end(self, args, state, control, **kwargs):
        if (self.run_dir / STOP_FILE).exists():
            log.info("stop requested at step %d", state.global_step)
            control.should_training_stop = True
            control.should_save = True  # stop = a checkpoint to resume from, plus the adapter
            self._status(state, "stopping", force=True)
        else:
            self._status(state, "running")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.events.write("log", step=state.global_step, loss=logs["loss"],
                              learning_rate=logs.get("learning_rate"), epoch=state.epoch,
                              grad_norm=logs.get("grad_norm"), **self._speed(state))
        if "eval_loss" in logs:
            self.events.write("eval", step=state.global_step, eval_loss=logs["eval_loss"])

    def on_save(self, args, state, control, **kwargs):
        self.events.write("checkpoint", step=state.global_step,
                          path=f"{CHECKPOINTS_DIR}/checkpoint-{state.global_step}")

    def _speed(self, state) -> dict:
        elapsed = max(time.time() - self.t0, 1e-6)
        steps_done = max(state.global_step - self.step_at_start, 1)
        remaining = max(state.max_steps - state.global_step, 0)
        tokens = (state.num_input_tokens_seen or 0) - self.tokens_at_start
        return {"elapsed_s": elapsed, "eta_s": elapsed / steps_done * remaining, "tokens_per_s": tokens / elapsed,
                "memory_gb": current_memory_gb(), "total_steps": state.max_steps}

    def _status(self, state, status: str, force: bool = False):
        # status.json at most twice a second: it is read by pollers, not a log.
        now = time.time()
        if not force and now - self.last_status < 0.5:
            return
        self.last_status = now
        write_status(self.run_dir, status=status, step=state.global_step, epoch=state.epoch, pid=os.getpid(),
                     **self._speed(state))


def current_memory_gb() -> float:
    import psutil
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**30
    return psutil.Process().memory_info().rss / 2**30


def _log_to_file(path: Path):
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Library warnings go to the run's log, not the terminal of the person watching the UI.
    logging.captureWarnings(True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def math_ceil_steps(n_rows: int, config: RunConfig) -> int:
    """Optimiser steps a run will take (for estimates)."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(n_rows / config.batch_size / config.gradient_accumulation)
    return max(1, math.ceil(per_epoch * config.epochs))
