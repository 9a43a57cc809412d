"""Shared by the training benchmarks: sides in their own processes taking turns step by step, timing, memory,
validation loss, and the table.

Why turns: the CPU machines here are shared, so the load changes from minute to minute. Running the baseline
for three minutes and then the studio for three would compare two different machines. Instead every side
(baseline, studio, studio without one lever, ...) is its own process with its own model, and they take turns:
side 1 does one optimiser step while the others wait (blocked, using no CPU), then side 2, and so on. Each step
is timed on its own (from the Trainer's on_step_begin to on_step_end: forward, backward, optimiser), so all
sides see the same conditions, and per-process peak memory stays separate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclasses.dataclass
class SideResult:
    name: str
    steps: int = 0
    examples: int = 0
    real_tokens: int = 0  # tokens of the examples in the timed steps (no padding)
    computed_tokens: int = 0  # tokens the model ran on, padding included (all steps)
    collated_tokens: int = 0  # tokens of the examples collated (all steps): sum of L
    collated_sq_tokens: int = 0  # sum of L^2 over the same examples, for the attention FLOPs
    step_seconds: float = 0.0  # sum of timed steps
    peak_rss_gb: float = 0.0
    peak_gpu_gb: float = 0.0
    val_loss: float = math.nan
    base_val_loss: float = math.nan
    train_loss_first: float = math.nan
    train_loss_last: float = math.nan
    notes: str = ""
    error: str = ""
    step_log: list = dataclasses.field(default_factory=list)  # [seconds, real tokens] of each timed step

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.step_seconds if self.step_seconds else 0.0


class Turns:
    """Round-robin turn-taking between processes: wait(me) blocks until it is my turn, done_step(me) passes it
    on to the next side still training, finished(me) leaves the ring."""

    def __init__(self, ctx, n: int):
        self.n = n
        self.cond = ctx.Condition()
        self.turn = ctx.Value("i", 0, lock=False)
        self.done = ctx.Array("b", [0] * n, lock=False)
        self.ready = ctx.Barrier(n)
        self.trained = ctx.Barrier(n)  # nobody evaluates (loads a model, runs forwards) while others train
        self.deadline = ctx.Value("d", float("inf"), lock=False)  # time.time() after which all sides stop...
        self.stop_after = ctx.Value("i", 0, lock=False)  # ...after this many steps each (0: not yet decided)

    def wait(self, me: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn.value == me, timeout=3600)

    def _advance(self, me: int) -> None:
        for k in range(1, self.n + 1):
            nxt = (me + k) % self.n
            if not self.done[nxt]:
                self.turn.value = nxt
                return

    def done_step(self, me: int) -> None:
        with self.cond:
            self._advance(me)
            self.cond.notify_all()

    def finished(self, me: int) -> None:
        with self.cond:
            self.done[me] = 1
            if self.turn.value == me:
                self._advance(me)
            self.cond.notify_all()

    def all_ready(self) -> None:
        try:
            self.ready.wait(timeout=1800)
        except Exception:  # noqa: BLE001 - a side that died while loading: go on without waiting
            pass

    def all_trained(self) -> None:
        try:
            self.trained.wait(timeout=3600)
        except Exception:  # noqa: BLE001 - a side that died: go on without waiting
            pass

    def abort(self) -> None:
        for barrier in (self.ready, self.trained):
            try:
                barrier.abort()
            except Exception:  # noqa: BLE001
                pass


def turn_callback(turns: Turns | None, me: int, result: SideResult, threads: int | None = None,
                  untimed_steps: int = 0):
    """A TrainerCallback that waits for this side's turn, times each step and records the train loss. The first
    `untimed_steps` steps (GPU warm-up: kernels, allocator) are run but not counted."""
    import torch
    from transformers import TrainerCallback

    class TurnTaking(TrainerCallback):
        def __init__(self):
            self.t0 = 0.0
            self.tokens0 = 0
            self.seen = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if turns is not None:
                turns.all_ready()

        def on_step_begin(self, args, state, control, **kwargs):
            if turns is not None:
                turns.wait(me)
            if threads:
                torch.set_num_threads(threads)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()
            self.tokens0 = state.num_input_tokens_seen or 0

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seen += 1
            if self.seen > untimed_steps:
                seconds, tokens = time.perf_counter() - self.t0, (state.num_input_tokens_seen or 0) - self.tokens0
                result.step_seconds += seconds
                result.real_tokens += tokens
                result.step_log.append([round(seconds, 3), tokens])
                result.steps += 1
                result.examples += args.per_device_train_batch_size * args.gradient_accumulation_steps
            if turns is not None:
                # Past the time limit: every side stops after the same number of steps, keeping the examples
                # seen equal. The first side decides: when it has done k steps, the others are about to do their
                # k-th (they take turns in order).
                if me == 0 and not turns.stop_after.value and time.time() > turns.deadline.value:
                    turns.stop_after.value = self.seen
                if turns.stop_after.value and self.seen >= turns.stop_after.value:
                    control.should_training_stop = True
                    result.notes = f"stopped at the time limit after {self.seen} steps; " + result.notes
                turns.done_step(me)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                if math.isnan(result.train_loss_first):
                    result.train_loss_first = logs["loss"]
                result.train_loss_last = logs["loss"]

        def on_train_end(self, args, state, control, **kwargs):
            if turns is not None:
                turns.finished(me)
                turns.all_trained()

    return TurnTaking()


class CountingCollator:
    """Wraps a collator to count the tokens the model will run on (padding included) and the examples' lengths."""

    def __init__(self, inner, result: SideResult):
        self.inner, self.result = inner, result

    def __call__(self, features):
        lengths = [len(f["input_ids"]) for f in features]
        self.result.collated_tokens += sum(lengths)
        self.result.collated_sq_tokens += sum(n * n for n in lengths)
        batch = self.inner(features)
        self.result.computed_tokens += int(batch["input_ids"].numel())
        return batch


def run_studio(config, run_dir: Path, result: SideResult, callback, log_markers: tuple[str, ...]) -> Path:
    """The studio's side: `studio.train.run` as `python -m studio train` runs it, with the tokens its batches hold
    counted and the timing callback attached. Raises when the run does not finish; the worker-log lines holding
    any of `log_markers` (its choices: threads, checkpointing) go into the result's notes. Returns the adapter."""
    from studio import packing, train
    from studio.events import ADAPTER_DIR, LOG_FILE, read_events, replay

    make_collator = packing.make_collator  # count the tokens computed, as for the baseline
    packing.make_collator = lambda c, t: CountingCollator(make_collator(c, t), result)
    status = train.run(config, run_dir, callbacks=[callback])
    if status != "finished":
        error = replay(read_events(run_dir)).error
        raise RuntimeError(f"studio run {status}: {error.get('message')}")
    log_text = (run_dir / LOG_FILE).read_text()
    result.notes += "; ".join(line.split(": ", 1)[-1] for line in log_text.splitlines()
                              if any(marker in line for marker in log_markers))[-400:]
    return run_dir / ADAPTER_DIR


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def validation_loss(model, features: list[dict]) -> float:
    """Mean next-token loss over every trained token of the held-out examples, each example on its own (no
    padding, no packing, full logits): the same plain computation for every side."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for f in features:
            ids = torch.tensor([f["input_ids"]], device=device)
            targets = torch.tensor(f["labels"][1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            count += int((targets != -100).sum())
    return total / max(count, 1)


def run_sides(worker, side_names: list[str], args, interleave: bool = True,
              deadline: float | None = None) -> list[SideResult]:
    """Start one process per side (worker(name, index, args, turns, queue)); interleaved step by step, or one
    after the other. With a deadline (time.time()), interleaved sides stop training there, all after the same
    number of steps. Returns the results in side order."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    turns = Turns(ctx, len(side_names)) if interleave else None
    if turns is not None and deadline:
        turns.deadline.value = deadline
    results: dict[str, SideResult] = {}

    def start(i, name):
        # daemon: a side never outlives this process (it could wait for its turn forever)
        p = ctx.Process(target=_guarded, args=(worker, name, i, args, turns, queue), name=f"bench-{name}",
                        daemon=True)
        p.start()
        return p

    if interleave:
        procs = [start(i, n) for i, n in enumerate(side_names)]
        while len(results) < len(procs):
            _collect(queue, results, procs, turns)
        for p in procs:
            p.join(timeout=60)
    else:
        for i, name in enumerate(side_names):
            p = start(i, name)
            while name not in results:
                _collect(queue, results, [p], None)
            p.join(timeout=60)
    return [results[n] for n in side_names]


def _collect(queue, results, procs, turns):
    import queue as queue_mod

    try:
        item = queue.get(timeout=5)
    except queue_mod.Empty:
        for i, p in enumerate(procs):
            if not p.is_alive() and p.exitcode not in (0, None):
                name = p.name.removeprefix("bench-")
                if name not in results:  # killed (out of memory?): take it out of the turns so the rest go on
                    why = " (killed: out of memory?)" if p.exitcode == -9 else ""
                    results[name] = SideResult(name=name, error=f"process died (exit code {p.exitcode}){why}")
                    if turns is not None:
                        turns.finished(i)
                        turns.abort()
        return
    results[item["name"]] = SideResult(**item)


def _guarded(worker, name, index, args, turns, queue):
    try:
        result = worker(name, index, args, turns)
    except BaseException as err:  # noqa: BLE001 - report, and leave the ring so the others go on
        traceback.print_exc()
        result = SideResult(name=name, error=f"{type(err).__name__}: {err}")
        if turns is not None:
            turns.finished(index)
            turns.abort()
    queue.put(dataclasses.asdict(result))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)}; " + text
    return text


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str) + "\n")
