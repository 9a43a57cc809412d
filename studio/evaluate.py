"""The report card of a run: better at your task, general knowledge kept, no parroting, and what to try next.

`python -m studio eval RUN_DIR` (and, at the end of a run, the worker) loads the run's base model with its adapter
once (studio.chat.ChatSession; "base" = adapter disabled) and writes RUN_DIR/report.json and a self-contained
RUN_DIR/report.html (inline SVG, no external assets) a person can send to a colleague:

1. task: up to 50 of the run's own held-out rows (the split training used, data.load_for_config), the base and the
   tuned model's greedy answers next to the reference, chrF (sacrebleu) per row and mean, validation loss and
   perplexity of both (as the run measured them, where it did: run_validation_losses), answers that loop or run far
   past the reference's length counted;
2. general: the probe set assets/probes/general.jsonl (facts, arithmetic, common sense, refusals) scored by both
   models: loss on the reference answers and answer accuracy; `forgetting` when the tuned model is clearly worse;
3. parroting: the share of training rows the tuned model reproduces (near) word for word, against the same share
   on held-out rows; `flag` when it learned rows by heart;
4. verdict: one paragraph with the numbers and the one change to try next.

Cost (on a 2-core CPU about a fifth of the run's training time the first time, a sixth with the base side cached;
the goal is a quarter, bench/report_overhead.py): everything but the task's
answers is measured by teacher forcing - one batched forward pass over prompt + reference, which gives the loss,
and at each answer token whether it is the model's own first choice - instead of generating. Generation, by far
the dearest part, is batched (left-padded, per-row length limits, both models' rows in one batch on a CPU) and
stops a row as soon as it is done or loops. The base
model's results depend only on the base model and the rows, so they are cached (models.cache_dir()/report-base)
and a second run on the same data only pays for the tuned side. Never imports gradio.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import BUNDLED_MODEL, PRESETS, RunConfig
from .errors import UserError
from .events import CONFIG_FILE, read_events, replay
from .logs import ArgumentParser, tell_user

log = logging.getLogger("studio.evaluate")

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
REPORT_VERSION = 1
PROBES_FILE = Path(__file__).resolve().parent.parent / "assets" / "probes" / "general.jsonl"

DEFAULT_MAX_ROWS = 50  # held-out rows answered by both models (and training rows checked for parroting)
MAX_NEW_TOKENS = 256  # no answer is generated past this, however long its reference
PROBE_ANSWER_TOKENS = 32  # the probe answers shown in the report are one short sentence
PROBES_SHOWN_PER_KIND = 3  # generated probe answers shown next to the scores, per kind
FORWARD_TOKENS = 4096  # tokens per teacher-forced batch (rows x longest row): about 0.8 GB of activations
# Rows per generation batch and model. On a CPU a decoding step costs a fixed part (reading the weights) plus a part
# per row, so fewer, larger batches pay; greedy_shrinking lets a finished row leave its batch. 64 holds the held-out
# rows (at most 50) and the shown probes' short answers together, and a batch of both models' rows twice that
# (both_in_one_batch): one pass (measured on the bundled model in bf16, 30 rows and 12 probes: base 19.5 s in
# batches of 32, 13.8 s in one of 64; tuned 22.9 and 17.5 s; before the prompt pass's fix in greedy_shrinking).
GENERATE_ROWS = 64
GPU_GENERATE_ROWS = 32  # as before on a GPU: a larger model's cache of 64 long rows may not fit beside it
SHRINKING_BATCH = True  # greedy answers drop finished rows from their batch (greedy_shrinking); the bench switches
BOTH_IN_ONE_BATCH = True  # the base and the tuned model's answers share batches on a CPU (both_in_one_batch)
# A row is a copy when the tuned model's own first choice is the training token at this share of its answer
# tokens: greedy decoding then reproduces it (near) word for word. Rows with fewer answer tokens cannot tell a
# copy from a short, obvious answer ("Yes.") and are not counted.
COPY_AGREEMENT = 0.9
MIN_COPY_TOKENS = 6
# Parroting: at least this share of training rows copied, and this many points more than held-out rows (a
# templated task copies held-out answers too: that is learning the template, not the rows).
PARROT_MIN_SHARE = 0.25
PARROT_MIN_GAP = 0.2
# Forgetting: answer accuracy on the probes down by this many points, or their loss up by this share.
FORGET_ACCURACY_DROP = 0.10
FORGET_LOSS_RISE = 0.20
FORGET_LOSS_RISE_NATS = 0.1  # ...and by at least this much: a fifth more of a loss near 0 is no forgetting
TASK_MIN_GAIN = 2.0  # chrF points: a smaller change is noise on 50 rows
PREFERENCE_MIN_SHARE = 2 / 3  # held-out pairs moved toward the chosen answer for a preference run to count as better
SHORT_RUN_EPOCHS = 1.5  # fewer passes over the data than this: "train longer" comes before other advice
LOOP_MIN_TOKENS = 12  # a repeated block must span at least this many tokens to be a loop...
LOOP_MIN_REPEATS = 3  # ...and come at least three times in a row
LOOP_MAX_PERIOD = 40  # tokens in the longest block looked for
BASE_CACHE_ENTRIES = 20_000  # cached base-model results (answers, scores) kept; the oldest go first
BASE_CACHE_DIR: Path | None = None  # None: models.cache_dir() / "report-base" (a benchmark starts from an empty one)

NEXT_STEPS = ("more_steps", "balanced", "lower_lr", "fewer_epochs", "more_data", "bigger_model", "none")
# The run history's "Try next" column: each next step in a few plain words (the verdict says it in full).
NEXT_STEP_WORDS = {"more_steps": "train longer", "balanced": "the Balanced preset",
                   "lower_lr": "a lower learning rate", "fewer_epochs": "fewer epochs",
                   "more_data": "more or cleaner data", "bigger_model": "a bigger model", "none": "-"}


# --- measuring ----------------------------------------------------------------------------
@dataclass
class TokenScores:
    """Teacher-forced scores of one example: per trained token, its loss and whether it is the model's top choice.

    `positions[k]` is the index in input_ids of the k-th trained token (the one predicted from the tokens before
    it); `nll[k]` its negative log-likelihood in nats, `hits[k]` whether argmax of the logits equals it."""

    positions: list[int] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.positions)

    @property
    def loss_sum(self) -> float:
        return sum(self.nll)

    @property
    def agreement(self) -> float:
        """Share of the answer's tokens the model would have picked itself (greedy), 0..1."""
        return sum(self.hits) / len(self.hits) if self.hits else 0.0

    def to_json(self) -> dict:
        return {"positions": self.positions, "nll": self.nll, "hits": self.hits}

    @classmethod
    def from_json(cls, data: dict) -> TokenScores:
        return cls(list(data["positions"]), [float(x) for x in data["nll"]], [bool(x) for x in data["hits"]])


@dataclass
class Answer:
    """One generated answer: its text, token ids (up to the end of turn), and how it ended."""

    text: str
    tokens: list[int]
    ended: bool  # the model closed its turn
    cut: bool  # still going at the row's length limit
    looping: bool  # ends in a block of tokens repeated over and over

    def to_json(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "ended": self.ended, "cut": self.cut,
                "looping": self.looping}

    @classmethod
    def from_json(cls, data: dict) -> Answer:
        return cls(data["text"], list(data["tokens"]), bool(data["ended"]), bool(data["cut"]),
                   bool(data["looping"]))


@contextlib.contextmanager
def adapter_state(session, use_adapter: bool):
    """The session's model with its adapter on or off, inference mode, the session's lock held: the switch is
    global to the model, exactly as ChatSession.stream does it."""
    import torch

    if use_adapter and not session.has_adapter:
        raise UserError("No fine-tuned adapter is loaded: evaluate a run that has finished or was stopped.")
    with session._lock:
        switch = session.model.disable_adapter() if session.has_adapter and not use_adapter \
            else contextlib.nullcontext()
        with switch, torch.inference_mode():
            yield session.model


def _forward_parameters(model) -> set[str]:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def token_scores(session, encoded: list[dict], use_adapter: bool) -> list[TokenScores]:
    """Teacher-forced TokenScores for each {"input_ids", "labels"} (data.encode_example), batched.

    Rows are sorted by length so a batch pads little, and right-padded (positions then count from 0 in every row,
    as unbatched). The tokens every row of a batch starts with (the chat template's header, a shared system
    prompt: half of a short probe) are run once and their keys and values shared by the rows. Logits are computed
    only where a label is trained (logits_to_keep): the vocabulary projection is the largest single matmul of a
    small model. Same numbers as one row at a time (tests/test_evaluate.py compares with ChatSession.eval_loss)."""
    results: list[TokenScores] = [TokenScores() for _ in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    batches, current = [], []
    for i in order:
        longest = len(encoded[i]["input_ids"])  # sorted: the newest row is the longest
        if current and (len(current) + 1) * longest > FORWARD_TOKENS:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    with adapter_state(session, use_adapter) as model:
        for batch in batches:
            for i, scores in zip(batch, _score_batch(session, model, [encoded[i] for i in batch])):
                results[i] = scores
    return results


def shared_prefix(rows: list[dict]) -> int:
    """Tokens all rows start with whose logits are not needed: before every row's first trained label, and
    leaving each row at least one token of its own."""
    first = rows[0]["input_ids"]
    limit = min(min(len(r["input_ids"]) - 1 for r in rows),
                min(next((j for j, label in enumerate(r["labels"]) if label != -100), len(r["labels"])) - 1
                    for r in rows))
    n = 0
    while n < limit and all(r["input_ids"][n] == first[n] for r in rows):
        n += 1
    return max(n, 0)


def _score_batch(session, model, rows: list[dict]) -> list[TokenScores]:
    import torch

    device = session.model.device
    pad = session.tokenizer.pad_token_id if session.tokenizer.pad_token_id is not None else 0
    prefix = shared_prefix(rows) if len(rows) > 1 else 0
    if prefix < 8:  # too short to pay for a cache
        prefix = 0
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for k, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[k, :n] = torch.tensor(r["input_ids"])
        labels[k, :n] = torch.tensor(r["labels"])
        mask[k, :n] = 1
    # Position t predicts token t + 1: its target is labels[t + 1]; the last position predicts nothing.
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    keep = targets != -100  # (rows, width); nothing before `prefix` (shared_prefix)
    kwargs: dict = {}
    accepted = _forward_parameters(model)
    if prefix:
        out = model(input_ids=ids[:1, :prefix].to(device), use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(len(rows))
        # transformers 5 names the argument `cache` (`past_key_values` still works, with a warning).
        kwargs = {"cache" if "cache" in accepted else "past_key_values": cache, "use_cache": True,
                  "position_ids": torch.arange(prefix, width, device=device).expand(len(rows), -1)}
    suffix_keep = keep[:, prefix:].to(device)
    if "logits_to_keep" in accepted:
        logits = model(input_ids=ids[:, prefix:].to(device), attention_mask=mask.to(device),
                       logits_to_keep=suffix_keep, **kwargs).logits  # (kept tokens, vocabulary)
    else:  # a model without logits_to_keep: every position, then the kept ones
        logits = model(input_ids=ids[:, prefix:].to(device), attention_mask=mask.to(device),
                       **kwargs).logits[suffix_keep]
    logits = logits.float()
    wanted = targets[keep].to(device)
    nll = torch.nn.functional.cross_entropy(logits, wanted, reduction="none").tolist()
    hits = (logits.argmax(-1) == wanted).tolist()
    out, start = [], 0
    for k in range(len(rows)):
        where = keep[k].nonzero().flatten().tolist()
        out.append(TokenScores([t + 1 for t in where], nll[start:start + len(where)], hits[start:start + len(where)]))
        start += len(where)
    return out


def repeats_at_end(tokens: list[int], min_tokens: int = LOOP_MIN_TOKENS, min_repeats: int = LOOP_MIN_REPEATS,
                   max_period: int = LOOP_MAX_PERIOD) -> bool:
    """Do the tokens end in one block (1 to max_period tokens) repeated at least min_repeats times in a row,
    spanning at least min_tokens? "Hi there! Hi there! Hi there! Hi there!" does; a list of numbered steps
    does not (the numbers differ)."""
    n = len(tokens)
    for period in range(1, max_period + 1):
        repeats = max(min_repeats, math.ceil(min_tokens / period))
        span = period * repeats
        if span > n:
            break
        tail = tokens[n - span:]
        if all(tail[k] == tail[k + period] for k in range(span - period)):
            return True
    return False


class _RowLimits:
    """StoppingCriteria for a left-padded batch: row r is done at limits[r] new tokens, when it closed its turn,
    or as soon as it loops (generating the rest of a loop would only cost time). Rows found looping are kept."""

    def __init__(self, prompt_width: int, limits: list[int], eos_ids: set[int]):
        self.prompt_width, self.limits, self.eos_ids = prompt_width, limits, eos_ids
        self.done = [False] * len(limits)
        self.looping = [False] * len(limits)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids.shape[1] - self.prompt_width
        for row in range(len(self.limits)):
            if self.done[row]:
                continue
            last = int(input_ids[row, -1])
            if last in self.eos_ids or new >= self.limits[row]:
                self.done[row] = True
            elif new >= LOOP_MIN_TOKENS and repeats_at_end(input_ids[row, self.prompt_width:].tolist()):
                self.done[row] = self.looping[row] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def greedy_shrinking(model, ids, mask, stops: _RowLimits, settings, switch=None) -> list[list[int]]:
    """Greedy decoding of a left-padded batch, as model.generate(do_sample=False) with the same repetition penalty
    computes it, but a row that is done (`stops`: its limit, its end of turn, a loop) leaves the batch at once, its
    rows of the KV cache with it: with generate() it is computed until the longest answer of its batch ends.
    `switch`: a batch of both models' rows (chat.AdapterRows, its mask set for the batch): a leaving row's mask row
    leaves with it. Returns each row's new tokens."""
    import torch
    from transformers import DynamicCache, RepetitionPenaltyLogitsProcessor

    penalty = (RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)
               if settings.repetition_penalty != 1.0 else None)
    cache = DynamicCache()
    parameters = _forward_parameters(model)
    # transformers 5 names the argument `cache` (`past_key_values` still works, with a warning).
    cache_arg = "cache" if "cache" in parameters else "past_key_values"
    active = list(range(ids.shape[0]))  # the batch rows still generating, in the order of the tensors below
    sequences, new_tokens = ids, [[] for _ in active]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() derives them: padding takes no position
    # Only the last position's logits: the vocabulary projection of every prompt token is the largest product of a
    # small model, and for 64 rows of a large vocabulary, gigabytes. The position is given as a tensor, not as the
    # count 1: transformers then slices the hidden states with a slice, a strided view of a batch of several rows,
    # which torch's linear on a CPU multiplies by copying the vocabulary's weights once per row (42 rows of the
    # bundled model: 4 s, against 0.015 s for the same product of a gathered, contiguous copy).
    keep = {"logits_to_keep": torch.tensor([ids.shape[1] - 1], device=ids.device)} \
        if "logits_to_keep" in parameters else {}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   **{cache_arg: cache}, **keep).logits[:, -1, :]
    while True:
        scores = penalty(sequences, logits.float()) if penalty is not None else logits
        chosen = scores.argmax(-1)
        sequences = torch.cat([sequences, chosen[:, None]], dim=1)
        for j, row in enumerate(active):
            new_tokens[row].append(int(chosen[j]))
        # _RowLimits reads the last column of the full batch: give it one row per batch row, done rows padded.
        full = torch.full((len(stops.limits), sequences.shape[1]), -1, dtype=sequences.dtype)
        full[active] = sequences.cpu()
        done = stops(full, None)
        keep = [j for j, row in enumerate(active) if not done[row]]
        if not keep:
            return new_tokens
        if len(keep) < len(active):
            index = torch.tensor(keep, device=sequences.device)
            cache.batch_select_indices(index)
            sequences, mask, chosen = sequences[index], mask[index], chosen[index]
            active = [active[j] for j in keep]
            if switch is not None:
                switch.mask = switch.mask[index]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        position = mask.sum(-1, keepdim=True) - 1
        logits = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                       **{cache_arg: cache}).logits[:, -1, :]


def generate_answers(session, conversations: list[list[dict]], limits: list[int], use_adapter: bool | list[bool],
                     settings=None) -> list[Answer]:
    """Greedy answers (the Chat tab's default settings) to each conversation, batched, each cut at its limit.
    `use_adapter`: for all conversations, or one per conversation: the base and the tuned model's rows then share
    batches on a CPU (both_in_one_batch), or are written one model after the other."""
    import torch
    from transformers import StoppingCriteriaList

    from .chat import GenerationSettings

    settings = settings or GenerationSettings()
    sides = [use_adapter] * len(conversations) if isinstance(use_adapter, bool) else list(use_adapter)
    mixed = len(set(sides)) > 1
    if mixed and not both_in_one_batch(session, settings):
        return _each_model_apart(session, conversations, limits, sides, settings)
    prompts = [session.encode(messages, settings)[0].tolist() for messages in conversations]
    kwargs = session.generation_kwargs(settings)
    eos_ids = set(kwargs.get("eos_token_id") or [])
    pad = kwargs.get("pad_token_id")
    pad = pad if pad is not None else (min(eos_ids) if eos_ids else 0)
    device = session.model.device
    answers = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (limits[i], len(prompts[i])))
    size = (GENERATE_ROWS if device.type == "cpu" else GPU_GENERATE_ROWS) * (2 if mixed else 1)
    for b in range(0, len(order), size):
        batch = order[b:b + size]
        width = max(len(prompts[i]) for i in batch)
        # Left padding: every row's next token goes in the same column; generate() derives the positions from
        # the attention mask, so a padded row computes what it would alone.
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        stops = _RowLimits(width, [limits[i] for i in batch], eos_ids)
        with adapter_state(session, mixed or sides[0]) as model:
            torch.manual_seed(settings.seed)
            if mixed:
                tuned_rows = torch.tensor([[[float(sides[i])]] for i in batch],  # (rows, 1, 1)
                                          dtype=model.get_input_embeddings().weight.dtype, device=device)
                with session.adapter_rows.only(tuned_rows):
                    generated = greedy_shrinking(model, ids.to(device), mask.to(device), stops, settings,
                                                 switch=session.adapter_rows)
            elif settings.temperature == 0 and SHRINKING_BATCH:
                generated = greedy_shrinking(model, ids.to(device), mask.to(device), stops, settings)
            else:
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     stopping_criteria=StoppingCriteriaList([stops]),
                                     **{**kwargs, "max_new_tokens": max(limits[i] for i in batch)})
                generated = [out[row, width:].tolist() for row in range(len(batch))]
        if mixed and session.adapter_rows.mismatch:  # a layer could not keep the models' rows apart: redo, apart
            # (after adapter_state has let go of the session's lock, which the passes apart take again)
            log.info("report answers: this model's rows cannot share a batch; one model at a time")
            return _each_model_apart(session, conversations, limits, sides, settings)
        for row, i in enumerate(batch):
            new = generated[row]
            # An end of turn counts only within the limit: generate() fills a row it stopped at its limit with
            # the pad token, which is the end-of-turn token for many tokenizers, and the row was cut, not ended.
            end = next((k for k, t in enumerate(new[:limits[i]]) if t in eos_ids), None)
            tokens = new if end is None else new[:end]
            tokens = tokens[:limits[i]]
            looping = stops.looping[row] or repeats_at_end(tokens)
            text = session.tokenizer.decode(tokens, skip_special_tokens=True).strip().rstrip("\ufffd")
            answers[i] = Answer(text, tokens, ended=end is not None, cut=end is None and not looping,
                                looping=looping)
    return answers


def _each_model_apart(session, conversations: list[list[dict]], limits: list[int], sides: list[bool],
                      settings) -> list[Answer]:
    """generate_answers of rows of both models, one model's rows after the other's."""
    answers: list[Answer | None] = [None] * len(conversations)
    for side in (False, True):
        mine = [i for i, s in enumerate(sides) if s == side]
        for i, answer in zip(mine, generate_answers(session, [conversations[i] for i in mine],
                                                    [limits[i] for i in mine], side, settings)):
            answers[i] = answer
    return answers


def both_in_one_batch(session, settings) -> bool:
    """Can the base and the tuned model's rows share a batch? Where the lean LoRA forward (chat.streamline_lora)
    serves the adapter, greedy, on a CPU: a decoding step there costs mostly the reading of the weights, so one
    step of twice the rows costs far less than two steps (the bundled model: 42 rows took 9.3 s, 84 rows 15.0 s).
    A GPU keeps a model per pass, as before."""
    return (BOTH_IN_ONE_BATCH and session.model.device.type == "cpu" and settings.temperature == 0
            and SHRINKING_BATCH and _all_lora_layers_lean(session))


def _all_lora_layers_lean(session) -> bool:
    """Does the lean forward (which obeys chat.AdapterRows) serve every LoRA layer? An adapter on the embeddings,
    say, keeps peft's own forward, which would apply it to the base model's rows too."""
    try:
        from peft.tuners.lora.layer import LoraLayer
    except ImportError:
        return False
    lora_layers = sum(isinstance(m, LoraLayer) for m in session.model.modules())
    return bool(lora_layers) and lora_layers == getattr(session, "lean_layers", 0)


def chrf(hypothesis: str, reference: str) -> float:
    """chrF (sacrebleu's defaults: character 6-grams, beta 2) of one answer against its reference, 0..100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)


def answer_limit(reference_tokens: int, max_seq_length: int = MAX_NEW_TOKENS) -> int:
    """Tokens an answer may take before it counts as running on: half as long again as the reference, and at
    least 16 more (short references), never past MAX_NEW_TOKENS or the run's max_seq_length."""
    return max(1, min(MAX_NEW_TOKENS, max_seq_length, reference_tokens + max(16, reference_tokens // 2)))


# --- the base model's results, cached -------------------------------------------------------
class BaseCache:
    """The base model's answers and scores by their inputs: a run on the same data and base model only computes
    the tuned side. One JSON file per base model (its name, how its weights are held, the files it was loaded
    from), written to a temporary file and renamed; a damaged or unwritable cache costs time, never the report."""

    def __init__(self, session, enabled: bool = True):
        self.enabled = enabled
        self.path: Path | None = None
        self.items: dict[str, dict] = {}
        self.dirty = False
        if not enabled:
            return
        try:
            from . import models

            folder = BASE_CACHE_DIR or models.cache_dir() / "report-base"
            self.path = folder / f"{self._model_key(session)}.json"
            if self.path.is_file():
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self.items = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, UserError) as err:
            log.info("report cache not used: %s", err)
            self.path, self.items = None, {}

    @staticmethod
    def _model_key(session) -> str:
        from . import models

        source = models.resolve_model_source(session.model_name)
        files = []
        folder = Path(source)
        if folder.is_dir():  # a local folder may be replaced: its files' sizes and times are part of the key
            for p in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
                info = p.stat()
                files.append([p.name, info.st_size, info.st_mtime_ns])
        template = str(getattr(session.tokenizer, "chat_template", "") or "")
        precision = getattr(session.precision, "name", None)  # bf16 and fp32 answers may part after some tokens
        parts = [REPORT_VERSION, session.model_name, source, files, str(session.method), template, precision]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]

    @staticmethod
    def key(kind: str, *inputs) -> str:
        return hashlib.sha256(json.dumps([kind, *inputs], default=str).encode()).hexdigest()[:32]

    def get(self, key: str):
        return self.items.get(key) if self.enabled else None

    def put(self, key: str, value) -> None:
        if self.enabled:
            self.items.pop(key, None)  # re-inserted last: the most recently used are kept
            self.items[key] = value
            self.dirty = True

    def save(self) -> None:
        if not (self.enabled and self.dirty and self.path is not None):
            return
        items = dict(list(self.items.items())[-BASE_CACHE_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(items, f)
            os.replace(tmp, self.path)
        except OSError as err:
            log.info("report cache not written: %s", err)


def cached_scores(session, cache: BaseCache, encoded: list[dict], use_adapter: bool) -> list[TokenScores]:
    """token_scores, the base side (use_adapter False) from the cache where it has them."""
    if use_adapter:
        return token_scores(session, encoded, True)
    keys = [cache.key("scores", e["input_ids"], e["labels"]) for e in encoded]
    found = {i: cache.get(k) for i, k in enumerate(keys)}
    missing = [i for i, v in found.items() if v is None]
    fresh = token_scores(session, [encoded[i] for i in missing], False) if missing else []
    for i, scores in zip(missing, fresh):
        cache.put(keys[i], scores.to_json())
        found[i] = scores.to_json()
    return [TokenScores.from_json(found[i]) for i in range(len(encoded))]


def answers_of_both(session, cache: BaseCache, conversations: list[list[dict]],
                    limits: list[int]) -> tuple[list[Answer], list[Answer]]:
    """(base, tuned): each model's generate_answers, the base side from the cache where it has them, the rest
    written in one pass (generate_answers' batches of both models' rows)."""
    from .chat import GenerationSettings

    settings = GenerationSettings()
    keys = [cache.key("answer", m, n, settings.generate_kwargs()) for m, n in zip(conversations, limits)]
    found = {i: cache.get(k) for i, k in enumerate(keys)}
    missing = [i for i, v in found.items() if v is None]
    everything = generate_answers(session, [conversations[i] for i in missing] + conversations,
                                  [limits[i] for i in missing] + limits,
                                  [False] * len(missing) + [True] * len(conversations), settings)
    for i, answer in zip(missing, everything):
        cache.put(keys[i], answer.to_json())
        found[i] = answer.to_json()
    return [Answer.from_json(found[i]) for i in range(len(conversations))], everything[len(missing):]


# --- the four sections ----------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _token_mean_loss(scores: list[TokenScores]) -> float | None:
    tokens = sum(s.tokens for s in scores)
    return sum(s.loss_sum for s in scores) / tokens if tokens else None


def _loss_pair(base: list[TokenScores], tuned: list[TokenScores]) -> dict:
    return _losses(_token_mean_loss(base), _token_mean_loss(tuned))


def _losses(base: float | None, tuned: float | None) -> dict:
    """Both models' loss and its perplexity, as the report's sections hold them."""
    from .chat import perplexity

    loss = {"base": base, "tuned": tuned}
    return {"loss": loss, "perplexity": {k: perplexity(v) for k, v in loss.items()}}


def _prompt_of(example: dict) -> tuple[list[dict], str]:
    """(the conversation up to its last answer, that answer); ([], "") for plain text or a row without a prompt."""
    from .chat import prompt_and_reference

    if "messages" not in example:
        return [], ""
    messages, reference = prompt_and_reference(example)
    if not messages or messages[-1].get("role") != "user" or not reference.strip():
        return [], ""
    return messages, reference


def task_rows(session, config: RunConfig, val: list[dict]) -> tuple[list[tuple], list[int]]:
    """The held-out rows that have a prompt, as (example, conversation, reference), and each one's length limit."""
    rows = [(ex, *_prompt_of(ex)) for ex in val]
    rows = [(ex, m, ref) for ex, m, ref in rows if m]
    limits = [answer_limit(len(session.tokenizer(ref, add_special_tokens=False)["input_ids"]), config.max_seq_length)
              for _, _, ref in rows]
    return rows, limits


def run_validation_losses(run_dir: Path, config: RunConfig, adapter_step: int | None = None) -> dict | None:
    """The validation loss of both models as the run itself measured it, on all its held-out rows: before training
    (step 0: the base model) and at the step whose adapter was kept. The report then gives the figures the live plot
    and the Train tab give, and need not measure the base model's loss again (3 to 4 s of a 40 s report of the
    bundled model). None where the run's figures are not those: a preference run (its evaluations measure DPO's or
    ORPO's loss), a next version (its step 0 is its parent's adapter, not the base model), a run without both.
    `adapter_step`: the kept adapter's step, where the run's "end" event is not written yet (the worker's report)."""
    if config.parent_run:
        return None
    try:
        history = replay(read_events(run_dir))
    except OSError:
        return None
    if history.start.get("objective") != "sft":
        return None
    losses = dict(zip(history.eval_steps, history.eval_loss))
    step = adapter_step if adapter_step is not None else history.end.get("adapter_step", history.end.get("step"))
    if 0 not in losses or not isinstance(step, int) or step == 0 or step not in losses:
        return None
    return {**_losses(losses[0], losses[step]), "loss_steps": [0, step]}


def task_section(rows: list[tuple], limits: list[int], losses: dict, base: list[Answer],
                 tuned: list[Answer]) -> dict:
    """`rows`, `limits`: task_rows; `losses`: the validation loss of both models, its perplexity and the rows it
    covers (run_validation_losses or _loss_pair); `base`, `tuned`: each model's answer to each row."""
    from .chat import last_user_text

    section = {"rows": len(rows), "metric": "chrF", **losses, "examples": []}
    if not rows:
        section.update(chrf={"base": None, "tuned": None}, cut={"base": 0, "tuned": 0},
                       looping={"base": 0, "tuned": 0}, max_new_tokens=0)
        return section
    for (_, messages, reference), limit, b, t in zip(rows, limits, base, tuned):
        section["examples"].append({
            "prompt": last_user_text(messages), "reference": reference, "limit": limit,
            "base": b.text, "tuned": t.text,
            "chrf_base": chrf(b.text, reference), "chrf_tuned": chrf(t.text, reference),
            "base_cut": b.cut, "base_looping": b.looping, "tuned_cut": t.cut, "tuned_looping": t.looping})
    examples = section["examples"]
    section["chrf"] = {side: _mean([e[f"chrf_{side}"] for e in examples]) for side in ("base", "tuned")}
    section["cut"] = {side: sum(e[f"{side}_cut"] for e in examples) for side in ("base", "tuned")}
    section["looping"] = {side: sum(e[f"{side}_looping"] for e in examples) for side in ("base", "tuned")}
    section["max_new_tokens"] = max(limits)
    return section


def load_probes(path: Path | None = None) -> list[dict]:
    """The general-knowledge probes (PROBES_FILE): {"id", "kind", "question", "answer", "key"} per line."""
    probes = []
    for line in Path(path or PROBES_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            probe = json.loads(line)
            if probe["key"] not in probe["answer"]:
                raise ValueError(f"probe {probe['id']}: its key {probe['key']!r} is not in its answer")
            probes.append(probe)
    return probes


def _probe_example(probe: dict) -> dict:
    return {"messages": [{"role": "user", "content": probe["question"]},
                         {"role": "assistant", "content": probe["answer"]}]}


def key_positions(tokenizer, ids: list[int], trained: list[int], key: str) -> list[int] | None:
    """Where in ids (among the trained positions) the key's tokens are: the last place its tokens (with or
    without a leading space, as the tokenizer joins it to the word before) appear in a row; None if nowhere."""
    trained_set = set(trained)
    best = None
    for variant in (key, " " + key):
        needle = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if not needle:
            continue
        for start in range(len(ids) - len(needle), -1, -1):
            if ids[start:start + len(needle)] == needle and all(p in trained_set for p in
                                                                  range(start, start + len(needle))):
                if best is None or start > best[0]:
                    best = (start, len(needle))
                break
    return None if best is None else list(range(best[0], best[0] + best[1]))


def shown_probes(probes: list[dict]) -> list[dict]:
    """The probes whose generated answers the report shows, so a person sees what the numbers mean: the first
    PROBES_SHOWN_PER_KIND of each kind."""
    kinds = dict.fromkeys(p["kind"] for p in probes)
    return [p for kind in kinds for p in [q for q in probes if q["kind"] == kind][:PROBES_SHOWN_PER_KIND]]


def probe_conversations(probes: list[dict]) -> list[list[dict]]:
    return [[{"role": "user", "content": p["question"]}] for p in probes]


def general_section(session, cache: BaseCache, probes: list[dict], shown_base: list[Answer],
                    shown_tuned: list[Answer]) -> dict:
    """Loss on the probes' reference answers and answer accuracy: a probe counts as known when every token of
    its key (the word that makes the answer right: "Paris", "56", "I'm sorry") is the model's own first choice
    after the reference's lead-in ("The capital of France is"). `shown_base`, `shown_tuned`: each model's answers
    to shown_probes(probes), shown beside the scores."""
    from . import data

    encoded = [data.encode_example(_probe_example(p), session.tokenizer, 256) for p in probes]
    base = cached_scores(session, cache, encoded, use_adapter=False)
    tuned = cached_scores(session, cache, encoded, use_adapter=True)
    rows = []
    for probe, enc, b, t in zip(probes, encoded, base, tuned):
        where = key_positions(session.tokenizer, enc["input_ids"], b.positions, probe["key"])
        row = {"id": probe["id"], "kind": probe["kind"], "question": probe["question"], "answer": probe["answer"],
               "loss_base": b.loss_sum / max(b.tokens, 1), "loss_tuned": t.loss_sum / max(t.tokens, 1)}
        if where is not None:
            index_b, index_t = dict(zip(b.positions, b.hits)), dict(zip(t.positions, t.hits))
            row["known_base"] = all(index_b[p] for p in where)
            row["known_tuned"] = all(index_t[p] for p in where)
        rows.append(row)
    scored = [r for r in rows if "known_base" in r]
    section = {"probes": len(probes), "scored": len(scored), **_loss_pair(base, tuned),
               "accuracy": {side: _mean([float(r[f"known_{side}"]) for r in scored]) for side in ("base", "tuned")},
               "by_kind": {}}
    for kind in dict.fromkeys(p["kind"] for p in probes):
        mine = [r for r in scored if r["kind"] == kind]
        section["by_kind"][kind] = {"probes": len(mine), **{
            side: _mean([float(r[f"known_{side}"]) for r in mine]) for side in ("base", "tuned")}}
    acc, loss = section["accuracy"], section["loss"]
    drop = (acc["base"] - acc["tuned"]) if acc["base"] is not None and acc["tuned"] is not None else 0.0
    rise = (loss["tuned"] / loss["base"] - 1.0) if loss["base"] and loss["tuned"] is not None else 0.0
    rise_nats = (loss["tuned"] - loss["base"]) if loss["base"] is not None and loss["tuned"] is not None else 0.0
    section["accuracy_change"] = -drop  # points, as a share: -0.05 = five points fewer probes known
    section["loss_change"] = rise  # relative: 0.2 = a fifth higher
    section["forgetting"] = bool(drop >= FORGET_ACCURACY_DROP
                                 or (rise >= FORGET_LOSS_RISE and rise_nats >= FORGET_LOSS_RISE_NATS))
    by_id = {r["id"]: r for r in rows}
    section["examples"] = [{**by_id[p["id"]], "base": b.text, "tuned": t.text}
                           for p, b, t in zip(shown_probes(probes), shown_base, shown_tuned)]
    section["rows"] = rows
    return section


def preference_section(session, cache: BaseCache, pairs: list[dict], chosen_base: list[TokenScores],
                       chosen_tuned: list[TokenScores], encode) -> dict:
    """For held-out preference pairs (data.examples.Preference as dicts), two counts:
    - `toward_chosen`: pairs where fine-tuning raised the chosen answer's likelihood more than the rejected one's
      (summed over the answer's tokens, against the base model): DPO's reward accuracy, on pairs it never saw;
    - `prefers_chosen`: per model, pairs where the chosen answer is the likelier one per token (fair to answers of
      different lengths).
    `chosen_*`: the pairs' validation scores (the chosen answer is the row's last turn); the rejected answers are
    scored here, in the same conversation."""
    from .data import as_example

    rejected = [encode(as_example(pair).rejected_chat()) for pair in pairs]
    rejected_base = cached_scores(session, cache, rejected, use_adapter=False)
    rejected_tuned = token_scores(session, rejected, True)

    def likelier(chosen: TokenScores, other: TokenScores) -> bool:
        return chosen.loss_sum / max(chosen.tokens, 1) < other.loss_sum / max(other.tokens, 1)

    toward = sum((cb.loss_sum - ct.loss_sum) > (rb.loss_sum - rt.loss_sum)
                 for cb, ct, rb, rt in zip(chosen_base, chosen_tuned, rejected_base, rejected_tuned))
    prefers = {"base": sum(map(likelier, chosen_base, rejected_base)),
               "tuned": sum(map(likelier, chosen_tuned, rejected_tuned))}
    return {"pairs": len(pairs), "toward_chosen": toward, "prefers_chosen": prefers}


def _copies(scores: list[TokenScores]) -> tuple[int, int]:
    """(rows copied, rows counted): rows with at least MIN_COPY_TOKENS answer tokens, copied at COPY_AGREEMENT."""
    counted = [s for s in scores if s.tokens >= MIN_COPY_TOKENS]
    return sum(s.agreement >= COPY_AGREEMENT for s in counted), len(counted)


def parroting_section(session, train_rows: list[dict], train_scores: list[TokenScores],
                      val_scores: list[TokenScores]) -> dict:
    copied_train, counted_train = _copies(train_scores)
    copied_val, counted_val = _copies(val_scores)
    share_train = copied_train / counted_train if counted_train else None
    share_val = copied_val / counted_val if counted_val else None
    # Without held-out rows there is nothing to tell learning the rows from learning the task: no flag.
    flag = (share_train is not None and share_val is not None and share_train >= PARROT_MIN_SHARE
            and share_train - share_val >= PARROT_MIN_GAP)
    section = {"agreement_threshold": COPY_AGREEMENT,
               "train": {"rows": counted_train, "copied": copied_train, "share": share_train,
                         "mean_agreement": _mean([s.agreement for s in train_scores if s.tokens >= MIN_COPY_TOKENS])},
               "heldout": {"rows": counted_val, "copied": copied_val, "share": share_val,
                           "mean_agreement": _mean([s.agreement for s in val_scores if s.tokens >= MIN_COPY_TOKENS])},
               "flag": bool(flag), "examples": []}
    if flag:  # the evidence: what the tuned model says to the training prompts it copies most
        ranked = sorted(range(len(train_rows)), key=lambda i: -train_scores[i].agreement)
        picked, seen = [], set()
        for i in ranked:
            messages, reference = _prompt_of(train_rows[i])
            key = json.dumps(messages)
            if messages and key not in seen:  # a row repeated in the data is shown once
                seen.add(key)
                picked.append((i, messages, reference))
            if len(picked) == 3:
                break
        if picked:
            limits = [answer_limit(len(session.tokenizer(ref, add_special_tokens=False)["input_ids"])) for _, _, ref in
                      picked]
            answers = generate_answers(session, [m for _, m, _ in picked], limits, use_adapter=True)
            from .chat import last_user_text

            section["examples"] = [{"prompt": last_user_text(m), "training_answer": ref, "tuned": a.text,
                                    "agreement": train_scores[i].agreement, "chrf": chrf(a.text, ref)}
                                   for (i, m, ref), a in zip(picked, answers)]
    return section


# --- verdict ----------------------------------------------------------------------------
def _run_facts(run_dir: Path, config: RunConfig, n_train: int) -> dict:
    """Steps trained and passes over the data, from the run's events (0 when they cannot be read)."""
    try:
        history = replay(read_events(run_dir))
    except OSError:
        history = None
    steps = 0
    if history is not None:
        steps = int(history.end.get("step") or (history.train_steps[-1] if history.train_steps else 0))
    epochs = steps * config.batch_size * config.gradient_accumulation / n_train if n_train else 0.0
    quick = PRESETS.get("Quick test", {})
    is_quick = bool(quick) and all(getattr(config, k, None) == v for k, v in quick.items() if k != "eval_every")
    return {"steps": steps, "epochs_done": epochs, "quick_test": is_quick,
            "curve": {"train_steps": history.train_steps, "train_loss": history.train_loss,
                      "eval_steps": history.eval_steps, "eval_loss": history.eval_loss} if history else {}}


def next_step(report: dict, config: RunConfig, facts: dict) -> tuple[str, str]:
    """(key, sentence) of the one change to try next, from what the report found, most urgent first."""
    task, general, parroting = report["task"], report["general"], report["parroting"]
    epochs = facts["epochs_done"]
    lr = config.learning_rate
    longer = ("balanced", "Try next: the Balanced preset, which makes two full passes over your data instead of a "
                          "short test.") if facts["quick_test"] else \
        ("more_steps", f"Try next: more steps (two or three epochs); the model saw each row about {epochs:.1f} "
                       f"times, too few to learn your task.")
    if parroting["flag"]:
        if epochs > 1.5:
            return "fewer_epochs", (f"Try next: fewer epochs (about {max(1, math.floor(epochs / 2))} instead of "
                                    f"{epochs:.1f}), so it stops before learning your rows by heart.")
        return "more_data", ("Try next: more or more varied data; with this few rows it learns them by heart "
                             "within one pass.")
    if general["forgetting"]:
        return "lower_lr", (f"Try next: a lower learning rate ({lr / 2:g} instead of {lr:g}), so training changes "
                            f"the model more gently and it keeps what it knew.")
    loss = task["loss"]
    if loss["base"] is not None and loss["tuned"] is not None and loss["tuned"] > loss["base"] * 1.02:
        return "lower_lr", (f"Try next: a lower learning rate ({lr / 2:g} instead of {lr:g}): the validation loss "
                            f"rose, so the steps were too large for your data.")
    gain = _chrf_gain(task)
    rows = max(task["rows"], 1)
    bad_tuned = task["cut"]["tuned"] + task["looping"]["tuned"]
    bad_base = task["cut"]["base"] + task["looping"]["base"]
    # A preference run that moved the held-out pairs toward the chosen answers did its job, however little the
    # wording of its answers moved toward the references.
    close_enough = (gain is not None and gain >= TASK_MIN_GAIN) or _moved_toward_chosen(report)
    if (gain is not None and not close_enough) or (bad_tuned / rows >= 0.2 and bad_tuned > bad_base):
        if epochs < SHORT_RUN_EPOCHS:
            return longer
        fell = loss["base"] and loss["tuned"] is not None and loss["tuned"] < 0.95 * loss["base"]
        if fell:
            return "more_data", ("Try next: more or cleaner data: the model fits your examples better, but its "
                                 "answers are not closer to yours; check that answers are consistent and complete.")
        return "bigger_model", ("Try next: a bigger model: this one does not get closer to your answers with more "
                                "training.")
    if epochs < SHORT_RUN_EPOCHS:
        return longer
    if config.model == BUNDLED_MODEL:
        return "bigger_model", ("To do better still: a bigger model (the bundled one has 135 million parameters; "
                                "Qwen2.5-0.5B-Instruct is four times larger).")
    return "more_data", "To do better still: more examples of the answers you want."


def _moved_toward_chosen(report: dict) -> bool:
    """A preference run's held-out pairs: a clear majority moved toward the chosen answer, which the tuned model
    then finds the likelier one more often than the base model does, and its answers did not move clearly away from
    the references (that would be worse at the task, whatever the pairs say)."""
    preference = report.get("preference")
    if not preference or not preference["pairs"]:
        return False
    prefers = preference["prefers_chosen"]
    gain = _chrf_gain(report["task"])
    return (preference["toward_chosen"] / preference["pairs"] >= PREFERENCE_MIN_SHARE
            and prefers["tuned"] > prefers["base"] and (gain is None or gain > -TASK_MIN_GAIN))


def _chrf_gain(task: dict) -> float | None:
    base, tuned = task["chrf"]["base"], task["chrf"]["tuned"]
    return None if base is None or tuned is None else tuned - base


def _signed(x: float) -> str:
    """+3, -2, and 0 for anything that rounds to zero (never "-0")."""
    return f"{round(x) or 0:+d}" if round(x) else "0"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def verdict(report: dict, config: RunConfig, facts: dict) -> dict:
    """One paragraph in plain words with the numbers behind it, and the one change to try next."""
    task, general, parroting = report["task"], report["general"], report["parroting"]
    parts = []
    gain = _chrf_gain(task)
    loss = task["loss"]
    loss_text = (f"validation loss {loss['base']:.2f} \u2192 {loss['tuned']:.2f}"
                 if loss["base"] is not None and loss["tuned"] is not None else "")
    better = False
    if gain is not None:
        base, tuned = task["chrf"]["base"], task["chrf"]["tuned"]
        relative = f" ({(tuned - base) / base * 100:+.0f}% closer to your answers)" if base > 0 else ""
        numbers = f"chrF {base:.0f} \u2192 {tuned:.0f} on {task['rows']} held-out rows" + \
            (f", {loss_text}" if loss_text else "")
        if gain >= TASK_MIN_GAIN:
            better = True
            parts.append(f"Better at your task{relative}: {numbers}")
        elif gain <= -TASK_MIN_GAIN:
            parts.append(f"Worse at your task: its answers are further from yours than the base model's ({numbers})")
        else:
            parts.append(f"About as close to your answers as the base model ({numbers})")
        bad = task["cut"]["tuned"] + task["looping"]["tuned"]
        if bad:
            parts.append(f"{bad} of {task['rows']} tuned answers looped or ran far past the reference's length "
                         f"(base: {task['cut']['base'] + task['looping']['base']})")
    elif loss_text:
        better = loss["tuned"] < loss["base"]
        parts.append(f"{'Better' if better else 'Not better'} at your task: {loss_text}")
    else:
        parts.append("No held-out rows to measure your task on (set a validation share above 0)")
    preference = report.get("preference")
    if preference and preference["pairs"]:
        # What preference training aims at, on pairs it never saw: the chosen answer made likelier than the
        # rejected one. A clear majority of pairs counts as better even where the answers' wording moved little.
        prefers = preference["prefers_chosen"]
        parts.append(f"fine-tuning moved {preference['toward_chosen']} of {preference['pairs']} held-out preference "
                     f"pairs toward your chosen answer (the tuned model finds it the likelier one in "
                     f"{prefers['tuned']}, the base model in {prefers['base']})")
        better = better or _moved_toward_chosen(report)
    acc = general["accuracy"]
    if acc["base"] is not None:
        change = f"{_signed(100 * general['accuracy_change'])} points: {_pct(acc['base'])} \u2192 " \
                 f"{_pct(acc['tuned'])} of {general['scored']} general questions, loss " \
                 f"{_signed(100 * general['loss_change'])}%"
        parts.append(f"general knowledge {'slipped' if general['forgetting'] else 'kept'} ({change})")
    p_train, p_val = parroting["train"]["share"], parroting["heldout"]["share"]
    if p_train is not None and p_val is not None:
        shares = f"{_pct(p_train)} of training answers reproduced word for word, {_pct(p_val)} of held-out ones"
        parts.append(f"{'it learned rows by heart' if parroting['flag'] else 'no parroting'} ({shares})")
    elif p_train is not None:
        parts.append(f"{_pct(p_train)} of training answers reproduced word for word (parroting needs held-out "
                     f"rows to compare with)")
    ready = better and not general["forgetting"] and not parroting["flag"]
    key, advice = next_step(report, config, facts)
    text = "; ".join([parts[0]] + parts[1:]) + (": ready to share." if ready else ".") + " " + advice
    return {"text": text[0].upper() + text[1:], "ready": ready, "next": key, "advice": advice}


# --- the report ---------------------------------------------------------------------------
def build_report(session, run_dir: Path, config: RunConfig, train: list[dict], val: list[dict],
                 max_rows: int = DEFAULT_MAX_ROWS, use_cache: bool = True, progress=None,
                 probes_path: Path | None = None, adapter_step: int | None = None) -> dict:
    """The report as a dict (what report.json holds). `progress(stage)` is told each stage as it starts;
    `probes_path`: another probe set in the format of PROBES_FILE; `adapter_step`: run_validation_losses."""
    from . import data

    started = time.time()
    tell = progress or (lambda stage: None)
    cache = BaseCache(session, enabled=use_cache)
    encode = functools.partial(data.encode_example, tokenizer=session.tokenizer,
                               max_seq_length=config.max_seq_length,
                               train_on_answers_only=config.train_on_answers_only)
    val_rows = val[:max_rows]
    # Training rows checked for parroting: as many as held-out rows (at least 10), drawn with the run's seed.
    n_train = min(len(train), max(len(val_rows), 10), max_rows)
    train_rows = random.Random(config.seed).sample(train, n_train) if train else []
    tell("validation loss")
    val_encoded = [encode(ex) for ex in val_rows]
    pair_rows = [i for i, ex in enumerate(val_rows) if ex.get("rejected") and ex.get("messages")]
    losses = run_validation_losses(run_dir, config, adapter_step)
    if losses is not None:
        losses["validation_rows"] = len(val)
    # The tuned model's scores of each row tell held-out copies (parroting); the base model's serve its loss where
    # the run did not measure it, and the preference pairs.
    base_val = cached_scores(session, cache, val_encoded, use_adapter=False) if losses is None or pair_rows \
        else []
    tuned_val = cached_scores(session, cache, val_encoded, use_adapter=True)
    if losses is None:
        losses = {**_loss_pair(base_val, tuned_val), "validation_rows": len(val_rows)}
    tell("answers to held-out rows and general questions")
    report: dict = {"version": REPORT_VERSION, "run": run_dir.name, "model": config.model,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "precision": getattr(session.precision, "name", None)}
    rows, limits = task_rows(session, config, val_rows)
    probes = load_probes(probes_path)
    shown = shown_probes(probes)
    # Both models answer the held-out rows and the shown probes in one pass: the short probe answers ride in the
    # batches of the longer ones (greedy_shrinking lets them leave when done) instead of taking steps of their own.
    conversations = [m for _, m, _ in rows] + probe_conversations(shown)
    all_limits = limits + [PROBE_ANSWER_TOKENS] * len(shown)
    base, tuned = answers_of_both(session, cache, conversations, all_limits)
    n = len(rows)
    report["task"] = task_section(rows, limits, losses, base[:n], tuned[:n])
    tell("general knowledge")
    report["general"] = general_section(session, cache, probes, base[n:], tuned[n:])
    if pair_rows:
        tell("preferred answers")
        report["preference"] = preference_section(
            session, cache, [val_rows[i] for i in pair_rows], [base_val[i] for i in pair_rows],
            [tuned_val[i] for i in pair_rows], encode)
    tell("parroting")
    train_scores = token_scores(session, [encode(ex) for ex in train_rows], use_adapter=True)
    report["parroting"] = parroting_section(session, train_rows, train_scores, tuned_val)
    facts = _run_facts(run_dir, config, len(train))
    report["training"] = facts
    report["verdict"] = verdict(report, config, facts)
    report["headline"] = headline(report)
    cache.save()
    report["seconds"] = time.time() - started
    return report


def headline(report: dict) -> dict:
    """The figures the run history shows as columns (one level, numbers or booleans)."""
    task, general, parroting = report["task"], report["general"], report["parroting"]
    return {"chrf_base": task["chrf"]["base"], "chrf_tuned": task["chrf"]["tuned"],
            "val_loss_base": task["loss"]["base"], "val_loss_tuned": task["loss"]["tuned"],
            "general_accuracy_base": general["accuracy"]["base"],
            "general_accuracy_tuned": general["accuracy"]["tuned"],
            "forgetting": general["forgetting"], "parroting": parroting["flag"],
            "parroting_share": parroting["train"]["share"], "ready": report["verdict"]["ready"],
            "next": report["verdict"]["next"]}


def evaluate_run(run_dir: str | Path, max_rows: int = DEFAULT_MAX_ROWS, use_cache: bool = True,
                 check_gpu: bool = True, progress=None, probes_path: Path | None = None,
                 adapter_step: int | None = None) -> dict:
    """Compute the report of a finished or stopped run and write report.json and report.html into its folder.

    `check_gpu`: refuse when a training run holds the GPU (the worker evaluating its own run passes False, and
    `adapter_step`, the step whose adapter it kept: its "end" event comes after the report)."""
    from . import data
    from .chat import ChatSession

    if not 1 <= max_rows <= 1000:
        raise UserError(f"--max-rows is {max_rows}: use a number from 1 to 1000.")
    run_dir = Path(run_dir)
    # Its rows are computed GENERATE_ROWS at a time, unlike a chat's one: a CPU's precision is measured at that shape
    # (bf16 wrote answers 1.8x as fast as fp32 on an AMD EPYC with avx512_bf16, where a chat's single row is faster
    # in fp32). The session says clearly when the run has no adapter yet.
    session = ChatSession.for_run(run_dir, check_gpu=check_gpu, rows_at_once=GENERATE_ROWS)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    train, val = data.load_for_config(config)
    with _threads_for_cpu():
        report = build_report(session, run_dir, config, train, val, max_rows, use_cache, progress, probes_path,
                              adapter_step)
    write_report(run_dir, report)
    return report


@contextlib.contextmanager
def _threads_for_cpu():
    """On a CPU, the thread count that multiplies fastest now (training's quick check): on cores that other work
    keeps busy, two threads can run five times slower than one (bench/README.md)."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    from .train import callback_class

    tuner = callback_class("CpuThreadTuner")()
    torch.set_num_threads(tuner.quick_pick())
    try:
        yield
    finally:
        torch.set_num_threads(tuner.default)


def write_report(run_dir: Path, report: dict) -> None:
    """report.json and report.html, each written to a temporary file and renamed (a reader never sees half)."""
    for name, text in ((REPORT_JSON, json.dumps(report, indent=1, default=_json_default) + "\n"),
                       (REPORT_HTML, render_html(report))):
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, run_dir / name)


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(type(value).__name__)


def read_report(run_dir: str | Path) -> dict | None:
    """The run's report.json, or None when there is none (or it cannot be read)."""
    try:
        report = json.loads((Path(run_dir) / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


# --- report.html ----------------------------------------------------------------------------
BASE_COLOUR, TUNED_COLOUR = "#8a8f98", "#2b6cb0"
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a202c;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #e2e8f0;padding-bottom:.2em}
.meta{color:#4a5568} .verdict{font-size:1.1em;background:#f7fafc;border-left:5px solid #2b6cb0;padding:.8em 1em}
.verdict.warn{border-left-color:#c05621} .flag{color:#c05621;font-weight:600} .ok{color:#2f855a;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.8em 0}
th,td{border:1px solid #e2e8f0;padding:.35em .5em;vertical-align:top;text-align:left}
th{background:#f7fafc} td.num{text-align:right;white-space:nowrap}
td.text{white-space:pre-wrap;max-width:24em} .badge{display:inline-block;font-size:.75em;padding:0 .4em;
border-radius:3px;background:#feebc8;color:#7b341e;margin-left:.3em} .figs{display:flex;flex-wrap:wrap;gap:1.5em}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
small{color:#4a5568}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def svg_bars(groups: list[tuple[str, float | None, float | None]], top: float, unit: str = "",
             title: str = "") -> str:
    """Pairs of bars (base grey, tuned blue) per group, 0..top, as inline SVG."""
    width, height, left, bottom = 60 + 110 * len(groups), 200, 40, 40
    plot = height - bottom - 20
    out = [f'<svg width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><title>{_e(title)}</title>']
    for tick in range(5):
        y = 20 + plot - plot * tick / 4
        out.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#edf2f7"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                   f'{top * tick / 4:.{0 if top >= 10 else 1}f}{_e(unit)}</text>')
    for k, (label, base, tuned) in enumerate(groups):
        x = left + 15 + 110 * k
        for j, (value, colour) in enumerate(((base, BASE_COLOUR), (tuned, TUNED_COLOUR))):
            if value is None:
                continue
            h = plot * max(0.0, min(value, top)) / top if top else 0
            out.append(f'<rect x="{x + 42 * j}" y="{20 + plot - h:.1f}" width="38" height="{h:.1f}" fill="{colour}">'
                       f'<title>{"base" if j == 0 else "tuned"}: {value:.2f}{_e(unit)}</title></rect>'
                       f'<text x="{x + 42 * j + 19}" y="{20 + plot - h - 3:.1f}" font-size="10" text-anchor="middle">'
                       f'{value:.{0 if top >= 10 else 2}f}</text>')
        out.append(f'<text x="{x + 40}" y="{height - bottom + 15}" font-size="11" text-anchor="middle">'
                   f'{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_lines(series: list[tuple[str, str, list[float], list[float]]], title: str = "", x_name: str = "step") -> str:
    """Lines (name, colour, xs, ys) on shared axes, as inline SVG; `x_name` labels the x axis's ends."""
    points = [(x, y) for _, _, xs, ys in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not points:
        return ""
    width, height, left, bottom, top_pad = 520, 220, 46, 30, 12
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x):
        return left + (width - left - 10) * (x - x0) / (x1 - x0)

    def sy(y):
        return top_pad + (height - bottom - top_pad) * (1 - (y - y0) / (y1 - y0))

    out = [f'<svg width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><title>{_e(title)}</title>']
    for tick in range(5):
        value = y0 + (y1 - y0) * tick / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" stroke="#edf2f7"/>'
                   f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.2f}</text>')
    out.append(f'<text x="{width - 10}" y="{height - 8}" font-size="10" text-anchor="end">{x_name} {x1:.0f}</text>'
               f'<text x="{left}" y="{height - 8}" font-size="10">{x_name} {x0:.0f}</text>')
    for name, colour, xs, ys in series:
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if y is not None and math.isfinite(y))
        if pts:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}">'
                       f'<title>{_e(name)}</title></polyline>')
            if " " not in pts:  # one point: a dot, or it would not show
                x, y = pts.split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
    out.append("</svg>")
    return "".join(out)


def _legend(*items: tuple[str, str]) -> str:
    return '<div class="legend">' + "".join(f'<span style="background:{c}"></span>{_e(n)}' for n, c in items) + \
        "</div>"


def _badges(example: dict, side: str) -> str:
    badges = []
    if example.get(f"{side}_looping"):
        badges.append('<span class="badge">looping</span>')
    if example.get(f"{side}_cut"):
        badges.append(f'<span class="badge">cut at {example.get("limit")} tokens</span>')
    return "".join(badges)


def render_html(report: dict) -> str:
    """report.html: one file, inline CSS and SVG, no script and nothing fetched from anywhere."""
    task, general, parroting, verdict_ = report["task"], report["general"], report["parroting"], report["verdict"]
    legend = _legend(("base model", BASE_COLOUR), ("fine-tuned", TUNED_COLOUR))
    warn = "" if verdict_["ready"] else " warn"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Report card: {_e(report['run'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>Report card: {_e(report['run'])}</h1>",
           f'<p class="meta">Base model {_e(report["model"])} \u00b7 made {_e(report["created"])} in '
           f'{report.get("seconds", 0):.0f} s</p>',
           f'<p class="verdict{warn}">{_e(verdict_["text"])}</p>']
    # 1. task
    out.append("<h2>1. Your task</h2>")
    loss, ppl = task["loss"], task["perplexity"]
    steps = task.get("loss_steps")
    measured = f", as the run measured it (before training and at step {steps[1]}, as on its plot)" if steps else ""
    out.append(f"<p>{task['rows']} held-out rows (the run's own validation split), answered greedily by both "
               f"models as the Chat tab does. chrF (sacrebleu) measures how close each answer is to your reference, "
               f"0 to 100. Validation loss on {task['validation_rows']} rows{measured}: base {_num(loss['base'])} "
               f"(perplexity {_num(ppl['base'], 1)}), fine-tuned {_num(loss['tuned'])} "
               f"(perplexity {_num(ppl['tuned'], 1)}).</p>")
    preference = report.get("preference")
    if preference:
        prefers = preference["prefers_chosen"]
        out.append(f"<p>{preference['pairs']} held-out preference pairs: fine-tuning made your chosen answer more "
                   f"likely, against the rejected one, on {preference['toward_chosen']} of them (what preference "
                   f"training aims at). Word for word, the fine-tuned model finds the chosen answer the likelier one "
                   f"on {prefers['tuned']}, the base model on {prefers['base']}.</p>")
    if task["rows"]:
        out.append(f"<p>Answers that looped: base {task['looping']['base']}, fine-tuned {task['looping']['tuned']}. "
                   f"Answers still going at half as long again as the reference (cut there): base "
                   f"{task['cut']['base']}, fine-tuned {task['cut']['tuned']}.</p>")
        out.append('<div class="figs"><div>' + svg_bars(
            [("mean chrF", task["chrf"]["base"], task["chrf"]["tuned"])], 100, title="mean chrF") + legend + "</div>")
        per_row = svg_lines([("base", BASE_COLOUR, list(range(1, task["rows"] + 1)),
                              [e["chrf_base"] for e in task["examples"]]),
                             ("fine-tuned", TUNED_COLOUR, list(range(1, task["rows"] + 1)),
                              [e["chrf_tuned"] for e in task["examples"]])], title="chrF per row", x_name="row")
        out.append(f"<div>{per_row}<br><small>chrF per row (x: row)</small></div></div>")
        out.append("<table><tr><th>#</th><th>prompt</th><th>reference</th><th>base</th><th>chrF</th>"
                   "<th>fine-tuned</th><th>chrF</th></tr>")
        for k, e in enumerate(task["examples"], 1):
            out.append(f'<tr><td class="num">{k}</td><td class="text">{_e(e["prompt"])}</td>'
                       f'<td class="text">{_e(e["reference"])}</td>'
                       f'<td class="text">{_e(e["base"])}{_badges(e, "base")}</td>'
                       f'<td class="num">{e["chrf_base"]:.1f}</td>'
                       f'<td class="text">{_e(e["tuned"])}{_badges(e, "tuned")}</td>'
                       f'<td class="num">{e["chrf_tuned"]:.1f}</td></tr>')
        out.append("</table>")
    # 2. general knowledge
    acc = general["accuracy"]
    state = '<span class="flag">forgetting</span>' if general["forgetting"] else '<span class="ok">kept</span>'
    out.append(f"<h2>2. General knowledge: {state}</h2>")
    out.append(f"<p>{general['probes']} general questions shipped with the studio (facts, arithmetic, common sense, "
               f"requests it should refuse). A question counts as known when the model's own first choice for the "
               f"answer's key word (\u201cParis\u201d, \u201c56\u201d, \u201cI'm sorry\u201d) is right after the "
               f"reference's lead-in. Known: base {_pct(acc['base']) if acc['base'] is not None else 'n/a'}, "
               f"fine-tuned {_pct(acc['tuned']) if acc['tuned'] is not None else 'n/a'}. Loss on the reference "
               f"answers: base {_num(general['loss']['base'])}, fine-tuned {_num(general['loss']['tuned'])} "
               f"({_signed(100 * general['loss_change'])}%). Flagged when accuracy drops by "
               f"{FORGET_ACCURACY_DROP * 100:.0f} points or the loss rises by {FORGET_LOSS_RISE * 100:.0f}%.</p>")
    kinds = [(kind.replace("_", " "), v["base"] * 100 if v["base"] is not None else None,
              v["tuned"] * 100 if v["tuned"] is not None else None) for kind, v in general["by_kind"].items()]
    out.append(svg_bars(kinds, 100, "%", title="questions known, by kind") + legend)
    out.append("<table><tr><th>question</th><th>reference</th><th>base</th><th>fine-tuned</th></tr>")
    for e in general["examples"]:
        out.append(f'<tr><td class="text">{_e(e["question"])}</td><td class="text">{_e(e["answer"])}</td>'
                   f'<td class="text">{_e(e["base"])}</td><td class="text">{_e(e["tuned"])}</td></tr>')
    out.append("</table>")
    # 3. parroting
    tr, ho = parroting["train"], parroting["heldout"]
    state = '<span class="flag">learned rows by heart</span>' if parroting["flag"] else '<span class="ok">none</span>'
    out.append(f"<h2>3. Parroting: {state}</h2>")
    out.append(f"<p>A row counts as reproduced word for word when the fine-tuned model's own first choice is the "
               f"row's answer token at {parroting['agreement_threshold'] * 100:.0f}% or more of its answer tokens. "
               f"Training rows: {tr['copied']} of {tr['rows']}; held-out rows: {ho['copied']} of {ho['rows']}. "
               f"Far more on training rows than on held-out ones means it learned the rows, not the task.</p>")
    out.append(svg_bars([("training rows", None, (tr["share"] or 0) * 100), ("held-out rows", None,
                                                                              (ho["share"] or 0) * 100)],
                        100, "%", title="rows reproduced word for word"))
    if parroting["examples"]:
        out.append("<table><tr><th>training prompt</th><th>training answer</th><th>fine-tuned answer</th>"
                   "<th>chrF</th></tr>")
        for e in parroting["examples"]:
            out.append(f'<tr><td class="text">{_e(e["prompt"])}</td><td class="text">{_e(e["training_answer"])}</td>'
                       f'<td class="text">{_e(e["tuned"])}</td><td class="num">{e["chrf"]:.1f}</td></tr>')
        out.append("</table>")
    # 4. verdict and the training curve
    out.append("<h2>4. Verdict</h2>")
    out.append(f'<p class="verdict{warn}">{_e(verdict_["text"])}</p>')
    curve = report.get("training", {}).get("curve") or {}
    lines = svg_lines([("training loss", BASE_COLOUR, curve.get("train_steps", []), curve.get("train_loss", [])),
                       ("validation loss", TUNED_COLOUR, curve.get("eval_steps", []), curve.get("eval_loss", []))],
                      title="loss during training")
    if lines:
        out.append("<h2>Training curve</h2>" + lines + _legend(("training loss", BASE_COLOUR),
                                                               ("validation loss", TUNED_COLOUR)))
    out.append("</body></html>")
    return "\n".join(out)


# --- CLI ----------------------------------------------------------------------------------
def build_parser():
    parser = ArgumentParser(prog="python -m studio eval",
                            description="Write the report card of a finished or stopped run: RUN_DIR/report.json and "
                                        "a self-contained RUN_DIR/report.html.")
    parser.add_argument("run_dir", help="the run folder, e.g. runs/20250101-120000-support")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                        help=f"held-out rows answered by both models (default: {DEFAULT_MAX_ROWS})")
    parser.add_argument("--no-cache", action="store_true",
                        help="compute the base model's answers again instead of reusing them from an earlier report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .chat import _quiet_libraries

    _quiet_libraries()
    try:
        report = evaluate_run(args.run_dir, args.max_rows, use_cache=not args.no_cache)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    run_dir = Path(args.run_dir)
    print(report["verdict"]["text"])
    print(f"\n{run_dir / REPORT_HTML}\n{run_dir / REPORT_JSON}")
    return 0
