"""Chat with a run: one loaded base model, its LoRA adapter switched on ("Fine-tuned") or off ("Base").

The base model is loaded once and the adapter attached with peft. A "base" answer runs inside
`model.disable_adapter()`, so it is the plain base model, never the tuned weights by accident.
The adapter switch is global to the model, so one lock serialises every generation on a session.

Nothing here imports gradio: the Chat tab, the demo and `python -m studio chat` all drive this.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import methods
from .config import BUNDLED_MODEL, RunConfig
from .errors import ConfigError, UserError
from .events import ADAPTER_CONFIG, ADAPTER_DIR, CONFIG_FILE, has_adapter
from .logs import ArgumentParser, tell_user
from .methods import Method

log = logging.getLogger("studio.chat")

BASE_LABEL, TUNED_LABEL = "Base", "Fine-tuned"
BATCH_COLUMNS = ["prompt", "reference", "base", "tuned"]


# --- settings -----------------------------------------------------------------------------
@dataclass
class GenerationSettings:
    """How one answer is generated. temperature 0 = greedy (deterministic; top_p and seed unused)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int = 0
    system_prompt: str = ""

    def __post_init__(self):
        try:
            self.max_new_tokens = int(self.max_new_tokens)
            self.temperature = float(self.temperature)
            self.top_p = float(self.top_p)
            self.repetition_penalty = float(self.repetition_penalty)
            self.seed = int(self.seed)
        except (TypeError, ValueError):
            raise ConfigError("Generation settings must be numbers: check max new tokens, temperature, top-p, "
                              "repetition penalty and seed.") from None
        self.system_prompt = (self.system_prompt or "").strip()
        checks = [("max_new_tokens", self.max_new_tokens, 1, 8192), ("temperature", self.temperature, 0.0, 5.0),
                  ("top_p", self.top_p, 0.01, 1.0), ("repetition_penalty", self.repetition_penalty, 0.5, 3.0),
                  ("seed", self.seed, 0, 2**31 - 1)]
        for name, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise ConfigError(f"{name} is {value}: set it between {lo} and {hi}.")

    def generate_kwargs(self) -> dict:
        """Keyword arguments for model.generate (they override the model's generation_config)."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            # top_k=0 switches top-k off, so top_p alone decides (the model's config may set top_k).
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        return kwargs


# --- helpers ------------------------------------------------------------------------------
def ensure_gpu_free(runs_dir: str | Path | None, action: str = "chat") -> None:
    """Refuse to load a model on the GPU a training run is using; on CPU the two may share."""
    if runs_dir is None:
        return
    from . import jobs, models

    busy = jobs.active_run(Path(runs_dir))
    if busy is not None and models.cuda_available():
        raise jobs.RunBusyError(f"Run {busy.name} is training on the GPU: {action} once it finishes, or stop it "
                                f"(the adapter is saved) to {action} now.")


def run_adapter_dir(run_dir: str | Path) -> Path:
    """The adapter folder of a finished or stopped run, with one clear sentence when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"The run folder {run_dir} does not exist: check the path (runs live in runs/<id>/).")
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE}): pick a folder under runs/.")
    if not has_adapter(run_dir):
        from .events import read_status

        status = read_status(run_dir).get("status", "unknown")
        raise UserError(f"Run {run_dir.name} has no saved adapter yet (status: {status}): wait until it "
                        f"finishes, or stop it, which saves the adapter.")
    return run_dir / ADAPTER_DIR


def with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    """The conversation with the settings' system prompt first (a system turn already there wins)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def as_messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_and_reference(example: dict) -> tuple[list[dict], str]:
    """Split a {"messages": [...]} example into the conversation before its last answer and that answer."""
    messages = list(example.get("messages") or [])
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        return messages, ""
    return messages[:last], messages[last].get("content", "")


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def perplexity(loss: float | None) -> float | None:
    if loss is None or math.isnan(loss):
        return None
    return math.exp(min(loss, 50.0))  # capped so a diverged run shows a huge number, not an overflow


class _StopOnEvent:
    """StoppingCriteria: ends generation (for the whole batch) once any of the events is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class AdapterRows:
    """Which rows of a batch the lean LoRA forward (streamline_lora) applies the adapter to. `mask` None: every row,
    as usual; a (rows, 1, 1) tensor of 1s and 0s in the model's dtype: the rows with 0 compute exactly the base
    model (base(x) + 0), so one batch holds the base model's rows beside the tuned model's. The report card writes
    both models' answers that way: on a CPU a decoding step costs mostly the reading of the weights, whatever the
    rows (bench/README.md, report_overhead.py)."""

    def __init__(self):
        self.mask = None
        self.mismatch = False  # a layer met an input whose rows it cannot tell apart (not (rows, tokens, features))

    @contextlib.contextmanager
    def only(self, mask):
        """The adapter on the rows where `mask` holds 1, for the block; on every row again after it."""
        self.mask, self.mismatch = mask, False
        try:
            yield self
        finally:
            self.mask = None


def streamline_lora(model, rows: AdapterRows | None = None) -> int:
    """Give each plain LoRA linear layer a lean inference forward; returns how many layers got one.

    peft's general forward costs about 10 small operations and several Python checks per layer and
    token; on a CPU that made the tuned column about 25% slower than merged weights (bench/chat.py).
    The lean forward does the same arithmetic in peft's order - base(x) + B(A(x)) * scaling, with
    dropout a no-op in eval mode - and still obeys peft's switch: inside `model.disable_adapter()` it
    returns exactly base(x), bit for bit. Anything unusual (DoRA and other variants, several adapters,
    quantised or non-Linear base layers, mixed dtypes, training mode, extra arguments) keeps peft's own
    forward, so this is only ever a faster path to the same numbers. `rows`: where the adapter applies to some
    rows of a batch only (AdapterRows).
    """
    import torch.nn.functional as F
    from torch import nn

    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]

    def plain(m) -> bool:
        try:
            return (type(m) is LoraLinear and type(m.base_layer) is nn.Linear and len(m.lora_A) == 1
                    and not m.lora_variant and not m.merged and not getattr(m, "fan_in_fan_out", False)
                    and m.lora_A[next(iter(m.lora_A))].weight.dtype == m.base_layer.weight.dtype)
        except AttributeError:  # a peft version with other internals: keep its forward
            return False

    if not layers or not all(plain(m) for m in layers):
        return 0
    for m in layers:
        name = next(iter(m.lora_A))
        general = m.forward

        def forward(x, *args, _m=m, _general=general, _W=m.base_layer.weight, _b=m.base_layer.bias,
                    _A=m.lora_A[name].weight, _B=m.lora_B[name].weight, _Bb=m.lora_B[name].bias,
                    _s=m.scaling[name], _rows=rows, **kwargs):
            if args or kwargs or _m.training or x.dtype != _W.dtype:
                return _general(x, *args, **kwargs)
            result = F.linear(x, _W, _b)  # what nn.Linear computes
            if _m.disable_adapters:
                return result
            delta = F.linear(F.linear(x, _A), _B, _Bb) * _s
            mask = None if _rows is None else _rows.mask
            if mask is None:
                return result + delta
            if x.dim() != 3 or x.shape[0] != mask.shape[0]:  # e.g. a mixture of experts' tokens: rows unknown here
                _rows.mismatch = True  # the caller writes this batch one model at a time instead
                return result + delta
            return result + delta * mask.to(delta.dtype)

        m.forward = forward
    return len(layers)


# --- the session --------------------------------------------------------------------------
class ChatSession:
    """A base model loaded once, with an optional LoRA adapter that each generation switches on or off."""

    def __init__(self, model_name: str, adapter_dir: str | Path | None = None, trust_remote_code: bool = False,
                 method: str | Method | None = None, lean_lora: bool = True, cpu_precision: str = "auto",
                 rows_at_once: int | None = None):
        """`method`: how to hold the base weights (methods.for_inference picks when it is None or "auto").
        `cpu_precision`: on a CPU, "fp32", "bf16" or "auto" (studio.precision measures which is faster).
        `rows_at_once`: how many rows a generation step computes together, the shape "auto" measures at: one for a
        chat (precision.DECODE_TOKENS), a batch's rows for the report card."""
        from . import models

        self.model_name = model_name
        self.run_dir: Path | None = None
        self.system_prompt = ""  # a run's RunConfig.system_prompt (for_run)
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None
        if self.adapter_dir is not None and not (self.adapter_dir / ADAPTER_CONFIG).is_file():
            raise UserError(f"{self.adapter_dir} holds no {ADAPTER_CONFIG}: pick the adapter folder of a "
                            f"finished run.")
        if method is None or method == methods.AUTO:
            method = methods.for_inference(None, models.cuda_available())
        self.method = methods.get(method)
        self.tokenizer = models.load_tokenizer(model_name, trust_remote_code)
        model = models.load_base_model(model_name, self.method, trust_remote_code)
        if self.adapter_dir is not None:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(self.adapter_dir), is_trainable=False)
            except Exception as err:  # a mismatched adapter is a problem the user can fix
                log.info("adapter load failed", exc_info=True)
                raise UserError(f"The adapter in {self.adapter_dir} does not fit the model {model_name} "
                                f"({type(err).__name__}): chat with the base model it was trained on.") from err
        model.eval()
        self.precision = None  # studio.precision.Precision on a CPU; on a GPU the method decides
        if not models.cuda_available():
            from . import precision

            # Measured at the shape of writing answers (one token per row at a time), not of training.
            self.precision = precision.choose(cpu_precision, shape=precision.model_shape(
                model.config, tokens=rows_at_once or precision.DECODE_TOKENS))
            log.info("chat on the CPU in %s: %s", self.precision.name, self.precision.reason)
            if self.precision.bf16:
                import torch

                model.to(torch.bfloat16)  # base and adapter alike: streamline_lora needs one dtype
        self.model = model
        self.adapter_rows = AdapterRows()  # the report card's batches of both models' rows (evaluate.py)
        self.lean_layers = streamline_lora(model, self.adapter_rows) \
            if self.adapter_dir is not None and lean_lora else 0
        self._lock = threading.Lock()  # the adapter switch is model-global: one generation at a time
        self._active: set[threading.Event] = set()
        self._active_guard = threading.Lock()

    @classmethod
    def for_run(cls, run_dir: str | Path, check_gpu: bool = True, rows_at_once: int | None = None) -> ChatSession:
        """Load the base model of a finished or stopped run with its adapter attached."""
        run_dir = Path(run_dir)
        adapter = run_adapter_dir(run_dir)
        config = RunConfig.load(run_dir / CONFIG_FILE)
        if check_gpu:
            ensure_gpu_free(run_dir.parent)
        from . import models

        cuda = models.cuda_available()
        trained = None
        if cuda:  # on a CPU the base is always fp32: the events need not be read
            from .events import read_events, replay

            trained = replay(read_events(run_dir)).start.get("method")
        method = methods.for_inference(trained if isinstance(trained, str) else None, cuda)
        session = cls(config.model, adapter, config.trust_remote_code, method=method,
                      cpu_precision=config.cpu_precision, rows_at_once=rows_at_once)
        session.run_dir = run_dir
        session.system_prompt = config.system_prompt
        return session

    @property
    def has_adapter(self) -> bool:
        return self.adapter_dir is not None

    # --- prompt ---------------------------------------------------------------------------
    def encode(self, messages: list[dict], settings: GenerationSettings):
        """Token ids of the conversation with the assistant's turn opened: shape (1, prompt_tokens)."""
        import torch

        # The run's own system prompt, as training put it in every example, unless the settings give another.
        messages = with_system_prompt(messages, settings.system_prompt or self.system_prompt)
        if not messages or messages[-1]["role"] != "user":
            raise UserError("The conversation must end with a user message: type a prompt first.")
        from . import data

        # Exactly the text training saw (the chat template, or data's plain fallback), assistant turn opened.
        text = data.render_chat(messages, self.tokenizer, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([list(ids)], dtype=torch.long, device=self.model.device)

    def generation_kwargs(self, settings: GenerationSettings) -> dict:
        """Everything model.generate needs besides the prompt: the settings, end-of-turn and padding ids."""
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        return {**settings.generate_kwargs(), "eos_token_id": sorted(eos) or None,
                "pad_token_id": self.tokenizer.pad_token_id}

    # --- generation -----------------------------------------------------------------------
    def stream(self, messages: list[dict] | str, settings: GenerationSettings | None = None,
               use_adapter: bool = True, stop_event: threading.Event | None = None) -> Iterator[str]:
        """Yield the growing answer as tokens arrive.

        Generation stops early when the iterator is closed, when `stop()` is called, or when the
        caller's own `stop_event` is set (the UI keeps one per browser session).
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        settings = settings or GenerationSettings()
        if use_adapter and not self.has_adapter:
            raise UserError("No fine-tuned adapter is loaded: pick a finished run to chat with the tuned model.")
        input_ids = self.encode(as_messages(messages), settings)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        outcome: dict = {}

        def work():
            import torch

            try:
                with self._lock:
                    if stop.is_set() or (stop_event is not None and stop_event.is_set()):
                        return
                    switch = self.model.disable_adapter() if self.has_adapter and not use_adapter \
                        else contextlib.nullcontext()
                    with switch, torch.inference_mode():
                        torch.manual_seed(settings.seed)
                        self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                            streamer=streamer,
                                            stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop, stop_event)]),
                                            **self.generation_kwargs(settings))
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = err
            finally:
                streamer.text_queue.put(streamer.stop_signal)  # a second end marker is harmless

        with self._active_guard:
            self._active.add(stop)
        thread = threading.Thread(target=work, name="studio-generate", daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                if piece:
                    text += piece
                    # An answer cut at max_new_tokens can end inside a multi-byte character, which decodes to
                    # U+FFFD; the rest of that character never comes, so the half is not shown.
                    yield text.rstrip("\ufffd")
        finally:
            stop.set()  # the caller went away (or we are done): let the worker finish at once
            thread.join()
            with self._active_guard:
                self._active.discard(stop)
        if "error" in outcome:
            raise _generation_error(outcome["error"]) from outcome["error"]
        if text == "":
            yield ""  # an empty answer (eos first) still yields once, so callers always get a value

    def generate(self, messages: list[dict] | str, settings: GenerationSettings | None = None,
                 use_adapter: bool = True, stop_event: threading.Event | None = None) -> str:
        text = ""
        for piece in self.stream(messages, settings, use_adapter, stop_event):
            text = piece
        return text

    def compare(self, messages: list[dict] | str, settings: GenerationSettings | None = None,
                tuned_settings: GenerationSettings | None = None,
                stop_event: threading.Event | None = None) -> tuple[str, str | None]:
        """(base answer, tuned answer) to the same conversation; tuned is None without an adapter."""
        base = self.generate(messages, settings, use_adapter=False, stop_event=stop_event)
        tuned = self.generate(messages, tuned_settings or settings, use_adapter=True, stop_event=stop_event) \
            if self.has_adapter else None
        return base, tuned

    def stop(self) -> None:
        """Stop every generation running on this session now (each returns what it has so far)."""
        with self._active_guard:
            for event in self._active:
                event.set()

    # --- batch comparison and loss --------------------------------------------------------
    def batch_compare(self, items: list[tuple[list[dict] | str, str]], settings: GenerationSettings | None = None,
                      tuned_settings: GenerationSettings | None = None, progress=None,
                      stop_event: threading.Event | None = None):
        """A table (prompt, reference, base, tuned) for each (conversation or prompt, reference answer)."""
        import pandas as pd

        rows = []
        for i, (prompt, reference) in enumerate(items):
            if stop_event is not None and stop_event.is_set():
                break
            if progress is not None:
                progress(i, len(items))
            messages = as_messages(prompt)
            base, tuned = self.compare(messages, settings, tuned_settings, stop_event)
            rows.append({"prompt": last_user_text(messages), "reference": reference or "", "base": base,
                         "tuned": tuned if tuned is not None else ""})
        return pd.DataFrame(rows, columns=BATCH_COLUMNS)

    def eval_loss(self, examples: list[dict], max_seq_length: int = 1024,
                  train_on_answers_only: bool = True) -> dict[str, float | None]:
        """Token-weighted mean loss over the examples' trained tokens: {"base": ..., "tuned": ...}."""
        import torch

        from . import data

        encoded = [data.encode_example(ex, self.tokenizer, max_seq_length, train_on_answers_only) for ex in examples]
        encoded = [e for e in encoded if sum(1 for label in e["labels"][1:] if label != -100) > 0]
        result: dict[str, float | None] = {"base": None, "tuned": None}
        if not encoded:
            return result
        for name, use_adapter in (("base", False), ("tuned", True)):
            if use_adapter and not self.has_adapter:
                continue
            total, count = 0.0, 0
            with self._lock:
                switch = self.model.disable_adapter() if self.has_adapter and not use_adapter \
                    else contextlib.nullcontext()
                with switch, torch.inference_mode():
                    for e in encoded:  # one at a time: no padding, exact per-token losses
                        ids = torch.tensor([e["input_ids"]], device=self.model.device)
                        labels = torch.tensor([e["labels"]], device=self.model.device)
                        n = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
                        loss = self.model(input_ids=ids, labels=labels).loss
                        total += float(loss) * n
                        count += n
            result[name] = total / count
        return result


def _generation_error(err: BaseException) -> Exception:
    if isinstance(err, UserError):
        return err
    text = str(err).lower()
    if "out of memory" in text:
        return UserError("The model ran out of memory while answering: lower max new tokens or shorten the "
                         "conversation (clear it).")
    return UserError(f"Generation failed ({type(err).__name__}: {err}); the server log has the details.")


def loss_table(losses: dict[str, float | None]):
    """Validation loss and perplexity of base vs tuned as a small DataFrame."""
    import pandas as pd

    rows = []
    for name, label in (("base", BASE_LABEL), ("tuned", TUNED_LABEL)):
        loss = losses.get(name)
        rows.append({"model": label, "loss": None if loss is None else round(loss, 4),
                     "perplexity": None if loss is None else round(perplexity(loss), 2)})
    return pd.DataFrame(rows, columns=["model", "loss", "perplexity"])


# --- prompts for the batch comparison ------------------------------------------------------
def validation_examples(run_dir: str | Path) -> list[dict]:
    """The run's held-out rows (the same split training used), as {"messages": [...]} examples."""
    from . import data

    config = RunConfig.load(Path(run_dir) / CONFIG_FILE)
    _, val = data.load_for_config(config)
    return list(val or [])


def training_examples(run_dir: str | Path) -> list[dict]:
    from . import data

    config = RunConfig.load(Path(run_dir) / CONFIG_FILE)
    train, _ = data.load_for_config(config)
    return list(train or [])


def read_prompt_list(path: str | Path) -> list[tuple[list[dict], str]]:
    """Prompts from an uploaded file: TXT = one prompt per line; any data file Studio reads = its rows."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as err:
            raise UserError(f"{path.name} could not be read ({err.strerror}): upload it again.") from None
        items = [(as_messages(line.strip()), "") for line in lines if line.strip()]
    else:
        from . import data

        items = [prompt_and_reference(ex) for ex in data.load_data(path).good_examples()]
        items = [(m, ref) for m, ref in items if m and m[-1].get("role") == "user"]
    if not items:
        raise UserError(f"{path.name} holds no prompts: put one prompt per line (TXT), or use a data file with "
                        f"prompt and answer columns.")
    return items


# --- CLI ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    defaults = GenerationSettings()
    parser = ArgumentParser(
        prog="python -m studio chat",
        description="Ask the base model and the fine-tuned model of a run the same prompt and print both answers. "
                    "Without a run, --model chats with a base model alone.")
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="a finished or stopped run folder, e.g. runs/20250101-120000-support")
    parser.add_argument("--model", default=None,
                        help=f"base model to chat with when no run is given (default: {BUNDLED_MODEL!r}); "
                             f"a hub id or a local folder also works")
    parser.add_argument("--prompt", required=True, help="the user message to send")
    parser.add_argument("--system", default=defaults.system_prompt, help="system prompt (default: none)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help=f"longest answer in tokens (default: {defaults.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=defaults.temperature,
                        help="sampling temperature; 0 = greedy, the same answer every time (default: 0)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p,
                        help=f"nucleus sampling: keep the smallest set of tokens whose probabilities add up to "
                             f"this, when temperature > 0 (default: {defaults.top_p})")
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty,
                        help=f"above 1 discourages repeating tokens (default: {defaults.repetition_penalty})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed for sampling, the same for both models (default: 0)")
    parser.add_argument("--runs-dir", default="runs",
                        help="runs folder checked for a training run holding the GPU when no run is given "
                             "(default: runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        if args.run_dir and args.model:
            raise UserError("Give either a run folder or --model, not both: a run already names its base model.")
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                      top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                                      system_prompt=args.system)
        if args.run_dir:
            session = ChatSession.for_run(args.run_dir)
        else:
            ensure_gpu_free(args.runs_dir)
            session = ChatSession(args.model or BUNDLED_MODEL)
        base, tuned = session.compare(args.prompt, settings)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    print(f"{BASE_LABEL}:\n{base.strip()}")
    if tuned is not None:
        print(f"\n{TUNED_LABEL}:\n{tuned.strip()}")
    return 0


def _quiet_libraries() -> None:
    """Library progress bars, advice and logged tracebacks would bury the answers: the CLI shows the answers
    and, on failure, one sentence (the UI server's log keeps the details)."""
    import os

    logging.getLogger("studio").addHandler(logging.NullHandler())  # no last-resort traceback on stderr

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes from the libraries

