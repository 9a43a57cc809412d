"""QLoRA training speed on a CUDA GPU: the studio's training path against plain transformers + peft +
bitsandbytes, on models with the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (random weights: speed does not depend
on the values, and the GPU machines have no network).

    python bench/train_gpu.py                        # both models, batch 4, max_seq_length 2048
    python bench/train_gpu.py --models 1.5b --steps 40 --sides baseline,studio,studio-no-varlen
    python bench/train_gpu.py --shape full           # every row 2048 tokens: no padding to save

Without CUDA it prints one line and exits 0.

Both sides: NF4 4-bit base with double quantisation and bf16 compute, LoRA r=8 / alpha 16 / dropout 0.05 on all
linear layers, paged 8-bit AdamW, lr 2e-4 cosine with 3% warm-up, bf16, batch 4, seed 42, the same tokenised rows
in the same order (bundled SmolLM2 tokenizer: its ids fit the Qwen vocabulary; the model's weights are random).
  baseline  as the peft / bitsandbytes docs show it: from_pretrained(quantization_config=...),
            prepare_model_for_kbit_training (gradient checkpointing on), get_peft_model, Trainer with
            DataCollatorForSeq2Seq padding to the longest row, random order, SDPA attention.
  studio    studio.train.run(RunConfig(method="qlora")), as `python -m studio train` runs it.
  studio-no-LEVER, studio+checkpointing: the studio with one lever off, or with gradient checkpointing forced.

Data (--shape chats, default): support chats from assets/bench/ joined into multi-turn conversations with a long
tail of lengths (400 rows: median 457 tokens, one in ten above 1,236, 14 cut at 2048; random batches of 4 padded
to their longest row are 46% padding). --shape full: every row is cut at 2048 tokens.

MFU (model FLOPs utilisation) = useful training FLOPs / time / peak. Per trained example of L real tokens, LoRA
on a frozen base costs 4 N L (forward 2 N L, backward to the activations 2 N L; the frozen weights get no
gradient; LoRA's own weights are under 1% and left out) plus causal attention 6 n_layers d L^2 (forward
QK^T and AV over half the L x L square: 2 d L^2 per layer, backward twice that). N counts every linear weight the
tokens pass through, the LM head included; embeddings are lookups. Padding, recomputation (gradient
checkpointing) and dequantisation are not useful FLOPs. Peak: H100 SXM bf16 dense 989 TFLOP/s (--peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
SOURCE = ROOT / "assets" / "bench" / "support_train.jsonl"

# Shapes from the published config.json of Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-1.5B-Instruct.
QWEN25 = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_window_layers=21),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_window_layers=21),
}
QWEN25_COMMON = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=151936,
                     max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu",
                     tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768, attention_dropout=0.0,
                     bos_token_id=151643, eos_token_id=151645, initializer_range=0.02, use_cache=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="0.5b,1.5b", help="comma list of: " + ", ".join(QWEN25))
    p.add_argument("--sides", default="baseline,studio",
                   help="comma list of: baseline, studio, studio-no-{varlen,logits}, studio+checkpointing")
    p.add_argument("--steps", type=int, default=30, help="timed optimiser steps per side (default 30)")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (kernels, allocator)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--shape", choices=("chats", "full"), default="chats")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the GPU (H100 SXM: 989)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


# --- model and data ----------------------------------------------------------------------------
def make_model_folder(name: str, folder: Path) -> Path:
    """A Qwen2.5-shaped model with random bf16 weights, saved as safetensors with the bundled tokenizer, so both
    sides load it through from_pretrained as they would a downloaded model."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from studio import models
    from studio.config import BUNDLED_MODEL

    values = {**QWEN25_COMMON, **QWEN25[name]}
    values.pop("model_type")
    config = Qwen2Config(**values)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    models.load_tokenizer(BUNDLED_MODEL).save_pretrained(folder)
    return folder


def make_data(path: Path, shape: str, max_len: int, rows: int = 400) -> Path:
    """Multi-turn conversations of the benchmark's support chats: 1 to 24 exchanges with a long tail
    (chats), or enough exchanges to fill max_seq_length (full)."""
    chats = [json.loads(line)["messages"] for line in SOURCE.read_text(encoding="utf-8").splitlines()]
    exchanges = [[m for m in chat if m["role"] != "system"] for chat in chats]
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            if shape == "full":
                k = 40  # ~40 x 120 tokens: always past the cut-off
            else:  # long tail: a median of 4 exchanges, one in ten past 11, a few cut at max_seq_length
                k = min(24, max(1, round(rng.lognormvariate(1.386, 0.8))))
            messages = [{"role": "system", "content": chats[0][0]["content"]}]
            for ex in rng.sample(exchanges, k):
                messages += ex
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return path


# --- the sides ---------------------------------------------------------------------------------
def worker(name: str, index: int, args, turns) -> common.SideResult:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    logging.getLogger("transformers").setLevel(logging.ERROR)
    result = common.SideResult(name=name)
    work = Path(tempfile.mkdtemp(prefix=f"bench-gpu-{name}-"))
    torch.cuda.reset_peak_memory_stats()
    if name == "baseline":
        train_baseline(args, index, result, work)
    else:
        train_studio(args, index, result, work, name)
    result.peak_gpu_gb = torch.cuda.max_memory_allocated() / 2**30
    result.peak_rss_gb = common.peak_rss_gb()
    return result


def tokenised_rows(args):
    from studio import data, models

    tokenizer = models.load_tokenizer(args.model_folder)
    examples = data.load_data(args.data_file).good_examples()
    rows = [data.encode_example(e, tokenizer, args.max_seq_length, True) for e in examples]
    return tokenizer, [r for r in rows if any(label != -100 for label in r["labels"])]


def train_baseline(args, index, result, work: Path) -> None:
    """Plain transformers + peft + bitsandbytes, as in their QLoRA docs."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    tokenizer, rows = tokenised_rows(args)
    train_set = Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                   "labels": [r["labels"] for r in rows]})
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.model_folder, quantization_config=bnb, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model)  # gradient checkpointing on, as the docs do
    set_seed(42)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    training_args = TrainingArguments(
        output_dir=str(work / "out"), per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=0.03, max_steps=args.steps + args.warmup_steps, logging_steps=1,
        save_strategy="no", report_to="none", bf16=True, optim="paged_adamw_8bit", seed=42, data_seed=42,
        disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    collator = common.CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding="longest",
                                                              label_pad_token_id=-100), result)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator,
                      callbacks=[common.turn_callback(None, index, result, untimed_steps=args.warmup_steps)])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    result.notes = "gradient checkpointing on (prepare_model_for_kbit_training)"


def train_studio(args, index, result, work: Path, name: str) -> None:
    from studio import estimate, train
    from studio.config import RunConfig

    estimate.record_speed = lambda *a, **k: None
    config = RunConfig(model=args.model_folder, data_path=args.data_file, validation_fraction=0.0, method="qlora",
                       max_steps=args.steps + args.warmup_steps, batch_size=args.batch_size,
                       learning_rate=args.lr, max_seq_length=args.max_seq_length, lora_rank=8, lora_alpha=16,
                       lora_dropout=0.05, target_modules="all-linear", eval_every=0, save_every=0,
                       logging_every=1, seed=42, run_name=name,
                       gradient_checkpointing=name == "studio+checkpointing")
    if name == "studio-no-varlen":
        train.VARLEN_ATTENTION = False
    if name == "studio-no-logits":
        train.TRAINED_LOGITS_ONLY = False
    callback = common.turn_callback(None, index, result, untimed_steps=args.warmup_steps)
    common.run_studio(config, work / "run", result, callback, ("gradient checkpointing", "activations need"))


# --- FLOPs and report -------------------------------------------------------------------------
def linear_params(name: str) -> int:
    """Every linear weight a token passes through (q, k, v, o, gate, up, down in each layer; the LM head)."""
    c = {**QWEN25_COMMON, **QWEN25[name]}
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * inter
    return layers * per_layer + c["vocab_size"] * h


def useful_flops(name: str, result: common.SideResult) -> float:
    """4 N per real token + 6 n_layers d L^2 per example, over the timed steps (scaled from all collated
    examples to the timed ones by their share of tokens)."""
    c = {**QWEN25_COMMON, **QWEN25[name]}
    if not result.collated_tokens:
        return 0.0
    share = result.real_tokens / result.collated_tokens  # the untimed warm-up steps are left out
    attention = 6 * c["num_hidden_layers"] * c["hidden_size"] * result.collated_sq_tokens * share
    return 4 * linear_params(name) * result.real_tokens + attention


def report(args, by_model: dict, wall: float) -> str:
    header = ["model", "side", "real tokens/s", "vs baseline", "peak GPU GB", "memory vs baseline", "MFU",
              "padding computed", "notes"]
    rows = []
    for name, results in by_model.items():
        base = next((r for r in results if r.name == "baseline" and not r.error), None)
        for r in results:
            if r.error:
                rows.append([name, r.name, "failed: " + r.error[:100]] + [""] * 6)
                continue
            mfu = useful_flops(name, r) / r.step_seconds / (args.peak_tflops * 1e12) if r.step_seconds else 0
            padding = 1 - r.collated_tokens / r.computed_tokens if r.computed_tokens else 0.0
            speed = f"{r.tokens_per_s / base.tokens_per_s:.2f}x" if base and base.tokens_per_s else ""
            memory = f"{r.peak_gpu_gb / base.peak_gpu_gb:.2f}x" if base and base.peak_gpu_gb else ""
            rows.append([f"Qwen2.5-{name.upper()} shape ({linear_params(name) / 1e9:.2f}B linear)", r.name,
                         f"{r.tokens_per_s:,.0f}", speed, f"{r.peak_gpu_gb:.1f}", memory, f"{100 * mfu:.1f}%",
                         f"{100 * padding:.0f}%", r.notes[:120]])
    return "\n".join([
        f"{time.strftime('%Y-%m-%d %H:%M')}, {common.machine()}",
        f"command: python bench/train_gpu.py {' '.join(sys.argv[1:])}".rstrip(),
        f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, data shape {args.shape}, "
        f"{args.steps} timed steps after {args.warmup_steps} untimed; {wall / 60:.1f} min in all",
        "", common.table(rows, header)])


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench/train_gpu.py: torch is not installed; nothing to measure.")
        return 0
    if not torch.cuda.is_available():
        print("bench/train_gpu.py: no CUDA GPU here, so there is nothing to measure (QLoRA needs one). "
              "Run it on a GPU machine; bench/train_cpu.py measures the CPU path.")
        return 0
    names = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    known = {"baseline", "studio", "studio-no-varlen", "studio-no-logits", "studio+checkpointing"}
    bad = [m for m in names if m not in QWEN25] + [s for s in sides if s not in known]
    if bad:
        print(f"Error: unknown model or side {', '.join(bad)}.", file=sys.stderr)
        return 2
    started = time.time()
    by_model = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        args.data_file = str(make_data(Path(tmp) / f"chats-{args.shape}.jsonl", args.shape, args.max_seq_length))
        for name in names:
            args.model_folder = str(Path(tmp) / f"qwen2.5-{name}")
            # In a child process, so this one never holds a CUDA context the sides would have to share.
            ctx = multiprocessing.get_context("spawn")
            maker = ctx.Process(target=make_model_folder, args=(name, Path(args.model_folder)))
            maker.start()
            maker.join()
            if maker.exitcode != 0:
                print(f"Error: building the {name} model failed (exit code {maker.exitcode}).", file=sys.stderr)
                return 1
            # One side after the other: the GPU is not shared, and each side gets all of its memory.
            by_model[name] = common.run_sides(worker, sides, args, interleave=False)
    text = report(args, by_model, time.time() - started)
    print(text)
    common.write_json(args.json, {"args": vars(args), "report": text,
                                  "results": {k: [r.__dict__ for r in v] for k, v in by_model.items()}})
    return 1 if any(r.error for v in by_model.values() for r in v) else 0


if __name__ == "__main__":
    sys.exit(main())
