"""The training worker: run(config, run_dir) fine-tunes one LoRA adapter and reports through events.

It runs in its own process (`python -m studio train CONFIG.json`), never inside the UI server,
so a crash or an out-of-memory error takes down only the run. It never imports gradio.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from . import distributed, feedback, methods, packing
from .config import RunConfig
from .errors import ConfigError, DataError, UserError
from .events import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    DISK_FULL_ERRNOS,
    LOG_FILE,
    PID_FILE,
    STOP_FILE,
    EventWriter,
    log_tail,
    write_status,
)
from .fileio import replacing_folder
from .logs import ArgumentParser, log_path, send_stderr_to_log, tell_user
from .methods import Method

log = logging.getLogger("studio.train")

OOM_ADVICE = ("Out of memory: lower the batch size, shorten the max sequence length, or use QLoRA 4-bit "
              "(then resume from the last checkpoint).")

# Speed levers of the default path, each measured by bench/train_cpu.py (numbers in bench/README.md). They are
# module constants so that the benchmark can switch one off and measure what it pays; nothing else changes them.
VARLEN_ATTENTION = True  # packed batches: causal attention per example, not one masked square over the whole batch
TRAINED_LOGITS_ONLY = True  # vocabulary logits and loss only where a token is trained (answers), not on prompts
TUNE_CPU_THREADS = True  # on a CPU, time steps with each thread count and keep the fastest (cores may be shared)
CACHE_TOKENIZED = True  # reuse the tokenised data of an earlier run on the same file, tokenizer and settings
FAST_DROPOUT = True  # on a CPU, LoRA dropout masks from 16-bit random numbers: a third of the cost of nn.Dropout

# The adapter of the lowest validation loss so far, kept beside the Trainer's checkpoints (its rotation only
# removes checkpoint-*); at the end it becomes the run's adapter when the last evaluation is worse.
# (Its home would be studio/events.py, beside ADAPTER_DIR and CHECKPOINTS_DIR.)
BEST_ADAPTER_DIR = f"{CHECKPOINTS_DIR}/best-adapter"



# --- entry ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studio train",
                            description="Fine-tune one LoRA adapter from a config file and print the run folder. "
                                        "Every field of the config is listed in README.md.")
    parser.add_argument("config", nargs="?", default=None,
                        help="path to a RunConfig JSON file (e.g. assets/quickstart.json); with --from-run, optional "
                             "settings that replace the parent's")
    parser.add_argument("--runs-dir", default="runs", help="folder that holds one sub-folder per run (default: runs)")
    parser.add_argument("--run-id", default=None, help="use this run id instead of a new timestamped one")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its last checkpoint (the config argument is ignored)")
    parser.add_argument("--from-run", metavar="RUN_DIR", default=None,
                        help="train the next version of the run in RUN_DIR: from its adapter, on its data plus the "
                             "corrections made in Chat (the new run goes beside it)")
    # torchrun's vocabulary (studio/distributed.py); all but --node-rank are also config fields, written into the
    # run's config.json. --node-rank differs per machine: the same config file serves every machine.
    several = parser.add_argument_group("several GPUs or machines (torchrun's flags)")
    several.add_argument("--nproc-per-node", metavar="N", default=None,
                         help="processes on this machine, one per GPU (the config's devices: auto or a number)")
    several.add_argument("--nnodes", metavar="M", type=int, default=None, help="machines the run spans (nodes)")
    several.add_argument("--node-rank", metavar="R", type=int, default=0,
                         help="this machine's number, 0 to M-1; 0 is the machine whose run folder shows the run")
    several.add_argument("--master-addr", metavar="HOST", default=None, help="address of machine 0 (master_addr)")
    several.add_argument("--master-port", metavar="P", type=int, default=None, help="free port on machine 0")
    parser.add_argument(distributed.RANK_FLAG, dest="rank_of", metavar="RUN_DIR", default=None,
                        help=argparse.SUPPRESS)  # one rank of a run: started by torchrun, never by a person
    args = parser.parse_args(argv)
    if args.rank_of:
        return rank_main(Path(args.rank_of))
    from . import jobs

    lock = None
    try:
        # Everything that can refuse the run comes before its folder exists: a refused start leaves nothing behind.
        parent_dir = Path(args.from_run) if args.from_run else None
        if args.resume:
            run_dir = Path(args.resume)
            config = RunConfig.load(run_dir / CONFIG_FILE)
            runs_dir = run_dir.parent
            if distributed.with_cli_overrides(config, args) != config:
                raise ConfigError(f"{run_dir.name} trained with devices {config.devices} on {config.nodes} machine(s): "
                                  f"resume it with the same processes (drop --nproc-per-node and the other "
                                  f"torchrun flags).")
        elif parent_dir is not None:
            config = jobs.next_version(parent_dir, RunConfig.load(args.config) if args.config else None)
            runs_dir = parent_dir.parent  # beside its parent, whose adapter it starts from
        elif not args.config:
            raise ConfigError("No config file given: `studio train CONFIG.json` (assets/quickstart.json is one), or "
                              "--resume RUN_DIR, or --from-run RUN_DIR.")
        else:
            config = RunConfig.load(args.config)
            check_data_files(config)
            goal = methods.OBJECTIVES.get(config.objective)
            if goal is not None and goal.needs_preferences:  # on data without preference pairs: refused with the fix
                from . import data

                data.objective_of(config)
            runs_dir = Path(args.runs_dir)
        if not args.resume:
            config = distributed.with_cli_overrides(config, args)
        launch_plan = distributed.plan(config, args.node_rank)  # None: one process, trained in this one
        # The process that trains holds the runs-folder lock for its whole life: handed over by the UI that spawned
        # it, or taken here. The kernel releases it when this process ends, however it ends.
        lock = jobs.inherited_lock(runs_dir) or jobs.try_lock(runs_dir)
        if lock is None:
            raise jobs.busy_error(runs_dir)
        if parent_dir is not None:
            run_dir = jobs.create_next_version_dir(config, parent_dir, args.run_id)
            config = RunConfig.load(run_dir / CONFIG_FILE)  # with its corrections file
        elif not args.resume:
            run_dir = jobs.create_run_dir(config, runs_dir, args.run_id)
        lock.note(run_dir.name)
    except (UserError, OSError) as err:
        message = str(err) if isinstance(err, UserError) else describe_failure(err)[0]
        tell_user(f"Error: {message}")
        if lock is not None:
            lock.close()
        return 1
    with lock:
        print(run_dir, flush=True)
        if log_path() is not None:  # started as `python -m studio train`: C-level noise belongs to this run's log
            send_stderr_to_log(run_dir / LOG_FILE)
        # stdout carries the run folder only (scripts read it): what libraries print during the run (Trackio's
        # "* Run finished ...") goes to the run's log.
        with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file):
            if launch_plan is None:
                status, message = run_and_describe(config, run_dir, resume=bool(args.resume))
            else:
                handler = _log_to_file(run_dir / LOG_FILE)
                try:
                    status, message = distributed.launch(run_dir, launch_plan)
                finally:
                    logging.getLogger().removeHandler(handler)
            from . import run_queue

            run_queue.after_run(runs_dir, status, lock)  # the next queued run starts, handed this lock
    if status == "failed":
        tell_user(f"Error: {message} (log: {run_dir / LOG_FILE})")
        return 1
    return 0


def rank_main(run_dir: Path) -> int:
    """One rank of a run of several processes (torchrun started it; the launcher holds the lock and made run_dir):
    train from the run's config, resuming from its last checkpoint when there is one, like a fresh run started by
    the UI. Exits non-zero when the run failed, so that torchrun ends the other ranks."""
    if log_path() is not None:
        send_stderr_to_log(run_dir / LOG_FILE)
    distributed.start_rank(run_dir)
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
    except UserError as err:
        distributed.record_rank_failure(run_dir, str(err))
        return 1
    status, message = run_and_describe(config, run_dir, resume=True)
    if status == "failed" and not distributed.is_main():
        distributed.record_rank_failure(run_dir, message)
    return 1 if status == "failed" else 0


def run(config: RunConfig, run_dir: str | Path, resume: bool = False, callbacks=()) -> str:
    """Train, writing events and status into run_dir. Returns the final status; never raises.

    `callbacks`: extra transformers TrainerCallbacks, called before the studio's own (benchmarks time steps with
    them)."""
    return run_and_describe(config, run_dir, resume, callbacks)[0]


def run_and_describe(config: RunConfig, run_dir: str | Path, resume: bool = False, callbacks=()) -> tuple[str, str]:
    """run(), also returning the failure's one sentence ("" unless failed): on a full disk the error event may
    never reach the file, and the CLI must still say what happened."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_handler = _log_to_file(run_dir / LOG_FILE)
    # SIGTERM (the UI's stop after a timeout) ends the run as "stopped", saving what we have.
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / STOP_FILE).touch())
    events = None
    started = time.time()
    try:
        if distributed.world_size() == 1:  # with several, the launcher cleared it and owns these files
            (run_dir / STOP_FILE).unlink(missing_ok=True)
            config.save(run_dir / CONFIG_FILE)
            (run_dir / PID_FILE).write_text(str(os.getpid()))
        events = EventWriter(run_dir)
        write_status(run_dir, status="starting", pid=distributed.run_pid())
        status, message = _train(config, run_dir, events, resume, callbacks), ""
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence plus the log
        message, kind = describe_failure(err)
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        _record_failure(run_dir, events, message, kind, elapsed=time.time() - started)
        status = "failed"
    finally:
        # Each of these may meet the same full disk: none may turn a described failure into a traceback.
        cleanups = [events.close] if events is not None else []
        if distributed.world_size() == 1:
            cleanups.append(lambda: (run_dir / PID_FILE).unlink(missing_ok=True))
        for cleanup in cleanups:
            try:
                cleanup()
            except OSError as err:
                log.info("cleanup after the run: %s", err)
        # A run inside a longer-lived process (tests, benchmarks) must not leave its log attached: the next
        # log line anywhere would reopen a worker.log whose run folder may be gone by then.
        logging.getLogger().removeHandler(log_handler)
        try:
            log_handler.close()  # flushes: a full disk refuses that too
        except OSError:
            pass
    return status, message


def _record_failure(run_dir: Path, events: EventWriter | None, message: str, kind: str, elapsed: float) -> None:
    """The error event and the failed status, each on its own: a full disk that failed the run may refuse the
    event too, and the status must still say "failed" (write_status falls back to overwriting in place)."""
    try:
        if events is not None:
            events.write("error", message=message, kind=kind, log_tail=log_tail(run_dir))
    except OSError as err:
        log.info("error event not written: %s", err)
    try:
        write_status(run_dir, status="failed", message=message, pid=distributed.run_pid(), elapsed=elapsed)
    except OSError as err:
        log.info("failed status not written: %s", err)


def describe_failure(err: BaseException) -> tuple[str, str]:
    """(one sentence for the user, kind) for any exception from a run."""
    torch = sys.modules.get("torch")  # a torch out-of-memory error needs torch imported: no import just to check

    if isinstance(err, UserError):
        return str(err), "user"
    if (torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)) or "out of memory" in str(err).lower():
        return OOM_ADVICE, "oom"
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return "The disk is full: free some space (old runs can be deleted in the Train tab), then resume.", "disk"
    if isinstance(err, OSError):
        return f"A file could not be read or written ({err.strerror or err}): check the disk and permissions, " \
               f"then resume.", "disk"
    return f"Training crashed ({type(err).__name__}: {err}); the log below has the details.", "crash"


# --- build ------------------------------------------------------------------------------
def _train(config: RunConfig, run_dir: Path, events: EventWriter, resume: bool, callbacks=()) -> str:
    from . import data, models

    method = models.training_method(config)
    objective = data.objective_of(config)  # DPO or ORPO on data without preference pairs is refused here
    log.info("method %s, objective %s, config %s", method.name, objective.name, config.to_json())
    tokenizer = models.load_tokenizer(config.model, config.trust_remote_code)
    model_config = models.load_config(config.model, config.trust_remote_code)
    if objective.needs_preferences:
        config = preference_settings(config)
        train_set, val_set = preference_datasets(config)
        step_tokens = None
    else:
        config = packing.for_model(config, model_config)
        train_set, val_set = load_datasets(config, tokenizer)
        step_tokens = longest_step_tokens(config, train_set["length"])
    config.check_data_size(len(train_set))

    precision = cpu_precision(config, model_config)
    # A next version starts from its parent's adapter; resumed from its own checkpoint, it needs the parent no more
    # (the checkpoint holds its adapter: the parent may have been deleted since).
    from_checkpoint = resume and latest_checkpoint(run_dir) is not None
    start_from = feedback.parent_adapter(run_dir, config.parent_run) if config.parent_run and not from_checkpoint \
        else None
    model = build_model(config, method, step_tokens=step_tokens, precision=precision, start_from=start_from)
    reporter = callback_class("EventCallback")(run_dir, events, config, method, precision=precision,
                                               objective=objective.name)
    keeper = callback_class("BestAdapter")(run_dir, config.early_stopping_patience if val_set is not None else 0)
    build = functools.partial(build_preference_trainer, objective) if objective.needs_preferences else build_trainer
    trainer = build(config, method, model, tokenizer, train_set, val_set, run_dir,
                    callbacks=[*callbacks, reporter, keeper], precision=precision)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        log.info("no checkpoint to resume from; starting from step 0")
    if checkpoint is not None:
        keeper.restore(int(checkpoint.name.split("-")[-1]))
    if val_set is not None and checkpoint is None:
        # The validation loss of the untouched model is the point the curve starts from: the user sees how far
        # training moved it, and the first real evaluation already draws a line, not a lone dot (a one-point
        # series is invisible in the live plot).
        write_status(run_dir, status="starting", message="Measuring the validation loss before training",
                     pid=distributed.run_pid())
        trainer.evaluate()  # its on_log writes the step-0 "eval" event
        unmark_prepared(trainer)
    # Rank 0's reading of the STOP file decides for every rank (distributed.agree): ranks that disagreed would
    # wait for each other in a collective that never comes.
    if distributed.agree((run_dir / STOP_FILE).exists()):
        log.info("stop requested before the first step")  # pressed during the evaluation above: no training
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    stopped = distributed.agree((run_dir / STOP_FILE).exists())
    step = trainer.state.global_step
    evaluated_now = any("eval_loss" in entry and entry.get("step") == step for entry in trainer.state.log_history)
    if val_set is not None and not stopped and not evaluated_now:
        # The final validation loss, unless the Trainer has just measured it (its last step was an eval step).
        trainer.evaluate()  # its on_log writes the "eval" event; every rank takes part
    adapter_dir = run_dir / ADAPTER_DIR
    if trainer.is_fsdp_enabled:
        # Sharded weights: every rank hands its shard to the save (the Trainer writes on rank 0 only). The best
        # adapter is not kept apart under FSDP (it would need the same gathering at every evaluation).
        trainer.save_model(str(adapter_dir))
    if not distributed.is_main():
        return "stopped" if stopped else "finished"  # the run's files are rank 0's to write
    last_loss = next((entry["eval_loss"] for entry in reversed(trainer.state.log_history)
                      if "eval_loss" in entry and entry.get("step") == step), None)
    adapter_step = step
    if keeper.better_than(last_loss, step) and not trainer.is_fsdp_enabled:
        # The last evaluation is worse than the best one: the adapter kept is the best evaluation's.
        import shutil

        with replacing_folder(adapter_dir) as tmp:
            shutil.copytree(run_dir / BEST_ADAPTER_DIR, tmp, dirs_exist_ok=True)
            tokenizer.save_pretrained(tmp)
        adapter_step = keeper.best_step
        log.info("adapter of step %d kept (validation loss %.4f; %.4f at step %d)", adapter_step, keeper.best_loss,
                 last_loss, step)
    else:
        if not trainer.is_fsdp_enabled:
            save_adapter(trainer.model, adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
    status = "stopped" if stopped else "finished"
    # The speed as this process measured it, not re-read from events.jsonl: the adapter is saved, and nothing in
    # that file (a damaged line) or in the speed record (a full disk) may turn a finished run into a failed one.
    speed = reporter.last_tokens_per_s
    if speed and trainer.state.global_step >= 10 and distributed.world_size() == 1:  # too short a run measures
        # start-up, not speed; several processes measure another speed than the record is for
        from .estimate import record_speed

        try:
            record_speed(config.model, speed_key(method, precision), speed)
        except Exception:  # noqa: BLE001 - a hint for the next estimate, never worth the run
            log.warning("speed not recorded", exc_info=True)
    why = ""
    if keeper.stopped_early:
        why = (f"Stopped early at step {step}: the validation loss has not gone below {keeper.best_loss:.4f} "
               f"(step {keeper.best_step}) in {keeper.patience} validations, so more training would only learn "
               f"the training rows by heart. The adapter of step {adapter_step} is kept.")
    peak_gb = peak_memory_gb()  # of the training, before the report card loads its own model
    report = None
    if config.report_card and val_set is not None and status == "finished":
        report = report_card(run_dir, trainer, step, adapter_step)
    events.write("end", status=status, step=trainer.state.global_step, adapter=ADAPTER_DIR, peak_memory_gb=peak_gb,
                 stopped_early=keeper.stopped_early, best_step=keeper.best_step, adapter_step=adapter_step,
                 best_eval_loss=keeper.best_loss, message=why or None,
                 report=report_file(report), verdict=report["verdict"]["text"] if report else None)
    write_status(run_dir, status=status, step=trainer.state.global_step, total_steps=trainer.state.max_steps,
                 pid=distributed.run_pid(), **({"message": why} if why else {}))
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    return status


def unmark_prepared(trainer) -> None:
    """After an evaluation before training, with several processes: accelerate marks the model it prepared for the
    evaluation (no DDP wrapper: evaluating needs none) as prepared for good, and train() would then train it
    unwrapped, each rank on its own gradients (measured: the ranks' weights parted after one step). Forgetting the
    mark lets train() wrap it in DDP (accelerate 1.16, transformers 5.25)."""
    model = trainer.model
    if distributed.world_size() > 1 and not trainer.is_fsdp_enabled and getattr(model, "_is_accelerate_prepared", 0):
        model._is_accelerate_prepared = False
        if model in trainer.accelerator._models:
            trainer.accelerator._models.remove(model)


def report_card(run_dir: Path, trainer, step: int, adapter_step: int) -> dict | None:
    """The run's report card (studio/evaluate.py: report.json, report.html), written here in the worker once the
    adapter is saved, its headline figures logged to the run's tracker too. A report that fails costs the report,
    never the run: the adapter is saved and the run finished; the reason goes to the log. `adapter_step`: the step
    whose adapter was kept (the "end" event that will say so is written after the report)."""
    from . import evaluate

    total = trainer.state.max_steps
    release_model(trainer)  # the report loads the base model and the saved adapter: one model in memory, not two

    def progress(stage: str) -> None:
        # "running" with a message: the run is busy, not stalled (jobs.stalled_for), until the "end" event.
        write_status(run_dir, status="running", step=step, total_steps=total, pid=distributed.run_pid(),
                     message=f"Writing the report card: {stage}")

    try:
        report = evaluate.evaluate_run(run_dir, check_gpu=False, progress=progress, adapter_step=adapter_step)
    except Exception:  # noqa: BLE001 - see the docstring
        log.warning("report card not written", exc_info=True)
        return None
    # "eval_" keys: the Trainer's trackers file them with the evaluations (TensorBoard: eval/report_chrf_tuned);
    # any other key would land under train/.
    figures = {f"eval_report_{name}": float(value) for name, value in report["headline"].items()
               if isinstance(value, (int, float)) and value is not None}
    try:
        trainer.log(figures)  # to the tracker chosen by report_to (the event log ignores these keys)
    except Exception:  # noqa: BLE001 - a tracker's failure must not cost the report
        log.warning("report figures not logged to the tracker", exc_info=True)
    return report


def report_file(report: dict | None) -> str | None:
    from .evaluate import REPORT_HTML

    return REPORT_HTML if report else None


def release_model(trainer) -> None:
    """Drop the Trainer's references to the model and optimizer (the Trainer, accelerate, the callbacks) and
    free their memory: the Trainer stays usable for log(), which needs neither."""
    import gc

    import torch

    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    handler = trainer.callback_handler
    handler.model = handler.optimizer = handler.lr_scheduler = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cpu_precision(config: RunConfig, model_config=None):
    """The run's CPU number format (a studio.precision.Precision: fp32 or bf16, and why), or None on a GPU, where
    the method decides. "auto" probes a product of the model's own shape (model_config)."""
    from . import models, precision

    if models.cuda_available():
        return None
    shape = precision.model_shape(model_config) if model_config is not None else None
    setting = config.cpu_precision
    if setting == precision.AUTO and distributed.world_size() > 1:
        # The probe times both formats: ranks could choose differently, and DDP needs the same weights everywhere.
        setting = precision.FP32
    chosen = precision.choose(setting, shape=shape)
    log.info("cpu precision: %s (%s)", chosen.name, chosen.reason)
    return chosen


def speed_key(method: Method, precision=None) -> str:
    """The speed record's name of how a run computes: the method, with "+bf16" for bf16 on a CPU (another speed)."""
    return f"{method.name}+bf16" if precision is not None and precision.bf16 else method.name


def build_trainer(config: RunConfig, method: Method, model, tokenizer, train_set, val_set, run_dir: Path,
                  callbacks=(), precision=None):
    """The Trainer of a run, with the studio's fast path: trained-positions-only loss, thread tuning on CPU.
    `precision`: the CPU format (cpu_precision); bf16 runs each forward under CPU autocast."""
    from transformers import PrinterCallback, ProgressCallback

    callbacks = list(callbacks)
    if tune_threads():
        callbacks.append(callback_class("CpuThreadTuner")())
    args = training_arguments(config, method, run_dir, has_eval=val_set is not None)
    point_tracker_at(config, run_dir)
    trainer = studio_trainer_class()(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                                     data_collator=packing.make_collator(config, tokenizer),
                                     processing_class=tokenizer, callbacks=callbacks)
    trainer.cpu_bf16 = precision is not None and precision.bf16
    log.info("rank %d of %d processes (%s)", distributed.rank(), trainer.accelerator.num_processes,
             trainer.accelerator.distributed_type)
    # Progress goes to events.jsonl; the worker's stdout carries only the run folder.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def tune_threads() -> bool:
    """The CPU thread tuner runs on a CPU with one process. With several, each rank waits for the slowest at every
    gradient all-reduce: one rank's timings would chase the others' noise (torchrun gives each rank one thread)."""
    import torch

    return TUNE_CPU_THREADS and not torch.cuda.is_available() and distributed.world_size() == 1


def save_adapter(model, folder: Path) -> None:
    """The trained adapter alone (a PeftModel saves megabytes, not the base). DPO keeps a frozen copy of the
    adapter as its reference ("ref", see build_preference_trainer): never saved, so the run's adapter folder is the
    same for every training goal."""
    names = list(getattr(model, "peft_config", {}) or {})
    model.save_pretrained(folder, **({"selected_adapters": ["default"]} if len(names) > 1 else {}))


# --- preference training (DPO, ORPO through TRL) -------------------------------------------------------------
def preference_settings(config: RunConfig) -> RunConfig:
    """The run's settings as preference training uses them: TRL pads its batches of chosen and rejected answers
    (no packing), and switches dropout off so that the chosen and rejected likelihoods, and the reference's, are
    compared without random masks (a LoRA dropout above 0 would be undone anyway, except the studio's fast dropout
    on a CPU, which TRL does not know)."""
    return dataclasses.replace(config, packing=False, lora_dropout=0.0)


def preference_datasets(config: RunConfig):
    """(train, validation or None) as datasets of TRL's conversational pairs ({"prompt", "chosen", "rejected"}
    turn lists): TRL applies the chat template and tokenises them itself."""
    from datasets import Dataset

    from . import data

    check_data_files(config)
    train, val = data.load_examples(config)
    if not train:
        raise DataError("No preference pairs left to train on (every row lacks a rejected answer or repeats its "
                        "chosen one): check the Data tab's problems, or set the training goal to Supervised.")
    return (Dataset.from_list([e.trl_row() for e in train]),
            Dataset.from_list([e.trl_row() for e in val]) if val else None)


def preference_arguments(config: RunConfig, objective: methods.Objective, method: Method, run_dir: Path,
                         has_eval: bool):
    """TRL's DPOConfig / ORPOConfig: the run's TrainingArguments (training_argument_values) plus the preference
    settings. Fields as TRL 1.16 names them (trl/trainer/dpo_config.py, trl/experimental/orpo/orpo_config.py)."""
    values = training_argument_values(config, method, run_dir, has_eval)
    values.update(
        # TRL's configs default bf16 to True and gradient checkpointing on: the run's method and build_model
        # (needs_gradient_checkpointing, already applied to the model) decide both, as for supervised runs.
        bf16=values["bf16"],
        gradient_checkpointing=False,
        train_sampling_strategy="random",  # TRL's datasets have no "length" column to group by
        include_num_input_tokens_seen="non_padding",
        max_length=config.max_seq_length,  # prompt + answer, cut from the end (TRL's default keep_start)
        beta=config.preference_beta,  # DPO's beta; ORPO's lambda (the weight of its odds-ratio term)
        disable_dropout=True,
        dataset_num_proc=None,  # tokenised in this process: no worker pool on a 2-core machine
    )
    if objective.trainer == "dpo":
        from trl import DPOConfig

        return DPOConfig(**values, padding_free=False, precompute_ref_log_probs=False, loss_type=["sigmoid"])
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"  # trl.experimental's import warning would reach stderr
    from trl.experimental.orpo import ORPOConfig

    # ORPO's batches hold chosen_input_ids / rejected_input_ids, no input_ids for the Trainer to count tokens in.
    return ORPOConfig(**{**values, "include_num_input_tokens_seen": "no"})


@functools.cache
def preference_trainer_class(trainer: str) -> type:
    """TRL's DPOTrainer or ORPOTrainer with the studio's warm-up (WarmupAboveZero) and, with bf16 on a CPU, each
    loss computed under CPU autocast (the bf16 base meets the fp32 LoRA weights), as StudioTrainer does."""
    import torch

    if trainer == "dpo":
        from trl import DPOTrainer as Base
    else:
        os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
        from trl.experimental.orpo import ORPOTrainer as Base

    class PreferenceTrainer(WarmupAboveZero, Base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=getattr(self, "cpu_bf16", False)):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)

    PreferenceTrainer.__name__ = PreferenceTrainer.__qualname__ = f"Studio{Base.__name__}"
    return PreferenceTrainer


def build_preference_trainer(objective: methods.Objective, config: RunConfig, method: Method, model, tokenizer,
                             train_set, val_set, run_dir: Path, callbacks=(), precision=None):
    """TRL's DPOTrainer (trl) or ORPOTrainer (trl.experimental.orpo) on the LoRA model of build_model, with the
    studio's callbacks. DPO's reference is the model the run started from: TRL keeps a frozen copy of the fresh
    adapter ("ref", which changes nothing: LoRA starts at zero) with ref_model=None, so no second model is loaded.
    QLoRA's 4-bit base works the same way on a GPU (TRL casts the adapter to bf16 there)."""
    import datasets
    from transformers import PrinterCallback, ProgressCallback

    callbacks = list(callbacks)
    if tune_threads():
        callbacks.append(callback_class("CpuThreadTuner")())
    args = preference_arguments(config, objective, method, run_dir, has_eval=val_set is not None)
    point_tracker_at(config, run_dir)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # TRL tokenises with Dataset.map: its bars would reach stderr
    try:
        extra = {"ref_model": None} if objective.trainer == "dpo" else {}
        trainer = preference_trainer_class(objective.trainer)(
            model=model, args=args, train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer,
            callbacks=callbacks, **extra)
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    trainer.cpu_bf16 = precision is not None and precision.bf16
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def encode_dataset(examples: list[dict], tokenizer, config: RunConfig):
    """Tokenise once into a datasets.Dataset of input_ids / labels (and a length for grouping)."""
    from datasets import Dataset

    from . import data

    rows = [data.encode_example(ex, tokenizer, config.max_seq_length, config.train_on_answers_only)
            for ex in examples]
    rows = [r for r in rows if any(label != -100 for label in r["labels"])]
    if not rows:
        raise DataError("No example has any trained token left after cutting to max_seq_length: raise "
                        "max_seq_length or check the response column.")
    return Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
                              "length": [len(r["input_ids"]) for r in rows]})


def load_datasets(config: RunConfig, tokenizer):
    """(train, validation or None) as tokenised Datasets, from the cache when this data was tokenised before.

    Reading, validating and tokenising (the chat template is rendered a few times per row) takes about 4 ms a
    row on a CPU: a minute for 15k rows, spent again on every run of the same data. The cache key holds
    everything the result depends on (see tokenized_cache_key), so a hit is exactly what tokenising would give.
    """
    from . import data

    check_data_files(config)  # before the cache key hashes the file: a FIFO or /dev/zero would never end
    folder = None
    if CACHE_TOKENIZED:
        try:
            from .models import cache_dir

            folder = cache_dir() / "tokenized" / tokenized_cache_key(config, tokenizer)
            cached = _read_tokenized(folder)
            if cached is not None:
                log.info("tokenised data from the cache %s", folder)
                os.utime(folder)  # recently used: kept when old entries are pruned
                return cached
        except OSError as err:  # an unreadable cache or data file: tokenise (and report the file) as usual
            log.info("tokenised-data cache not used: %s", err)
            folder = None
    train_examples, val_examples = data.load_for_config(config)
    train_set = encode_dataset(train_examples, tokenizer, config)
    val_set = encode_dataset(val_examples, tokenizer, config) if val_examples else None
    if folder is not None:
        if distributed.is_main():  # ranks of one run tokenise the same rows: one writes the entry
            _write_tokenized(folder, train_set, val_set)
    return train_set, val_set


def check_data_files(config: RunConfig) -> None:
    """Refuse a data path that is not a regular file, or is over the size limit, from its metadata alone.

    First of all, before the tokenised-data cache key hashes the file and before a reader opens it: a FIFO or
    /dev/zero would never end, a 2 GB file would be read in full only to be refused. An empty data_path is left to
    data.load_for_config, which names the fix."""
    import stat

    from . import data  # the size limit's one home: data.DEFAULT_MAX_BYTES

    for role, path in (("training", config.data_path), ("validation", config.validation_path)):
        if not path:
            continue
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"The {role} file {path} does not exist: check the path, or upload it again.") from None
        except OSError as err:
            raise DataError(f"The {role} file {path} cannot be opened ({err.strerror or err}): check its "
                            f"permissions.") from None
        if stat.S_ISDIR(info.st_mode):
            raise DataError(f"The {role} path {path} is a folder, not a file: choose one data file inside it.")
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"The {role} path {path} is not a regular file (a device, a pipe or a socket): choose "
                            f"a data file saved on disk.")
        if info.st_size > data.DEFAULT_MAX_BYTES:
            raise DataError(f"The {role} file {Path(path).name} is {info.st_size / 2**20:,.0f} MB, above the "
                            f"{data.DEFAULT_MAX_BYTES / 2**20:,.0f} MB limit: keep fewer rows, or split it and "
                            f"train on one part.")


TOKENIZED_CACHE_VERSION = 2
TOKENIZED_CACHE_ENTRIES = 20  # datasets x settings kept; the oldest go first
# The settings the tokenised rows depend on: the files read, the column mapping, the split, the tokenizer's model,
# the cut-off and the masking. The cache key below and the estimate's token count (estimate._dataset_tokens) are
# both keyed on exactly these; any other setting (learning rate, LoRA rank, ...) reuses the tokens.
TOKENIZED_DATA_FIELDS = ("model", "trust_remote_code", "data_path", "validation_path", "validation_fraction", "seed",
                         "prompt_column", "response_column", "system_column", "system_prompt", "text_column",
                         "max_seq_length", "train_on_answers_only", "corrections_path",
                         "objective")  # a preference goal keeps only the pairs, and the estimate counts both answers


def _file_hash(path: str | Path) -> str:
    import hashlib

    if not path:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenising_code_hash() -> str:
    """Hash of the code that reads, normalises and encodes rows: every module of the studio.data package, and this
    file. A change there must never reuse stale tokens."""
    from . import data

    package = Path(data.__file__).parent
    return "".join(_file_hash(path) for path in sorted(package.glob("*.py"))) + _file_hash(__file__)


def tokenized_cache_key(config: RunConfig, tokenizer) -> str:
    """Hash of what the tokenised data depends on: the files' bytes, the settings in TOKENIZED_DATA_FIELDS, the
    tokenizer (name, vocabulary size, special tokens, chat template) and the code (_tokenising_code_hash)."""
    import hashlib
    import json

    settings = {name: getattr(config, name) for name in TOKENIZED_DATA_FIELDS}
    parts = {
        "version": TOKENIZED_CACHE_VERSION,
        "code": _tokenising_code_hash(),
        "data": _file_hash(config.data_path),
        "validation": _file_hash(config.validation_path),
        "corrections": _file_hash(config.corrections_path),
        "settings": settings,
        "tokenizer": [getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                      str(getattr(tokenizer, "chat_template", "")), tokenizer.eos_token, tokenizer.bos_token,
                      type(tokenizer).__name__],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_tokenized(folder: Path):
    if not (folder / "train").is_dir():
        return None
    from datasets import load_from_disk

    try:
        train_set = load_from_disk(str(folder / "train"))
        val_set = load_from_disk(str(folder / "validation")) if (folder / "validation").is_dir() else None
    except Exception as err:  # noqa: BLE001 - a damaged cache entry is rebuilt, never fatal
        log.info("tokenised-data cache entry %s unreadable (%s); tokenising again", folder, err)
        return None
    return train_set, val_set


def _write_tokenized(folder: Path, train_set, val_set) -> None:
    """Write the entry through a temporary folder: a crash never leaves half an entry that looks complete."""
    import shutil

    import datasets

    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the worker's output is the run folder, not progress bars
    try:
        with replacing_folder(folder) as tmp:
            train_set.save_to_disk(str(tmp / "train"))
            if val_set is not None:
                val_set.save_to_disk(str(tmp / "validation"))
        entries = sorted((p for p in folder.parent.iterdir() if not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[TOKENIZED_CACHE_ENTRIES:]:  # the least recently used beyond the limit
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:  # a full disk or a read-only cache costs speed next time, not this run
        log.info("tokenised data not cached: %s", err)
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def longest_step_tokens(config: RunConfig, lengths: list[int]) -> int:
    """Most tokens one forward pass can hold: the batch_size longest examples laid end to end (packed), or
    batch_size rows as long as the longest (padded)."""
    longest = sorted(lengths, reverse=True)[:config.batch_size]
    if not longest:
        return config.batch_size * config.max_seq_length
    return sum(longest) if config.packing else config.batch_size * longest[0]


def build_model(config: RunConfig, method: str | Method, step_tokens: int | None = None, precision=None,
                start_from: Path | None = None):
    """The base model with its LoRA adapter, ready to train. `precision` (cpu_precision): with bf16 every frozen
    weight is held in bf16 (half the memory, no cast in each forward); the LoRA weights (and so their optimizer
    state) and the loss stay fp32. `start_from`: a saved adapter (a parent run's) trained further instead of a new
    one; its own LoRA settings (rank, alpha, layers) come with it."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    from . import models

    method = methods.get(method)
    model = models.load_base_model(config.model, method, config.trust_remote_code)
    checkpointing = needs_gradient_checkpointing(config, method, model, step_tokens)
    log.info("gradient checkpointing %s", "on" if checkpointing else "off")
    if method.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False  # the KV cache is useless while training and costs memory
    if config.packing and VARLEN_ATTENTION and packing.supports_varlen_attention(model.config):
        packing.use_varlen_attention(model)
    if precision is not None and precision.bf16 and not method.quantized:
        # The whole frozen model, embeddings and norms too: the residual stream is then bf16 and autocast has no
        # activations to cast at each layer (linear weights alone: 2.57 s a step; all: 2.21 s, the same losses, on
        # a Xeon with AMX). The LoRA weights made below go back to fp32.
        model.to(torch.bfloat16)
    set_seed(config.seed)  # the LoRA initialisation follows the run's seed
    if start_from is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(start_from), is_trainable=True)
        log.info("training on from the adapter %s", start_from)
    else:
        model = get_peft_model(model, models.lora_config(config))
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32 and not method.half:
            param.data = param.data.float()  # trained weights and their Adam state in fp32, whatever the base
    if FAST_DROPOUT and not torch.cuda.is_available():
        packing.use_fast_dropout(model)
    return model


def activation_bytes_per_token(model_config, method: str | Method) -> float:
    """Bytes kept for the backward pass per token without gradient checkpointing, for LoRA on a frozen decoder:
    per layer about 14 x hidden values (norm inputs, q/k/v/o, attention output, LoRA inputs), in fp32 where the
    residual stream is (fp32 models; QLoRA, whose norms prepare_model_for_kbit_training keeps in fp32), plus
    5 x intermediate (gate, up, activation, their product, the LoRA input of down_proj) in the compute dtype;
    plus the trained logits (vocabulary x 10 bytes: logits, their fp32 copy and its gradient). Checked against
    SmolLM2 in fp32 on CPU (2.4 MB a token estimated, about 2.4 measured). Loose on purpose: too high costs
    speed, too low an out-of-memory error."""
    hidden = getattr(model_config, "hidden_size", 0) or 0
    inter = getattr(model_config, "intermediate_size", 0) or 4 * hidden
    layers = getattr(model_config, "num_hidden_layers", 0) or 0
    vocab = getattr(model_config, "vocab_size", 0) or 0
    method = methods.get(method)
    return layers * (14 * hidden * method.residual_bytes + 5 * inter * method.activation_bytes) + vocab * 10


def needs_gradient_checkpointing(config: RunConfig, method: str | Method, model,
                                 step_tokens: int | None = None) -> bool:
    """Recomputing activations costs about a third more time per step, so only when they would not fit.

    On a GPU: the activations of the longest possible step (step_tokens, at most batch_size x max_seq_length)
    against 60% of the memory still free after loading the model. On a CPU it stays off unless asked for:
    system memory is rarely the limit there and time always is."""
    if config.gradient_checkpointing:
        return True
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        free, _total = torch.cuda.mem_get_info()
    except RuntimeError:
        return methods.get(method).quantized  # the old, safe default where the free memory cannot be read
    tokens = step_tokens or config.batch_size * config.max_seq_length
    need = activation_bytes_per_token(model.config, method) * tokens
    log.info("activations need about %.1f GB for the longest step (%d tokens); %.1f GB free", need / 2**30,
             tokens, free / 2**30)
    return need > 0.6 * free


def tracker(config: RunConfig) -> list[str]:
    """transformers' report_to for the run's tracker; one whose package is not installed is refused in one
    sentence before training starts (the Trainer would fail with an ImportError deep in its set-up)."""
    import importlib.util

    if config.report_to == "none":
        return []
    if importlib.util.find_spec(config.report_to) is None:
        raise ConfigError(f"report_to is {config.report_to}, but the {config.report_to} package is not installed: "
                          f"run `pip install {config.report_to}`, or set report_to to none.")
    return [config.report_to]


TENSORBOARD_DIR = "tensorboard"  # in the run folder: `tensorboard --logdir runs` then shows every run side by side
TRACKER_PROJECT = "studio"  # Trackio's and W&B's project name; each run is named after its run id


def point_tracker_at(config: RunConfig, run_dir: Path) -> None:
    """TensorBoard's event files go to the run's own folder (transformers takes the place from this variable only;
    otherwise they would sit among the checkpoints). A folder the person set themselves wins."""
    if config.report_to == "tensorboard":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / TENSORBOARD_DIR))


def training_arguments(config: RunConfig, method: Method, run_dir: Path, has_eval: bool):
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(config, method, run_dir, has_eval))


def training_argument_values(config: RunConfig, method: Method, run_dir: Path, has_eval: bool) -> dict:
    """transformers' TrainingArguments of a run as keywords: the one mapping of RunConfig onto the Trainer, which
    TRL's DPOConfig and ORPOConfig (subclasses of TrainingArguments) take as they are (preference_arguments)."""
    import torch

    from . import models

    cuda = torch.cuda.is_available()
    half = method.half
    bf16 = half and cuda and models.native_bf16()
    eval_every = config.eval_every if has_eval and config.eval_every > 0 else 0
    return dict(
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
        optim=method.optimizer,
        bf16=bf16,
        fp16=half and cuda and not bf16,
        use_cpu=not cuda,
        # Padded batches: similar lengths in a batch waste less on padding. Packed batches have no padding to save,
        # and grouping would make the steps of the longest examples the memory peak; plain random order instead.
        train_sampling_strategy="random" if config.packing else "group_by_length",
        length_column_name="length",
        remove_unused_columns=False,
        # Packed rows hold no padding; "non_padding" would also skip real end-of-turn tokens when pad == eos.
        include_num_input_tokens_seen="all" if config.packing else "non_padding",
        report_to=tracker(config),
        run_name=run_dir.name,
        project=TRACKER_PROJECT,
        dataloader_num_workers=0,
        disable_tqdm=True,
        # Several processes (studio/distributed.py): a rank that stops answering fails the run within this many
        # seconds; every LoRA weight takes part in every step, so DDP need not search for unused ones.
        ddp_timeout=distributed.COLLECTIVE_TIMEOUT_S,
        ddp_find_unused_parameters=False,
        **distributed.fsdp_arguments(config, distributed.world_size()),
    )


class WarmupAboveZero:
    """Mixed into the studio's Trainers (supervised, DPO, ORPO): transformers' warm-up ramps from 0, so the first
    optimizer step would run at learning rate 0 and change nothing: the same schedule with the ramp moved up one
    step (warmup_above_zero)."""

    def create_scheduler(self, num_training_steps, optimizer=None):
        import torch

        if self.lr_scheduler is None:
            scheduler = super().create_scheduler(num_training_steps, optimizer)
            warmup = self.args.get_warmup_steps(num_training_steps)
            if warmup > 0 and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                factors = [functools.partial(warmup_above_zero, f, warmup) for f in scheduler.lr_lambdas]
                # The optimizer's "initial_lr" is already the configured rate: the new scheduler starts from it.
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(scheduler.optimizer, factors)
        return self.lr_scheduler


_trainer_class = None


def studio_trainer_class():
    """transformers.Trainer whose loss computes vocabulary logits only where a label is trained.

    The LM head is a large matmul (hidden x vocabulary: a fifth of SmolLM2's FLOPs, 150k columns for Qwen) followed
    by a log-softmax over the vocabulary, and with answers-only training the prompt positions never reach the loss.
    Passing the trained positions as `logits_to_keep` (a boolean mask) skips them: same loss, less time and memory.
    Made on first use so importing this module stays light."""
    global _trainer_class
    if _trainer_class is not None:
        return _trainer_class
    import inspect

    import torch
    from transformers import Trainer

    class StudioTrainer(WarmupAboveZero, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # bf16 on a CPU: the forward under autocast (the bf16 base meets the fp32 LoRA weights in bf16 matmuls;
            # the loss in fp32); the backward runs outside it, as torch advises, and the trained weights stay fp32.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=getattr(self, "cpu_bf16", False)):
                return self._compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (TRAINED_LOGITS_ONLY and "labels" in inputs and _accepts_logits_to_keep(model)):
                self.loss_is_scaled_for_ga = None
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            # Position t predicts token t+1: its target is labels[t + 1]; the last position has none. Packed rows
            # carry -100 at each example's first token, so no position predicts across a boundary.
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
            keep = targets != -100  # (batch, tokens) bool
            outputs = model(**inputs, logits_to_keep=keep)
            logits = outputs.logits.float()  # (trained tokens, vocabulary)
            loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
            if num_items_in_batch is not None:
                # Trained tokens of the whole accumulated step, as transformers' own loss divides by.
                count = num_items_in_batch
                loss = loss / (count.to(loss.device).clamp(min=1) if torch.is_tensor(count) else max(count, 1))
                if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                    # count holds every rank's trained tokens and DDP averages the gradients over ranks: times the
                    # ranks, each rank's share of the global mean, as transformers' own compute_loss does.
                    loss = loss * self.accelerator.num_processes
                self.loss_is_scaled_for_ga = True
            else:
                loss = loss / keep.sum().clamp(min=1)
                self.loss_is_scaled_for_ga = False
            return (loss, outputs) if return_outputs else loss

    def _accepts_logits_to_keep(model) -> bool:
        """Older or remote-code models without logits_to_keep take transformers' usual loss."""
        base = getattr(model, "module", model)  # DDP and similar wrappers
        base = base.get_base_model() if hasattr(base, "get_base_model") else base  # peft
        key = type(base)
        if key not in _accepts_cache:
            _accepts_cache[key] = "logits_to_keep" in inspect.signature(base.forward).parameters
        return _accepts_cache[key]

    _accepts_cache: dict = {}
    _trainer_class = StudioTrainer
    return StudioTrainer


def warmup_above_zero(factor, warmup_steps: int, step: int) -> float:
    """A schedule's learning-rate factor at optimizer step `step` (0 = the first), with its warm-up ramp starting
    above zero: (step + 1) / (warmup_steps + 1), from a small share of the rate at the first step up to the full
    rate at step warmup_steps, where the schedule (`factor`, transformers') takes over unchanged."""
    return (step + 1) / (warmup_steps + 1) if step < warmup_steps else factor(step)


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
# The Trainer callbacks are written as plain classes (_EventHooks, _ThreadTunerHooks) and made TrainerCallbacks on
# first use (callback_class), so that importing this module - the first thing `python -m studio train` does - does
# not import transformers: a refused start (a busy runs folder, a bad data path) is said in well under a second.
_CALLBACK_HOOKS: dict[str, type] = {}  # public name -> its hooks class, filled below


@functools.cache
def callback_class(name: str) -> type:
    """The TrainerCallback subclass called `name` ("EventCallback", "CpuThreadTuner" or "BestAdapter")."""
    from transformers import TrainerCallback

    hooks = _CALLBACK_HOOKS[name]
    return type(name, (hooks, TrainerCallback), {"__doc__": hooks.__doc__, "__module__": __name__})


def __getattr__(name: str):
    # train.EventCallback and train.CpuThreadTuner, for callers outside (tests, benchmarks).
    if name in _CALLBACK_HOOKS:
        return callback_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _EventHooks:
    """Turns Trainer hooks into events and status updates; checks the STOP file every step."""

    def __init__(self, run_dir: Path, events: EventWriter, config: RunConfig, method: str | Method,
                 precision=None, objective: str = "sft"):
        self.run_dir, self.events, self.config, self.method = run_dir, events, config, methods.get(method)
        self.objective = objective  # methods.OBJECTIVES' name: "sft", "dpo" or "orpo"
        self.precision = precision  # studio.precision.Precision on a CPU, None on a GPU
        self.t0 = time.time()
        self.tokens_at_start = 0
        self.last_status = 0.0
        self.training = False  # between on_train_begin and the end: status "running" (or "stopping")
        self.last_tokens_per_s: float | None = None  # of the latest "log" event, for the speed record

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        self.tokens_at_start = state.num_input_tokens_seen or 0
        self.step_at_start = state.global_step
        self.events.write("start", total_steps=state.max_steps, method=self.method.name, model=self.config.model,
                          resumed_from=state.global_step or None, epochs=args.num_train_epochs,
                          cpu_precision=self.precision.name if self.precision else None,
                          cpu_precision_reason=self.precision.reason if self.precision else None,
                          objective=self.objective, processes=args.world_size,
                          global_batch=distributed.global_batch(self.config, args.world_size),
                          **feedback.start_fields(self.config))
        self.training = True
        self._status(state, "running", force=True)

    def on_step_end(self, args, state, control, **kwargs):
        if distributed.agree((self.run_dir / STOP_FILE).exists()):  # rank 0 decides for every rank
            log.info("stop requested at step %d", state.global_step)
            control.should_training_stop = True
            control.should_save = True  # stop = a checkpoint to resume from, plus the adapter
            self._status(state, "stopping", force=True)
        else:
            self._status(state, "running")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            speed = self._speed(state)
            self.last_tokens_per_s = speed["tokens_per_s"]
            self.events.write("log", step=state.global_step, loss=logs["loss"],
                              learning_rate=logs.get("learning_rate"), epoch=state.epoch,
                              grad_norm=logs.get("grad_norm"), **speed, **preference_figures(logs))
        if "eval_loss" in logs:
            self.events.write("eval", step=state.global_step, eval_loss=logs["eval_loss"],
                              **preference_figures(logs, "eval_"))

    def on_prediction_step(self, args, state, control, **kwargs):
        # A validation pass of many batches writes no step: the status update (at most twice a second) tells the
        # UI the worker is busy, not stalled (jobs.stalled_for). Before training, the status stays "starting".
        if self.training:
            self._status(state, "stopping" if (self.run_dir / STOP_FILE).exists() else "running")

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
        write_status(self.run_dir, status=status, step=state.global_step, epoch=state.epoch, pid=distributed.run_pid(),
                     **self._speed(state))


# TRL's names of the preference figures (DPO and ORPO log both) -> the event fields (events.py reads them).
PREFERENCE_FIGURES = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy"}


def preference_figures(logs: dict, prefix: str = "") -> dict:
    """reward_margin (how much more likely the model finds the chosen answer than the rejected one, in TRL's
    reward units: beta x the log-likelihood ratio) and reward_accuracy (the share of pairs where the chosen answer
    is the more likely), where the trainer logged them; {} for supervised runs."""
    return {field: float(logs[prefix + name]) for name, field in PREFERENCE_FIGURES.items() if prefix + name in logs}


class _ThreadTunerHooks:
    """On a CPU, use the intra-op thread count that trains fastest now, and keep checking.

    torch starts one thread per core. When other programs keep the same cores busy (the browser showing the run,
    a test suite, a second run), every parallel region waits for its slowest thread and a step can take five
    times longer than with one thread (bench/README.md); on an idle machine all cores are faster. So:
    - every step is timed (seconds per token; the first step warms up the allocator and is not counted), and
      the count with the lowest median over its last three steps is used;
    - a 0.3 s matrix-multiply check picks the count for the first step, and is repeated every 8 steps (and at
      once when the current count's steps get 1.5x slower twice in a row); when it names another count, that
      count runs the next step, and its time decides. A wrong guess costs one step, not the run, and a real
      step is never spent on a count that the quick check says is slower: on a busy machine such a step can
      take a minute.
    """

    def __init__(self, candidates: list[int] | None = None, check_every: int = 8):
        import torch

        self.default = torch.get_num_threads()  # torch's choice: one per physical core
        self.candidates = candidates or sorted({self.default, max(1, self.default // 2), 1}, reverse=True)
        self.history: dict[int, list[float]] = {n: [] for n in self.candidates}  # seconds per token, newest last
        self.best = self.current = self.candidates[0]
        self.picked = len(self.candidates) == 1  # the quick check before the first step
        self.check_every = self.next_check = check_every
        self.steps = 0
        self.slow_steps = 0
        self.t0 = 0.0
        self.tokens0 = 0

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        self.current = self.best
        if not self.picked:  # here rather than at train begin: right before the work it stands for
            self.best = self.current = self.quick_pick()
            self.picked = True
            log.info("threads: starting with %d of %s (matrix-multiply check)", self.best, self.candidates)
        elif len(self.candidates) > 1 and self.steps >= self.next_check:
            self.next_check = self.steps + self.check_every
            self.current = self.quick_pick()
            if self.current != self.best:
                self.history[self.current].clear()  # its old times are stale: this step decides
        torch.set_num_threads(self.current)
        self.t0 = time.perf_counter()
        self.tokens0 = state.num_input_tokens_seen or 0

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.t0
        tokens = (state.num_input_tokens_seen or 0) - self.tokens0
        self.steps += 1
        if self.steps == 1 or tokens <= 0 or len(self.candidates) == 1:
            return
        history = self.history[self.current]
        sample = seconds / tokens
        if self.current == self.best and len(history) >= 2:
            self.slow_steps = self.slow_steps + 1 if sample > 1.5 * self._median(self.best) else 0
            if self.slow_steps >= 2:  # the machine got busier: check now
                self.next_check, self.slow_steps = self.steps, 0
        history.append(sample)
        del history[:-3]
        if self.current != self.best and sample < self._median(self.best):
            log.info("threads: %d is faster now (%.2f against %.2f seconds per 1000 tokens with %d)", self.current,
                     1000 * sample, 1000 * self._median(self.best), self.best)
            self.best = self.current
            self.history[self.best][:] = [sample]

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        torch.set_num_threads(self.default)  # whatever runs next in this process starts from torch's default

    def _median(self, n: int) -> float:
        history = sorted(self.history[n])
        return history[len(history) // 2] if history else float("inf")

    def quick_pick(self, repeats: int = 3) -> int:
        """The count that multiplies a (512 x 576) by a (576 x 1536) matrix fastest, best of a few tries each."""
        import torch

        a, b = torch.randn(512, 576), torch.randn(576, 1536)
        timings: dict[int, list[float]] = {n: [] for n in self.candidates}
        for _ in range(repeats):
            for n in self.candidates:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                for _ in range(8):
                    a @ b
                timings[n].append(time.perf_counter() - t0)
        torch.set_num_threads(self.default)
        return min(self.candidates, key=lambda n: sorted(timings[n])[len(timings[n]) // 2])


class _BestAdapterHooks:
    """Keeps the adapter of the lowest validation loss (in BEST_ADAPTER_DIR) and ends the run once `patience`
    validations in a row found none lower (0 = never ends it). The validation before training (step 0, the
    untouched model) is the curve's starting point, not a candidate."""

    def __init__(self, run_dir: Path, patience: int):
        self.run_dir, self.patience = Path(run_dir), patience
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.since_best = 0  # validations since the best one
        self.stopped_early = False

    def restore(self, resumed_from: int) -> None:
        """On resume: the best so far from the run's eval events up to the checkpoint, if its adapter was kept."""
        from .events import read_events, replay

        if not (self.run_dir / BEST_ADAPTER_DIR / ADAPTER_CONFIG).is_file():
            return
        history = replay(read_events(self.run_dir))
        evals = [(loss, step) for step, loss in zip(history.eval_steps, history.eval_loss) if 0 < step <= resumed_from]
        if evals:
            self.best_loss, self.best_step = min(evals)
            self.since_best = sum(1 for _, step in evals if step > self.best_step)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or state.global_step == 0 or not math.isfinite(loss):
            return
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = loss, state.global_step, 0
            if distributed.is_main() and not args.fsdp:  # the loss is gathered: every rank agrees on the best
                with replacing_folder(self.run_dir / BEST_ADAPTER_DIR) as tmp:
                    save_adapter(model, tmp)
            return
        self.since_best += 1
        if self.patience and self.since_best >= self.patience and state.global_step < state.max_steps:
            log.info("early stop at step %d: no lower validation loss than %.4f (step %d) in %d validations",
                     state.global_step, self.best_loss, self.best_step, self.since_best)
            self.stopped_early = True
            control.should_training_stop = True

    def better_than(self, last_loss: float | None, last_step: int) -> bool:
        """Is the kept adapter better than the weights of last_step (whose validation loss is last_loss)?"""
        return (self.best_step is not None and self.best_step != last_step and last_loss is not None
                and self.best_loss < last_loss
                and (self.run_dir / BEST_ADAPTER_DIR / ADAPTER_CONFIG).is_file())


_CALLBACK_HOOKS.update(EventCallback=_EventHooks, CpuThreadTuner=_ThreadTunerHooks, BestAdapter=_BestAdapterHooks)


def current_memory_gb() -> float:
    import psutil
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**30
    return psutil.Process().memory_info().rss / 2**30


class _LogFileHandler(logging.FileHandler):
    def handleError(self, record):
        pass  # a full disk loses log lines; it must not print "--- Logging error ---" tracebacks on stderr instead


def _log_to_file(path: Path) -> logging.Handler:
    try:
        # Descriptor 2 already goes to this file (the CLI moved it there), and the root logger writes to it.
        handler = logging.NullHandler() if log_path() == path else _LogFileHandler(path, encoding="utf-8")
    except OSError:  # no room even for the log: the run fails with its sentence, and still nothing on stderr
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Library warnings go to the run's log, not the terminal of the person watching the UI.
    logging.captureWarnings(True)
    # Progress bars (weights loading) would only clutter the worker's stdout/stderr: events carry progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return handler

