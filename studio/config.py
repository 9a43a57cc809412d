"""RunConfig: every setting of a fine-tuning run, once, typed, with help text and bounds.

The form in the Settings tab is built from these fields, a run writes them to
`runs/<id>/config.json`, and `python -m studio train CONFIG.json` reads the same file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import methods, precision
from .errors import ConfigError

BUNDLED_MODEL = "SmolLM2-135M-Instruct (offline)"
TINY_TEST_MODEL = "tiny-test"  # a 2-layer random model with the bundled tokenizer; tests only

# The methods' one home is studio/methods.py; these names stay for the form and existing callers.
METHODS = methods.CHOICES
METHOD_LABELS = methods.LABELS
SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
# Experiment trackers the Trainer can log to (transformers' report_to names); "none" logs to events.jsonl only.
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "trackio")
# Number formats on a CPU; "auto" measures which is faster (studio/precision.py, their one home).
CPU_PRECISIONS = precision.CHOICES
# How several GPUs share a run: each a whole copy of the model (DDP) or a shard of its weights (FSDP).
SHARDINGS = ("auto", "ddp", "fsdp")
# What a run learns from its rows: the answers (supervised fine-tuning) or preference pairs (DPO, ORPO through TRL).
OBJECTIVES = (methods.AUTO, *methods.OBJECTIVES)  # their one home: studio/methods.py


def _field(default: Any, help: str, minimum: float | None = None, maximum: float | None = None,
           choices: tuple | None = None, group: str = "training", label: str | None = None):
    meta = {"help": help, "min": minimum, "max": maximum, "choices": choices, "group": group, "label": label}
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    # --- model -------------------------------------------------------------------------
    model: str = _field(BUNDLED_MODEL, "Base model, the ready-made model you start from: the bundled offline "
                        "model, a hub id (a model's name on huggingface.co) such as Qwen/Qwen3-0.6B, or a local "
                        "folder with safetensors weights (the model's files).", group="model")
    trust_remote_code: bool = _field(False, "⚠️ Runs Python code shipped with the model: tick it only for models "
                                     "you trust.",
                                     group="model", label="Trust remote code")
    # --- data --------------------------------------------------------------------------
    data_path: str = _field("", "Training file: CSV, TSV, JSON, JSONL, Parquet, TXT or XLSX.", group="data")
    validation_path: str = _field("", "Optional separate validation file (examples kept aside to check "
                                  "the model on, never trained on); empty = split off a share of the training file.",
                                  group="data")
    validation_fraction: float = _field(0.1, "Share of rows held out to measure validation loss, the error on "
                                        "examples the model never trained on (0 = none).",
                                        0.0, 0.5, group="data", label="Validation share")
    prompt_column: str = _field("", "Column holding the prompt (the question or instruction); empty = "
                        "detected automatically.", group="data")
    response_column: str = _field("", "Column holding the answer; empty = detected automatically.", group="data")
    system_column: str = _field("", "Optional column holding a system prompt.", group="data")
    system_prompt: str = _field("", "Your own standing instruction for every example without one (e.g. \"You answer "
                                "for the Riverside vet clinic; sign with 'The Riverside team'.\"); empty = the "
                                "model's default.", group="data", label="System prompt")
    text_column: str = _field("", "Column of plain text, for continued pre-training (the model reads "
                        "raw text to learn its words and facts, with no questions and answers).", group="data")
    train_on_answers_only: bool = _field(True, "Compute the loss (the error the model learns from) on the answers "
                                         "only: the prompt's tokens (word pieces) are masked, so the model learns "
                                         "to answer, not to repeat questions.",
                                         group="data", label="Train on answers only")
    # --- method ------------------------------------------------------------------------
    method: str = _field("auto", "How to train. LoRA trains a small add-on (an adapter) instead of the "
                         "whole model; QLoRA does the same on a copy of the model squeezed to 4 bits per number "
                         "(needs a CUDA GPU, least memory); 16-bit is half precision (GPU); fp32 is full precision "
                         "(works on a CPU, slowest on a GPU). Automatic picks QLoRA on a GPU, LoRA fp32 on a CPU.",
                         choices=METHODS, group="method")
    lora_rank: int = _field(8, "LoRA rank r: the size of the adapter (the low-rank update: how many "
                            "numbers per layer it may change). Higher = it can learn more, uses more memory; 8 to 32 "
                            "suits most tasks.",
                            1, 256, group="method", label="LoRA rank")
    lora_alpha: int = _field(16, "LoRA alpha: how strongly the adapter's change is applied (scaled by "
                             "alpha / rank). Usually 2 x rank.", 1, 512,
                             group="method", label="LoRA alpha")
    lora_dropout: float = _field(0.05, "Dropout: a share of the adapter's inputs hidden at random in each "
                                 "step, against over-fitting (learning the examples by heart instead of the task) on "
                                 "small datasets.",
                                 0.0, 0.5, group="method", label="LoRA dropout")
    target_modules: str = _field("all-linear", "Layers that get LoRA adapters: 'all-linear' (every weight "
                                 "matrix, the usual choice) or a comma list of layer names such as q_proj,v_proj.",
                                 group="method", label="Target modules")
    gradient_checkpointing: bool = _field(False, "Recompute activations (the intermediate results kept for "
                                          "learning) instead of storing them: less memory, about a third slower. On "
                                          "a GPU it is turned on by itself when the longest step would not fit "
                                          "in the free memory.", group="method")
    cpu_precision: str = _field("auto", "Number format when training or chatting on a CPU (a GPU follows the method "
                                "above): fp32 is full precision; bf16 is a shorter format whose arithmetic runs 2 to "
                                "3 times faster on processors built for it (recent Intel Xeon, AMD EPYC; a whole run "
                                "gains less) and much slower on others. Automatic times both in a fraction of a "
                                "second and uses bf16 only when clearly faster here.", choices=CPU_PRECISIONS,
                                group="method", label="CPU precision")
    objective: str = _field("auto", "What the model learns from your rows. Supervised (sft): to write the answers "
                            "in your file. DPO and ORPO: from preference pairs (a chosen and a rejected answer to the "
                            "same prompt), to prefer the chosen kind of answer; DPO compares against the model you "
                            "started from, ORPO needs no such comparison and is a little cheaper. Automatic: DPO for "
                            "a file of preference pairs, supervised otherwise.", choices=OBJECTIVES, group="method",
                            label="Training goal")
    preference_beta: float = _field(0.1, "For DPO and ORPO: how strongly the chosen answers are preferred over the "
                                    "rejected ones (DPO's beta, ORPO's lambda). Higher = a bolder change, lower = "
                                    "closer to the model you started from; 0.1 suits most data.", 0.001, 10.0,
                                    group="method", label="Preference strength (beta)")
    # --- training ----------------------------------------------------------------------
    epochs: float = _field(1.0, "Epochs: passes over the training data (2 = every example is seen twice).", 0.1, 100.0)
    max_steps: int = _field(0, "Stop after this many optimizer steps (updates of the model: one per "
                            "batch x gradient accumulation examples); 0 = run for the epochs above.", 0, 1_000_000,
                            label="Max steps")
    learning_rate: float = _field(2e-4, "How big each update of the weights is (the optimizer's step size). "
                                  "Too high and training jumps around, too low and it learns slowly; 1e-4 to 3e-4 "
                                  "(0.0001 to 0.0003) suits LoRA.", 1e-7, 1e-2,
                                  label="Learning rate")
    lr_scheduler: str = _field("cosine", "How the learning rate changes over the run: cosine and linear lower "
                               "it towards 0 by the end (steadier last steps), constant keeps it after the warm-up.",
                               choices=SCHEDULERS,
                               label="Learning-rate schedule")
    warmup_ratio: float = _field(0.03, "Warm-up: share of the steps over which the learning rate ramps up to "
                                 "its full value, so the first updates are gentle (the first step already uses a "
                                 "small part of it).",
                                 0.0, 0.5, label="Warm-up share")
    batch_size: int = _field(4, "Examples the model works on at once (on the GPU or CPU). Higher = faster "
                           "per example, more memory.", 1, 256)
    gradient_accumulation: int = _field(1, "Batches whose gradients (the directions to change the weights in) "
                                        "are added up before one update: a larger effective batch (batch size x this) "
                                        "without more memory.", 1, 256, label="Gradient accumulation")
    max_seq_length: int = _field(512, "Longest example in tokens (word pieces; about 3/4 of a word each); "
                                 "longer ones are cut.", 16, 32768,
                                 label="Max sequence length (tokens)")
    packing: bool = _field(True, "Padding-free batches: examples are laid end to end, each seeing only "
                           "itself, so no compute is spent on padding (filler that evens out lengths). Models whose "
                           "attention cannot keep packed examples apart train on padded batches instead.",
                           label="Packing (padding-free batches)")
    weight_decay: float = _field(0.0, "Weight decay: an L2 penalty, a small pull of the adapter's weights "
                                  "towards 0 in every step, against over-fitting (0 = off).", 0.0, 1.0)
    seed: int = _field(42, "Random seed: the same number gives the same validation split, the "
                        "same starting adapter and the same data order, so a run can be repeated.", 0, 2**31 - 1)
    # --- monitoring --------------------------------------------------------------------
    eval_every: int = _field(20, "Measure validation loss every N optimizer steps (0 = only before "
                             "and after training).", 0, 100_000,
                             group="monitoring", label="Validate every (steps)")
    save_every: int = _field(50, "Save a checkpoint (the state training can resume from) every N "
                             "optimizer steps (0 = only at the end).", 0, 100_000,
                             group="monitoring", label="Checkpoint every (steps)")
    keep_checkpoints: int = _field(2, "How many recent checkpoints to keep on disk.", 1, 100, group="monitoring",
                                   label="Checkpoints to keep")
    logging_every: int = _field(1, "Log the training loss every N optimizer steps.", 1, 10_000, group="monitoring",
                                label="Log every (steps)")
    run_name: str = _field("", "Optional name shown in the run history.", group="monitoring")
    early_stopping_patience: int = _field(3, "Early stopping: end the run after this many validations in a row "
                                          "without a lower validation loss (the model has stopped getting better at "
                                          "your held-out rows and may start learning the training rows by heart); "
                                          "0 = off. Needs validation data and 'Validate every' above 0. The adapter "
                                          "kept is always the one with the lowest validation loss.", 0, 1000,
                                          group="monitoring", label="Early stopping patience")
    report_card: bool = _field(True, "After a run with validation data, write its report card (report.html): "
                               "better at your task, general knowledge kept, no parroting, what to try next. Adds "
                               "about a fifth of the training time on a CPU the first time a base model meets "
                               "this data, about a sixth after (the base model's side is kept).",
                               group="monitoring", label="Report card")
    report_to: str = _field("none", "Also log the run to an experiment tracker: TensorBoard, Weights & Biases "
                            "(wandb), MLflow or Trackio (its package must be installed; wandb and mlflow need an "
                            "account or server set up).", choices=TRACKERS, group="monitoring",
                            label="Log to tracker")
    # --- hardware: several GPUs or machines (studio/distributed.py) -------------------------------------------
    devices: str = _field("auto", "Processes on this machine, one per GPU: auto = every visible GPU (one process on a "
                          "CPU), or a number such as 2. batch_size is per process, so each optimizer step sees "
                          "batch size x gradient accumulation x processes x machines examples (the global batch).",
                          group="hardware", label="GPUs (processes) per machine")
    nodes: int = _field(1, "Machines the run spans. Above 1, run the same command with the same config on each "
                        "machine, each with its own --node-rank (0 on the machine whose run you watch).", 1, 1024,
                        group="hardware", label="Machines")
    master_addr: str = _field("", "With several machines: the address of machine 0 (node rank 0), which every machine "
                              "can reach; empty = this machine (one machine).", group="hardware",
                              label="Address of machine 0")
    master_port: int = _field(29500, "With several processes: a free TCP port on machine 0 where the processes meet.",
                              1024, 65535, group="hardware", label="Port on machine 0")
    sharding: str = _field("auto", "How several GPUs share the model: ddp gives each GPU a whole copy (fastest when "
                           "the model fits one GPU); fsdp splits the model's weights across the GPUs (for a model "
                           "too big for one, QLoRA included); auto = fsdp only when the estimate says it does not "
                           "fit one GPU. A CPU always uses ddp.", choices=SHARDINGS, group="hardware", label="Sharding")
    # --- lineage: set by "Train v2 with my corrections" (studio/feedback.py), not by the form --------------------
    parent_run: str = _field("", "The run this one continues: the id of a run in the same runs folder whose "
                             "fine-tuned adapter is the starting point (empty = start from the base model alone).",
                             group="lineage", label="Continues run")
    corrections_path: str = _field("", "A file of corrections made in Chat (corrections.jsonl in the run folder), "
                                   "trained on beside the data file and weighted so that a handful of corrections "
                                   "matter; empty = none.", group="lineage", label="Corrections file")

    def __post_init__(self):
        if isinstance(self.devices, int) and not isinstance(self.devices, bool):
            self.devices = str(self.devices)  # a config file may say "devices": 2
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            # Coerce numbers that arrived as strings or floats from JSON / forms.
            if f.type in ("int", int) and not isinstance(value, bool):
                value = _whole_number(f.name, value)
                setattr(self, f.name, value)
            elif f.type in ("float", float):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{f.name} must be a number, got {value!r}.") from None
                if not math.isfinite(value):  # NaN passes every comparison with the bounds below
                    raise ConfigError(f"{f.name} must be a finite number, got {value}: set it to a value "
                                      f"{_range_text(meta)}.")
                setattr(self, f.name, value)
            elif f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name} must be true or false, got {value!r}.")
            elif f.type in ("str", str):
                if value is None:
                    value = ""
                if not isinstance(value, str):
                    raise ConfigError(f"{f.name} must be text, got {value!r}.")
                setattr(self, f.name, value.strip())
            lo, hi = meta.get("min"), meta.get("max")
            if lo is not None and value < lo:
                raise ConfigError(f"{f.name} is {value}, below its minimum {lo}: set it to at least {lo}.")
            if hi is not None and value > hi:
                raise ConfigError(f"{f.name} is {value}, above its maximum {hi}: set it to at most {hi}.")
            choices = meta.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{f.name} is {value!r}; choose one of: {', '.join(choices)}.")
        if not self.model:
            raise ConfigError("model is empty: pick the bundled model, a hub id or a local folder.")
        if self.master_addr and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?",
                                                 self.master_addr):
            raise ConfigError(f"master_addr {self.master_addr!r} is not a host name or an IP address: give the "
                              f"address of machine 0, such as 192.168.1.20 or gpu-box-0.")
        if not self.target_modules:
            raise ConfigError("target_modules is empty: use 'all-linear' or a comma list such as q_proj,v_proj.")
        self.devices = self.devices.lower() or "auto"
        if self.devices != "auto" and not (self.devices.isdigit() and 1 <= int(self.devices) <= 1024):
            raise ConfigError(f"devices is {self.devices!r}: use auto (every visible GPU) or a number of processes "
                              f"such as 2.")
        if self.devices != "auto":
            self.devices = str(int(self.devices))  # "02" -> "2": one spelling in config.json and the command

    def check_data_size(self, n_train_rows: int) -> None:
        """Settings that only make sense against the data: caught before a run starts."""
        if self.batch_size > n_train_rows:
            raise ConfigError(f"batch_size is {self.batch_size} but there are only {n_train_rows} training rows: "
                              f"lower the batch size to {max(1, n_train_rows)} or add data.")

    # --- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown setting(s) {', '.join(unknown)}: remove them or check the spelling "
                              f"(see README for the list).")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist: check the path.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"Config file {path} is not valid JSON ({e}): fix the file or save it again "
                              f"from the Settings tab.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {path} must hold a JSON object of settings.")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def diff(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (mine, theirs)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _whole_number(name: str, value: Any) -> int:
    """An int field's value as an int: 8, 8.0, "8" and "8.0" are 8; 8.5 is refused, never rounded (int() would
    silently make a rank of 8.5 an 8)."""
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}.") from None
    if isinstance(number, float) and math.isfinite(number):
        if number.is_integer():
            return int(number)
        raise ConfigError(f"{name} must be a whole number, got {value!r}: use {math.floor(number)} or "
                          f"{math.ceil(number)}.")
    raise ConfigError(f"{name} must be a whole number, got {value!r}.")


def _range_text(meta) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f"of at least {lo}"
    return f"of at most {hi}" if hi is not None else "such as the default"


def field_help() -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field, in order: used by README and --help."""
    return [(f.name, f.type if isinstance(f.type, str) else f.type.__name__, f.default, f.metadata["help"])
            for f in dataclasses.fields(RunConfig)]


# Presets: named sets of values the user can start from, then edit.
PRESETS: dict[str, dict[str, Any]] = {
    "Quick test": {"epochs": 1.0, "max_steps": 30, "learning_rate": 3e-4, "lora_rank": 8, "lora_alpha": 16,
                   "max_seq_length": 256, "batch_size": 4, "gradient_accumulation": 1, "eval_every": 10,
                   "save_every": 0},
    "Balanced": {"epochs": 2.0, "max_steps": 0, "learning_rate": 2e-4, "lora_rank": 16, "lora_alpha": 32,
                 "max_seq_length": 512, "batch_size": 4, "gradient_accumulation": 2, "eval_every": 25,
                 "save_every": 50},
    "Thorough": {"epochs": 3.0, "max_steps": 0, "learning_rate": 1e-4, "lora_rank": 32, "lora_alpha": 64,
                 "max_seq_length": 1024, "batch_size": 4, "gradient_accumulation": 4, "eval_every": 50,
                 "save_every": 100},
}


def apply_preset(config: RunConfig, preset: str) -> RunConfig:
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    return dataclasses.replace(config, **PRESETS[preset])
