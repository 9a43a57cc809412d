"""Training methods: one description each, so that a new method (DoRA, full fine-tuning, preference training) is an
entry here plus its own code, not a string compared in ten files.

A config file names its method ("auto", "qlora", "lora16", "lora32": the names config files, events and the speed
record already hold); the code that loads, trains, estimates, chats and exports asks the Method for the facts it
needs. Nothing here imports torch: the hardware is passed in (studio.models detects it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError

AUTO = "auto"  # not a method: the choice made for this machine by `resolve`


@dataclass(frozen=True)
class Method:
    name: str  # as stored in config files, events and the speed record
    label: str  # plain words for people: what it is, where it runs, what it costs
    short: str  # the name in a sentence ("QLoRA 4-bit needs a CUDA GPU")
    adapter: str  # what is trained on the frozen base: "lora" (a low-rank update of each targeted layer)
    weight_bits: int  # how the frozen base weights sit in memory: 4 (NF4 with double quantisation), 16 or 32
    compute: str  # "fp32", or "half": bf16 where the GPU computes it natively, else fp16
    optimizer: str  # transformers' TrainingArguments.optim
    bytes_per_param: float  # memory of the base weights per parameter, for the estimate (NF4 with its scales: 0.55)
    needs_cuda: bool
    needs_package: str = ""  # a pip package the method imports (found without importing it), "" for none
    saves: str = "adapter"  # what a run leaves in runs/<id>/adapter: "adapter" (peft folder) or "full" weights

    @property
    def quantized(self) -> bool:
        """Base weights below 16 bits: loaded through bitsandbytes, prepared with prepare_model_for_kbit_training
        (which keeps norms and embeddings in fp32), never merged into."""
        return self.weight_bits < 16

    @property
    def half(self) -> bool:
        """Computes in bf16 / fp16 (mixed precision in the Trainer)."""
        return self.compute == "half"

    @property
    def activation_bytes(self) -> int:
        """Bytes of one activation value kept for the backward pass: the compute dtype's."""
        return 2 if self.half else 4

    @property
    def residual_bytes(self) -> int:
        """Bytes of one value of the residual stream (norm inputs, attention): fp32 for fp32 models, and for
        quantised ones, whose norms prepare_model_for_kbit_training keeps in fp32."""
        return 4 if self.quantized or not self.half else 2


QLORA = Method(
    name="qlora", short="QLoRA 4-bit",
    label="QLoRA 4-bit (the model squeezed to 4 bits a number): least memory, needs a CUDA GPU",
    adapter="lora", weight_bits=4, compute="half", optimizer="paged_adamw_8bit", bytes_per_param=0.55,
    needs_cuda=True, needs_package="bitsandbytes")
LORA16 = Method(
    name="lora16", short="LoRA 16-bit", label="LoRA 16-bit (half precision): fast on a GPU, needs a CUDA GPU",
    adapter="lora", weight_bits=16, compute="half", optimizer="adamw_torch", bytes_per_param=2.0, needs_cuda=True)
LORA32 = Method(
    name="lora32", short="LoRA fp32", label="LoRA fp32 (full precision): works everywhere, slowest on a GPU",
    adapter="lora", weight_bits=32, compute="fp32", optimizer="adamw_torch", bytes_per_param=4.0, needs_cuda=False)

METHODS: dict[str, Method] = {m.name: m for m in (QLORA, LORA16, LORA32)}
CHOICES: tuple[str, ...] = (AUTO, *METHODS)  # RunConfig.method's allowed values
LABELS: dict[str, str] = {AUTO: "Automatic: QLoRA 4-bit on a GPU, LoRA fp32 on a CPU",
                          **{m.name: m.label for m in METHODS.values()}}


def get(method: str | Method) -> Method:
    """The Method of a name (a Method is returned as it is). "auto" is not a method: see `resolve`."""
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except KeyError:
        raise ConfigError(f"Unknown method {method!r}; choose one of: {', '.join(CHOICES)}.") from None


def _none_installed(package: str) -> bool:
    return False


def automatic(cuda: bool, installed: Callable[[str], bool] = _none_installed) -> Method:
    """What "auto" trains with: QLoRA on a GPU with bitsandbytes, LoRA 16-bit on a GPU without it (a GPU machine
    set up without the gpu extra), the LoRA method on a CPU: its number format there is RunConfig.cpu_precision
    (studio/precision.py measures whether bf16 pays on this processor; 4-bit on a CPU is ~15x slower)."""
    if not cuda:
        return LORA32
    return QLORA if installed(QLORA.needs_package) else LORA16


def resolve(name: str | Method, cuda: bool, installed: Callable[[str], bool] = _none_installed) -> Method:
    """The method a run trains with on this machine; an impossible choice gets one sentence with the fix.

    `installed(package)`: whether an optional package (a Method's needs_package) is installed."""
    if name == AUTO:
        return automatic(cuda, installed)
    method = get(name)
    if method.needs_cuda and not cuda:
        raise ConfigError(f"{method.short} needs a CUDA GPU and none was found: choose '{LORA32.short}' (or "
                          f"Automatic) to train on the CPU, which is slower but works (4-bit on CPU is about 20x "
                          f"slower).")
    if method.needs_package and not installed(method.needs_package):
        raise ConfigError(f"{method.short} needs the {method.needs_package} package, which is not installed: run "
                          f"`pip install {method.needs_package}` (`make install` does it on a GPU machine) or "
                          f"choose {LORA16.short}.")
    return method


def for_inference(trained: str | Method | None, cuda: bool) -> Method:
    """How to load a base model to chat with, or merge, a run's adapter.

    fp32 on a CPU (the only precision that is fast there). On a GPU 16-bit, even for an adapter trained in fp32
    (faster, and the update is the same); but an adapter trained on 4-bit weights meets the 4-bit base it was
    trained against. Merging passes trained=None: an update is never merged into rounded 4-bit weights."""
    if not cuda:
        return LORA32
    method = METHODS.get(trained) if isinstance(trained, str) else trained
    return method if method is not None and method.quantized else LORA16


# --- training objectives: what a run learns from its rows ------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    name: str  # RunConfig.objective's value, as stored in config files and events
    label: str  # plain words for the form's dropdown
    short: str  # the name in a sentence
    trainer: str  # which trainer trains it: "sft" (the studio's own Trainer), "dpo" (trl.DPOTrainer), "orpo"
    # (trl.experimental.orpo.ORPOTrainer)
    needs_preferences: bool  # learns from preference pairs (a chosen and a rejected answer to each prompt)
    # Forward passes per pair, against one per supervised row, for the time and memory estimate: DPO runs the chosen
    # and rejected answers through the model being trained, and both again through the reference model (the model
    # started from: the adapter switched off, without gradients); ORPO has no reference, so chosen + rejected.
    forwards: int = 1
    reference_forwards: int = 0  # of the forwards above, those without a backward pass


SFT = Objective("sft", "Supervised: learn to write the answers in your file", "Supervised fine-tuning", "sft", False)
DPO = Objective("dpo", "DPO: learn to prefer the chosen answer over the rejected one (needs preference pairs)",
                "DPO", "dpo", True, forwards=4, reference_forwards=2)
ORPO = Objective("orpo", "ORPO: like DPO, without comparing against the starting model: a little cheaper (needs "
                 "preference pairs)", "ORPO", "orpo", True, forwards=2)
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (SFT, DPO, ORPO)}
OBJECTIVE_LABELS: dict[str, str] = {AUTO: "Automatic: DPO for a file of preference pairs, supervised otherwise",
                                    **{o.name: o.label for o in OBJECTIVES.values()}}


def resolve_objective(name: str, is_preference_data: bool) -> Objective:
    """What a run trains with: "auto" is DPO on preference pairs and supervised otherwise; DPO or ORPO on data
    without pairs is refused with the fix."""
    if name == AUTO:
        return DPO if is_preference_data else SFT
    try:
        objective = OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"Unknown training goal {name!r}; choose one of: {', '.join((AUTO, *OBJECTIVES))}.") from None
    if objective.needs_preferences and not is_preference_data:
        raise ConfigError(f"{objective.short} learns from preference pairs, and this data has none: use a file with "
                          f"prompt, chosen and rejected columns, or set the training goal to Supervised.")
    return objective
