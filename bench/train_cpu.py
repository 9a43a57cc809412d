"""Training speed on the CPU: the studio's training path against plain transformers + peft, same data.

    python bench/train_cpu.py                      # baseline vs studio, about 10 minutes on 2 busy cores
    python bench/train_cpu.py --steps 8            # quicker, noisier
    python bench/train_cpu.py --sides baseline,studio,studio-no-varlen,studio-no-logits,studio-no-threads
    python bench/train_cpu.py --threads 1          # both sides pinned to one thread (no thread tuning)
    python bench/train_cpu.py --sides baseline,studio-fp32,studio-bf16   # the studio in each CPU precision

Model: the bundled SmolLM2-135M-Instruct, LoRA r=8, alpha 16, dropout 0.05 on all linear layers, fp32, AdamW,
lr 2e-4 with cosine decay and 3% warm-up, batch 4, seed 42 on every side.
Data: assets/bench/support_train.jsonl (360 support chats with answers from one line to several paragraphs:
median 112 tokens, 90th percentile 300, longest 503); held out: assets/bench/support_val.jsonl (40 chats).
Both sides use the same tokenised rows (studio.data.encode_example: chat template, loss on the answers only) and
see the same examples in the same order (Trainer's random sampler with the same seed).

Sides (each its own process; they take turns step by step, see bench/common.py):
  baseline   the way the transformers / peft docs show it: Trainer, DataCollatorForSeq2Seq padding to the
             longest row of the batch, random order, SDPA attention, torch's default threads.
  studio     studio.train.run(RunConfig) exactly as `python -m studio train` runs it (events, status, adapter).
  studio-fp32, studio-bf16   the studio with its CPU precision forced (`studio` itself follows --precision,
             by default "auto": the probe in studio/precision.py decides).
  studio-no-LEVER   the studio with one lever off: varlen (per-example attention in packed rows), logits
             (vocabulary logits only on trained tokens), dropout (cheaper LoRA dropout masks), threads (thread
             tuning), packing (padding-free rows; then padded, length-grouped batches); or studio+grouped (packed
             rows in length-grouped order).

Reported: real (non-padding) tokens per second over the timed steps, peak RSS of the process (training), and the
validation loss of each trained adapter on the held-out chats (same plain evaluation for every side). Also the
model FLOP/s, 4 N per real token (N = parameters with the output projection, as studio/estimate.py counts them:
forward 2N, backward through the activations 2N, no weight gradients for the frozen base; the studio's skipped
prompt logits are counted as if computed, so the figure compares sides by the same work), and their share of the
measured matrix-multiply peak in the precision the side trained in (studio/precision.py's probe at SmolLM2's
shape, taken once before the sides start: the machine's own limit). The processor's model name and its
bf16 / AMX flags head the table.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
TRAIN = ROOT / "assets" / "bench" / "support_train.jsonl"
VAL = ROOT / "assets" / "bench" / "support_val.jsonl"
LEVERS = ("varlen", "logits", "dropout", "threads", "packing")
# Peak RSS of one side at batch 4, max_seq_length 512 (measured): padded sides hold the padding's activations.
PEAK_RSS_GB = {"padded": 6.8, "packed": 3.9}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps per side (default 20)")
    p.add_argument("--untimed-steps", type=int, default=1,
                   help="steps run first but not timed, on every side (allocator warm-up; default 1)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=0,
                   help="pin every side to this many threads (and turn the studio's thread tuning off); "
                        "default: each side's own choice (torch's default for the baseline)")
    p.add_argument("--sides", default="baseline,studio",
                   help="comma list of: baseline, studio, studio-no-{varlen,logits,dropout,threads,packing}, "
                        "studio+grouped")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="cpu_precision of the `studio` side (and the studio-no-* sides); default auto")
    p.add_argument("--data", default=str(TRAIN))
    p.add_argument("--val", default=str(VAL))
    p.add_argument("--val-rows", type=int, default=40, help="held-out chats evaluated (default: all 40)")
    p.add_argument("--max-minutes", type=float, default=12.0,
                   help="stop training there (every side after the same number of steps), so that the whole "
                        "benchmark with its evaluation ends within about 15 minutes on a busy machine (default 12)")
    p.add_argument("--sequential", action="store_true", help="run the sides one after the other, not in turns")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


# --- the sides ---------------------------------------------------------------------------
def tokenizer_and_rows(args, path: str, limit: int | None = None):
    """The bundled tokenizer and the tokenised rows of a file, exactly as the studio encodes them."""
    from studio import data, models
    from studio.config import BUNDLED_MODEL

    tokenizer = models.load_tokenizer(BUNDLED_MODEL)
    examples = data.load_data(path).good_examples()[:limit]
    rows = [data.encode_example(e, tokenizer, args.max_seq_length, True) for e in examples]
    return tokenizer, [r for r in rows if any(label != -100 for label in r["labels"])]


def worker(name: str, index: int, args, turns) -> common.SideResult:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = common.SideResult(name=name)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if name == "baseline":
        adapter = train_baseline(args, index, turns, result, work)
    else:
        adapter = train_studio(args, index, turns, result, work, name)
    result.peak_rss_gb = common.peak_rss_gb()  # training peak, before the evaluation loads a fresh copy

    # Evaluation: a fresh base model + the saved adapter, one held-out chat at a time; single-threaded so the
    # sides evaluating at the same time do not fight over the cores (it is not timed).
    from peft import PeftModel

    from studio import models
    from studio.config import BUNDLED_MODEL

    torch.set_num_threads(1)
    _, val_rows = tokenizer_and_rows(args, args.val, args.val_rows)
    model = PeftModel.from_pretrained(models.load_base_model(BUNDLED_MODEL, "lora32"), str(adapter))
    result.val_loss = common.validation_loss(model, val_rows)
    if name == "baseline":
        with model.disable_adapter():
            result.base_val_loss = common.validation_loss(model, val_rows)
    return result


def train_baseline(args, index, turns, result, work: Path) -> Path:
    """Plain transformers + peft, as in their docs."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from studio import models
    from studio.config import BUNDLED_MODEL

    tokenizer, rows = tokenizer_and_rows(args, args.data)
    train_set = Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                   "labels": [r["labels"] for r in rows]})
    model = AutoModelForCausalLM.from_pretrained(models.resolve_model_source(BUNDLED_MODEL), dtype="float32")
    model.config.use_cache = False
    set_seed(42)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    training_args = TrainingArguments(
        output_dir=str(work / "out"), per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=0.03, max_steps=args.steps + args.untimed_steps, logging_steps=1,
        save_strategy="no",
        report_to="none", use_cpu=True, seed=42, data_seed=42, disable_tqdm=True,
        include_num_input_tokens_seen="non_padding")  # counts attention_mask: the real tokens
    collator = common.CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding="longest",
                                                              label_pad_token_id=-100), result)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator,
                      callbacks=[common.turn_callback(turns, index, result, untimed_steps=args.untimed_steps)])
    trainer.remove_callback(PrinterCallback)  # keeps the bench output to the table (logs are not timed anyway)
    trainer.train()
    model.save_pretrained(work / "adapter")
    return work / "adapter"


def train_studio(args, index, turns, result, work: Path, name: str) -> Path:
    """studio.train.run as the worker runs it, with one lever off for the studio-no-* sides."""
    import dataclasses

    from studio import estimate, train
    from studio.config import RunConfig

    estimate.record_speed = lambda *a, **k: None  # a turn-taking run is no measure of this machine's speed
    forced = {"studio-fp32": "fp32", "studio-bf16": "bf16"}
    config = RunConfig(data_path=args.data, validation_fraction=0.0, max_steps=args.steps + args.untimed_steps,
                       batch_size=args.batch_size, learning_rate=args.lr, max_seq_length=args.max_seq_length,
                       lora_rank=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                       eval_every=0, save_every=0, logging_every=1, seed=42, run_name=name,
                       cpu_precision=forced.get(name, args.precision))
    if args.threads or name == "studio-no-threads":
        train.TUNE_CPU_THREADS = False
    if name == "studio-no-varlen":
        train.VARLEN_ATTENTION = False
    if name == "studio-no-logits":
        train.TRAINED_LOGITS_ONLY = False
    if name == "studio-no-dropout":
        train.FAST_DROPOUT = False
    if name == "studio-no-packing":
        config = dataclasses.replace(config, packing=False)
    if name == "studio+grouped":
        make_args = train.training_arguments
        train.training_arguments = lambda *a, **k: dataclasses.replace(
            make_args(*a, **k), train_sampling_strategy="group_by_length")
    callback = common.turn_callback(turns, index, result, untimed_steps=args.untimed_steps)
    # The worker log's "cpu precision: bf16 (...)" line lands in the notes: side_precision reads it from there.
    return common.run_studio(config, work / "run", result, callback,
                             ("threads:", "gradient checkpointing", "cpu precision:"))


def side_precision(result: common.SideResult) -> str:
    """The format a side trained in: the studio's from its worker-log line, fp32 for the baseline."""
    return "bf16" if "cpu precision: bf16" in result.notes else "fp32"


# --- data preparation: the tokenised-data cache --------------------------------------------
def data_prep_seconds(args) -> tuple[float, float]:
    """Seconds to read and tokenise the training file: without the cache, then from a warm cache."""
    from unittest import mock

    from studio import models, train
    from studio.config import BUNDLED_MODEL, RunConfig

    tokenizer = models.load_tokenizer(BUNDLED_MODEL)
    config = RunConfig(data_path=args.data, validation_path=args.val, max_seq_length=args.max_seq_length)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(models, "cache_dir", lambda: Path(tmp)):
        t0 = time.perf_counter()
        train.load_datasets(config, tokenizer)  # cold: tokenises and fills the cache
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        train.load_datasets(config, tokenizer)
        warm = time.perf_counter() - t0
    return cold, warm


# --- report ------------------------------------------------------------------------------
def matmul_peak(args, earlier=None):
    """The probe of studio/precision.py at SmolLM2's shape, fp32 and bf16, with the sides' thread count. Taken
    before and after the sides; the faster of the two is the peak (a busy neighbour only ever slows it)."""
    import torch

    from studio import estimate, models, precision
    from studio.config import BUNDLED_MODEL

    shape = precision.model_shape(models.load_config(BUNDLED_MODEL))
    # Longer than the run-time probe: this is the reference of the table, not a start-up cost.
    timer = functools.partial(_best_of, budget_s=1.0)
    # At each thread count the sides may use (the thread tuner picks one thread on a busy machine): the fastest.
    counts = [args.threads] if args.threads else sorted({torch.get_num_threads(), 1})
    probes = [precision.measure(n, shape, timer) for n in counts]
    peak = precision.Precision(probes[0].name, probes[0].reason, max(p.fp32_flops for p in probes),
                               max(p.bf16_flops for p in probes))
    if earlier is not None:
        best = [max(a, b) for a, b in ((peak.fp32_flops, earlier.fp32_flops), (peak.bf16_flops, earlier.bf16_flops))]
        peak = precision.Precision(earlier.name, earlier.reason, *best)
    return peak, estimate.model_shape(BUNDLED_MODEL)[0]


def _best_of(dtype_name, threads, shape, budget_s):
    from studio import precision

    return precision.matmul_seconds(dtype_name, threads, shape, budget_s=budget_s)


def report(args, results: list[common.SideResult], load: tuple, prep: tuple[float, float], wall: float,
           peak=None, n_params: float = 0.0) -> str:
    base = next((r for r in results if r.name == "baseline"), None)
    timed = max((r.steps for r in results), default=0)
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, "failed: " + r.error[:80]] + [""] * 10)
            continue
        padding = 1 - r.collated_tokens / r.computed_tokens if r.computed_tokens else 0.0
        speedup = f"{r.tokens_per_s / base.tokens_per_s:.2f}x" if base and base.tokens_per_s else ""
        loss_vs = f"{100 * (r.val_loss / base.val_loss - 1):+.1f}%" if base and base.val_loss else ""
        median = sorted(t / s for s, t in r.step_log)[len(r.step_log) // 2] if r.step_log else 0.0
        used = side_precision(r)
        model_flops = 4 * n_params * r.tokens_per_s
        limit = (peak.bf16_flops if used == "bf16" else peak.fp32_flops) if peak else 0.0
        share = f"{100 * model_flops / limit:.0f}% of {limit / 1e9:,.0f}" if limit else ""
        rows.append([r.name, used, f"{r.tokens_per_s:.1f}", speedup, f"{median:.0f}", f"{model_flops / 1e9:.0f}",
                     share, f"{r.peak_rss_gb:.2f}", f"{r.val_loss:.4f}", loss_vs, f"{100 * padding:.0f}%",
                     f"{r.step_seconds:.0f}"])
    header = ["side", "precision", "real tokens/s", "vs baseline", "median step tokens/s", "model GFLOP/s (4N)",
              "of matmul peak GFLOP/s", "peak RSS GB", "val loss", "val loss vs baseline", "padding computed",
              "timed s"]
    from studio import precision

    lines = [f"{time.strftime('%Y-%m-%d %H:%M')}, {common.machine()}",
             f"processor: {precision.cpu_flags()}"]
    if peak:
        lines.append(f"matrix-multiply peak (studio/precision.py probe, SmolLM2 shape, casts included): fp32 "
                     f"{peak.fp32_flops / 1e9:,.0f} GFLOP/s, bf16 {peak.bf16_flops / 1e9:,.0f} GFLOP/s (best of a "
                     f"probe before and after the sides); the automatic choice before the sides: {peak.name} "
                     f"({peak.reason}); N = {n_params / 1e6:.0f}M")
    lines += [
f"command: python bench/train_cpu.py {' '.join(sys.argv[1:])}".rstrip(),
             f"{args.untimed_steps} + {timed} steps x batch {args.batch_size} = "
             f"{(args.untimed_steps + timed) * args.batch_size} examples per side, the first "
             f"{args.untimed_steps} step(s) not timed; {results[0].real_tokens} real tokens timed; load average "
             f"{load[0]:.1f} at start, {load[1]:.1f} at end; {wall / 60:.1f} min in all",
             "", common.table(rows, header), ""]
    if base and not base.error:
        lines.append(f"Validation loss before training: {base.base_val_loss:.4f}.")
    lines.append(f"Reading + tokenising the training data: {prep[0]:.2f} s, from the tokenised-data cache "
                 f"{prep[1]:.2f} s.")
    for r in results:
        if r.notes:
            lines.append(f"{r.name}: {r.notes}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    known = {"baseline", "studio", "studio+grouped", "studio-fp32", "studio-bf16"} | {
        f"studio-no-{lever}" for lever in LEVERS}
    unknown = [s for s in sides if s not in known]
    if unknown:
        print(f"Error: unknown side(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}.",
              file=sys.stderr)
        return 2
    # Every side holds its own model and activations at once (they take turns): refuse what would not fit.
    import psutil

    need = sum(PEAK_RSS_GB["padded" if s in ("baseline", "studio-no-packing", "studio+grouped") else "packed"]
               for s in sides) * args.batch_size / 4 * args.max_seq_length / 512
    available = psutil.virtual_memory().available / 2**30
    if need > 0.9 * available:
        print(f"Error: {len(sides)} sides need about {need:.0f} GB of memory at once and {available:.0f} GB is "
              f"available: run fewer sides per command.", file=sys.stderr)
        return 2
    started = time.time()
    load_start = os.getloadavg()[0]
    prep = data_prep_seconds(args)
    peak, n_params = matmul_peak(args)
    results = common.run_sides(worker, sides, args, interleave=not args.sequential,
                               deadline=started + 60 * args.max_minutes)
    peak, n_params = matmul_peak(args, earlier=peak)
    text = report(args, results, (load_start, os.getloadavg()[0]), prep, time.time() - started, peak, n_params)
    print(text)
    common.write_json(args.json, {"args": vars(args), "results": [r.__dict__ for r in results], "report": text})
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
