"""Before a run starts: how much memory it needs and how long it will take on this machine.

Time = tokens to train / tokens per second. Tokens come from the dataset itself (tokenised with
the model's tokenizer). Tokens per second come, in order of trust, from (1) the speed a finished
run of the same model and method measured on this machine, (2) a FLOP-based default: LoRA on a
frozen base costs about 4 N FLOPs per token (forward 2N + backward through activations 2N; no
weight gradients for the frozen weights), divided by an effective FLOP/s of this hardware.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .config import RunConfig
from .fileio import write_text
from .train import TOKENIZED_DATA_FIELDS, cpu_precision, speed_key

# Effective fp32 FLOP/s per CPU core for LoRA training, fitted to SmolLM2-135M runs on a 2-core machine: 186 real
# tokens/s when idle, 110 with other programs on the same cores. 3.5e10 per core (130 tokens/s) sits between,
# a little on the slow side: a user is better served by a run that ends early than one that overruns.
CPU_FLOPS_PER_CORE = 3.5e10
# A training step in bf16 on a CPU where the probe chose it (studio/precision.py), against fp32: measured 1.2-1.3x
# on an AVX512-BF16 EPYC (matmul 2.3x), 1.3-1.4x reported on an AMX Xeon. The lower figure: an estimate should
# rather end early than overrun.
CPU_BF16_STEP_GAIN = 1.2
# Effective FLOP/s on a GPU for QLoRA / LoRA-16: a conservative 25% of an A100-class bf16 peak.
GPU_FLOPS = 0.25 * 312e12
MULTI_GPU_EFFICIENCY = 0.9  # share of a GPU's own speed each of several keeps (gradient all-reduce, waiting)
LOAD_OVERHEAD_S = {"cpu": 10.0, "gpu": 30.0}  # model load, tokenisation, adapter save (CPU: 9 s measured)


@dataclass
class Estimate:
    memory_gb: float
    available_gb: float
    fit: str
    steps: int
    tokens: int
    tokens_per_s: float
    seconds: float
    basis: str  # where tokens_per_s came from, in words
    processes: int = 1  # training processes on all machines (one per GPU)
    global_batch: int = 0  # examples per optimizer step, all processes together
    sharded: bool = False  # FSDP: the weights split across the GPUs (memory_gb is one GPU's)

    def summary(self) -> str:
        minutes = self.seconds / 60
        when = f"about {minutes:.0f} min" if minutes >= 1.5 else f"about {self.seconds:.0f} s"
        where = ""
        if self.processes > 1:
            how = "the weights split across them (FSDP)" if self.sharded else "a whole copy on each (DDP)"
            where = (f" On **{self.processes} processes**, {how}; memory per GPU; global batch "
                     f"{self.global_batch} examples a step.")
        return (f"Estimated peak memory **{self.memory_gb:.1f} GB** of {self.available_gb:.0f} GB ({self.fit}); "
                f"**{self.steps} steps**, {self.tokens:,} tokens, {when} at ~{self.tokens_per_s:,.0f} tokens/s "
                f"({self.basis}).{where}")


def _speeds_file() -> Path:
    from .models import cache_dir

    return cache_dir() / "speeds.json"


def record_speed(model: str, method: str, tokens_per_s: float) -> None:
    """Remember the speed a run measured, for the next estimate on this machine."""
    path = _speeds_file()
    try:
        speeds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        speeds = {}
    speeds[f"{model}|{method}"] = tokens_per_s
    write_text(path, json.dumps(speeds, indent=1))


def measured_speed(model: str, method: str) -> float | None:
    try:
        return float(json.loads(_speeds_file().read_text())[f"{model}|{method}"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None


@lru_cache(maxsize=16)
def model_shape(model: str) -> tuple[float, int, int]:
    """(parameters, hidden size, layers) from the model's config, without loading weights."""
    from . import models

    config = models.load_config(model)
    hidden, layers = config.hidden_size, config.num_hidden_layers
    inter = getattr(config, "intermediate_size", 4 * hidden)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attn = hidden * head_dim * (2 * heads + 2 * kv)
    per_layer = attn + 3 * hidden * inter
    embeddings = config.vocab_size * hidden  # the output projection costs this much compute per token
    return float(layers * per_layer + embeddings), hidden, layers


@lru_cache(maxsize=8)
def _dataset_tokens(config_json: str, mtime: float) -> tuple[int, int]:
    """(training rows, real training tokens per epoch) - cached per data file version and settings."""
    from . import data, models

    config = RunConfig.from_dict(json.loads(config_json))
    tokenizer = models.load_tokenizer(config.model, config.trust_remote_code)
    preferences = data.objective_of(config).needs_preferences
    train, _ = data.load_examples(config)
    total = 0
    for example in train:
        sides = [example]
        if preferences:  # DPO and ORPO put the prompt with each answer through the model: chosen and rejected
            sides.append(data.Chat([*example.prompt_messages, {"role": "assistant", "content": example.rejected}]))
        total += sum(len(data.encode_example(side, tokenizer, config.max_seq_length,
                                             config.train_on_answers_only)["input_ids"]) for side in sides)
    return len(train), total


def estimate_run(config: RunConfig) -> Estimate:
    """Memory and time for config on this machine. Raises the data/model errors a run would raise."""
    from . import data, models

    hardware = models.detect_hardware()
    method = models.training_method(config)
    keyed = {name: getattr(config, name) for name in TOKENIZED_DATA_FIELDS}
    mtime = Path(config.data_path).stat().st_mtime if config.data_path and Path(config.data_path).exists() else 0
    rows, tokens_per_epoch = _dataset_tokens(json.dumps(keyed, sort_keys=True), mtime)
    config.check_data_size(rows)
    params, hidden, layers = model_shape(config.model)
    from . import distributed

    processes = distributed.processes_per_node(config) * config.nodes
    per_step_rows = distributed.global_batch(config, processes)  # batch_size is per process
    steps_per_epoch = max(1, math.ceil(rows / per_step_rows))
    steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(steps_per_epoch * config.epochs))
    tokens = int(tokens_per_epoch / rows * per_step_rows * steps) if rows else 0

    # On a CPU the number format changes the speed: the run's own choice (a probe for "auto", cached per process).
    precision = None if hardware["cuda"] else cpu_precision(config, models.load_config(config.model,
                                                                                          config.trust_remote_code))
    measured = measured_speed(config.model, speed_key(method, precision))
    if measured:
        speed, basis = measured, "measured by an earlier run on this machine"
    elif hardware["cuda"]:
        speed, basis = GPU_FLOPS / (4 * params), "typical GPU speed"
    else:
        speed = CPU_FLOPS_PER_CORE * min(hardware["cpu_count"], 16) / (4 * params)
        basis = f"calibrated for {hardware['cpu_count']} CPU cores"
        if precision is not None and precision.bf16:
            speed *= CPU_BF16_STEP_GAIN
            basis += ", in bf16"
    # Preference pairs: the tokens above hold both answers (each trained: forward and backward); DPO also runs both
    # through its reference (the starting model) forward only, about a third of a trained token's cost.
    objective = data.objective_of(config)
    trained = objective.forwards - objective.reference_forwards
    cost = 1 + objective.reference_forwards / trained / 3 if objective.needs_preferences else 1.0
    if processes > 1 and hardware["cuda"]:
        # Each GPU trains its share of every step; the gradient exchange costs some of the gain (DDP's usual 90%).
        speed *= processes * MULTI_GPU_EFFICIENCY
        basis += f", x{processes} GPUs at {MULTI_GPU_EFFICIENCY:.0%} each"
    # (On a CPU, several processes share the same cores: no faster.)
    overhead = LOAD_OVERHEAD_S["gpu" if hardware["cuda"] else "cpu"]
    seconds = overhead + cost * tokens / max(speed, 1e-9)
    if config.validation_fraction > 0 or config.validation_path:
        # Each validation pass is forward only (about a third of a training step's cost per token); there is
        # one before training, one every eval_every steps, and one at the end unless that was an eval step.
        val_tokens = tokens_per_epoch / max(rows, 1) * max(1.0, rows * config.validation_fraction)
        every = config.eval_every or steps
        passes = 1 + steps // every + (1 if steps % every else 0)
        seconds += passes * cost * val_tokens / (3 * max(speed, 1e-9))

    # Packed: one row of batch_size examples laid end to end; padded: batch_size rows of the longest. An architecture
    # without packed attention trains padded whatever the setting says (packing.for_model), and is estimated so.
    from . import packing

    packed = packing.for_model(config, models.load_config(config.model, config.trust_remote_code)).packing
    mean_len = max(1, tokens_per_epoch // max(rows, 1))
    seq, batch = (mean_len * config.batch_size, 1) if packed else (config.max_seq_length, config.batch_size)
    if objective.needs_preferences:  # TRL pads a batch of chosen and rejected answers: twice the rows, no packing
        seq, batch = config.max_seq_length, 2 * config.batch_size
    sharded = distributed.uses_fsdp(config, processes)
    memory = models.estimate_memory_gb(params / 1e9, method, seq, batch, hidden=hidden, layers=layers,
                                       shards=processes if sharded else 1)
    available = hardware.get("gpu_memory_gb") or hardware["ram_gb"]
    if processes > 1 and not hardware["cuda"]:
        memory *= processes  # CPU processes share the machine's memory, each with its own copy of the model
    return Estimate(memory_gb=memory, available_gb=available, fit=models.fit_badge(memory, available), steps=steps,
                    tokens=tokens, tokens_per_s=speed, seconds=seconds, basis=basis, processes=processes,
                    global_batch=per_step_rows, sharded=sharded)
