"""Chat speed on the bundled model (CPU by default): time to first token and decode tokens/s for the base column
(adapter disabled), the fine-tuned column (adapter attached), and the same adapter merged into the weights.

    python bench/chat.py [--prompt-tokens 200] [--new-tokens 64] [--repeats 3]

Goals: tuned-with-adapter decode speed >= 0.8 x merged (the price of keeping the adapter switchable),
and the first token in under 1 s for a 200-token prompt. The adapter is a real LoRA (r=8, all linear
layers, the default settings) with random weights: speed does not depend on what it learned.

Columns: "as served" is what the Chat tab runs (studio.chat's lean LoRA forward); "peft forward" is the
same adapter through peft's general forward, for reference. "first token" is measured per token inside
generate(); "first text" is what a user waits for through ChatSession.stream (the first whole word).
Columns are timed in interleaved rounds and the best round is shown next to the median, because other
work on a shared machine only ever makes a round slower.

On a CPU a second table compares the number formats (studio/precision.py): the tuned column in fp32 and in
bf16, first token and decode speed, and whether the greedy answers to a few short questions are the same words.
The first table uses the format the chat chooses by itself ("auto"), named in its title.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.chat import ChatSession, GenerationSettings  # noqa: E402
from studio.config import BUNDLED_MODEL, RunConfig  # noqa: E402

QUESTIONS = ["What is the capital of France?", "How do I restart my router?", "Name three colours of the rainbow.",
             "Why is my Wi-Fi slow in the evening?"]
TEXT = ("Our home internet customers write to us about slow Wi-Fi in the evening, routers that restart on their own, "
        "bills that changed without warning, moving house, and setting up parental controls on a new hub. ")


class TokenTimes:
    """A generate() streamer that records when each new token arrives (the first put() is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def make_run(folder: Path, model: str) -> Path:
    """A run folder with an untrained-but-nonzero LoRA adapter of the default shape for `model`."""
    import torch
    from peft import get_peft_model

    from studio import models

    run = folder / "bench-run"
    (run / "adapter").mkdir(parents=True)
    config = RunConfig(model=model)
    config.save(run / "config.json")
    lora = models.lora_config(config)
    lora.init_lora_weights = False  # random A and B: the update is not zero, as after training
    torch.manual_seed(0)
    peft_model = get_peft_model(models.load_base_model(model), lora)
    peft_model.save_pretrained(run / "adapter")
    models.load_tokenizer(model).save_pretrained(run / "adapter")
    return run


def prompt_of(session: ChatSession, n_tokens: int) -> list[dict]:
    """A user message whose chat-formatted prompt is n_tokens long (give or take one)."""
    words = (TEXT * (n_tokens // 10 + 5)).split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # the longest message that stays within n_tokens
        mid = (lo + hi + 1) // 2
        if session.encode([{"role": "user", "content": " ".join(words[:mid])}], GenerationSettings()).shape[1] \
                <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return [{"role": "user", "content": " ".join(words[:lo])}]


def measure(session: ChatSession, messages, settings: GenerationSettings, use_adapter: bool) -> tuple[float, float]:
    """(seconds to the first new token, decode tokens/s after it) for one greedy answer."""
    import torch

    ids = session.encode(messages, settings)
    kwargs = {**session.generation_kwargs(settings), "min_new_tokens": settings.max_new_tokens}  # no early eos
    timer = TokenTimes()
    switch = session.model.disable_adapter() if session.has_adapter and not use_adapter else contextlib.nullcontext()
    with switch, torch.inference_mode():
        start = time.perf_counter()
        session.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=timer, **kwargs)
    first = timer.times[0] - start
    decode = (len(timer.times) - 1) / (timer.times[-1] - timer.times[0])
    return first, decode


def first_text_s(session: ChatSession, messages, settings: GenerationSettings, use_adapter: bool) -> float:
    """What a user waits for through ChatSession.stream: the first visible piece of text (a whole word)."""
    start = time.perf_counter()
    stream = session.stream(messages, settings, use_adapter)
    next(stream)
    elapsed = time.perf_counter() - start
    stream.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BUNDLED_MODEL, help="base model (default: the bundled SmolLM2-135M)")
    parser.add_argument("--prompt-tokens", type=int, default=200, help="prompt length in tokens (default 200)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per answer (default 64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed answers per column, interleaved across columns (default 3)")
    parser.add_argument("--no-precisions", action="store_true", help="skip the fp32 / bf16 table on a CPU")
    args = parser.parse_args(argv)

    import torch

    from studio.export import merge_adapter

    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.model)
        merged_dir = merge_adapter(run, Path(tmp) / "merged")
        session = ChatSession.for_run(run, check_gpu=False)
        general = ChatSession(args.model, run / "adapter", lean_lora=False)
        merged = ChatSession(str(merged_dir))
        messages = prompt_of(session, args.prompt_tokens)
        n_prompt = session.encode(messages, settings).shape[1]
        columns = [("Base (adapter disabled)", session, False),
                   ("Fine-tuned (adapter, as served)", session, True),
                   ("Fine-tuned (adapter, peft forward)", general, True),
                   ("Fine-tuned (merged weights)", merged, False)]
        for _, sess, use_adapter in columns:
            measure(sess, messages, settings, use_adapter)  # warm-up: the first call pays for allocations
        # Rounds interleave the columns, so a busy neighbour on the machine slows them all alike.
        timings: list[list[tuple[float, float, float]]] = [[] for _ in columns]
        for _ in range(args.repeats):
            for i, (_, sess, use_adapter) in enumerate(columns):
                first, decode = measure(sess, messages, settings, use_adapter)
                timings[i].append((first, decode, first_text_s(sess, messages, settings, use_adapter)))
        formats = None
        if not torch.cuda.is_available() and not args.no_precisions:
            del general, merged  # one model per format next, not five at once
            formats = compare_precisions(args, run, messages, settings)

    device = "CUDA" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    if session.precision is not None:
        device += f", {session.precision.name} ({session.precision.reason})"
    print(f"\nChat speed: {args.model}, {device}, prompt {n_prompt} tokens, {args.new_tokens} new tokens, greedy; "
          f"best and median of {args.repeats}\n")
    print(f"{'column':<36}{'first token s':>15}{'(median)':>10}{'decode tok/s':>14}{'(median)':>10}"
          f"{'first text s':>14}")
    best = []
    for (name, _, _), rows in zip(columns, timings):
        firsts, decodes, texts = zip(*rows)
        best.append((min(firsts), max(decodes)))
        print(f"{name:<36}{min(firsts):>15.3f}{statistics.median(firsts):>10.3f}{max(decodes):>14.1f}"
              f"{statistics.median(decodes):>10.1f}{min(texts):>14.3f}")
    ratio, ratio_peft = best[1][1] / best[3][1], best[2][1] / best[3][1]
    slowest_first = max(b[0] for b in best[:2])
    print(f"\ndecode speed, tuned with adapter / merged: {ratio:.2f} as served, {ratio_peft:.2f} with peft's own "
          f"forward (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    print(f"first token, base and tuned: {slowest_first:.3f} s at most (goal < 1 s: "
          f"{'met' if slowest_first < 1 else 'NOT met'})")
    if formats:
        from studio import precision

        print(f"\nNumber formats on this CPU ({precision.cpu_flags()}): the tuned column as served, best and median of "
              f"{args.repeats}\n")
        print(f"{'format':<10}{'first token s':>15}{'(median)':>10}{'decode tok/s':>14}{'(median)':>10}")
        for name, rows in formats["timings"].items():
            firsts, decodes = zip(*rows)
            print(f"{name:<10}{min(firsts):>15.3f}{statistics.median(firsts):>10.3f}{max(decodes):>14.1f}"
                  f"{statistics.median(decodes):>10.1f}")
        same = formats["same"]
        print(f"\ngreedy answers, bf16 the same words as fp32: {sum(same)} of {len(same)} questions "
              f"({len(QUESTIONS)} questions x base and tuned, 32 new tokens)")
        for question, fp32_answer, bf16_answer in formats["differ"][:2]:
            print(f"  differs: {question!r}\n    fp32: {fp32_answer!r}\n    bf16: {bf16_answer!r}")
    return 0


def compare_precisions(args, run: Path, messages, settings: GenerationSettings) -> dict:
    """The tuned column in fp32 and bf16 (interleaved rounds), and the greedy answers of both to QUESTIONS."""
    sessions = {name: ChatSession(args.model, run / "adapter", cpu_precision=name) for name in ("fp32", "bf16")}
    for sess in sessions.values():
        measure(sess, messages, settings, True)  # warm-up
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in sessions}
    for _ in range(args.repeats):
        for name, sess in sessions.items():
            timings[name].append(measure(sess, messages, settings, True))
    short = GenerationSettings(max_new_tokens=32)
    same, differ = [], []
    for question in QUESTIONS:
        for use_adapter in (False, True):
            fp32_answer, bf16_answer = (sessions[name].generate(question, short, use_adapter=use_adapter)
                                        for name in ("fp32", "bf16"))
            same.append(fp32_answer.split() == bf16_answer.split())
            if not same[-1]:
                differ.append((question, fp32_answer, bf16_answer))
    return {"timings": timings, "same": same, "differ": differ}


if __name__ == "__main__":
    sys.exit(main())
