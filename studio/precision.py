"""The number format a CPU computes in, fp32 or bf16, chosen by measuring this processor (like the thread count).

Processors with native bf16 (Intel AMX, AVX512-BF16 on recent AMD) multiply bf16 matrices several times faster
than fp32; others emulate it and are up to 20x slower. So no rule by name: a short probe times the same matrix
multiply in both formats and bf16 is used only when it is clearly faster. Training (studio/train.py), the chat
(studio/chat.py) and the time estimate (studio/estimate.py) all ask `choose`. Importing this module imports no
torch; on a GPU the training method decides the format and this module is not asked.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("studio.precision")

AUTO, FP32, BF16 = "auto", "fp32", "bf16"
CHOICES = (AUTO, FP32, BF16)  # RunConfig.cpu_precision's allowed values
# bf16 costs some accuracy (8 bits of mantissa in the matmuls), so it must pay clearly: a whole training step
# gains less than the bare matmul (measured: 2.2x faster matmul, 1.2-1.3x faster step on an AVX512-BF16 EPYC).
BF16_MIN_SPEEDUP = 1.3
# The probe's matrix multiply: 512 tokens through the model's widest layer, (512 x hidden) x (hidden x MLP width).
# Without a model, SmolLM2's: (512 x 576) x (576 x 1536), the thread tuner's check (train._ThreadTunerHooks),
# about 0.9 GFLOP. The model's own shape matters: a tiny model's products are too small for bf16 to pay for the
# casts around them (measured 0.74x here, against 2.3x at SmolLM2's shape).
PROBE_SHAPE = (512, 576, 1536)
PROBE_FLOPS = 2 * PROBE_SHAPE[0] * PROBE_SHAPE[1] * PROBE_SHAPE[2]
PROBE_BUDGET_S = 0.04  # per format and round: an emulated bf16 costs at most this plus one product a round
PROBE_ROUNDS = 3  # an odd count: the median ratio is one round's


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    reason: str  # plain words for the start event, the log and the Train tab
    fp32_flops: float | None = None  # measured matmul FLOP/s in fp32 (None: not measured, a forced choice)
    bf16_flops: float | None = None

    @property
    def bf16(self) -> bool:
        return self.name == BF16

    @property
    def peak_flops(self) -> float | None:
        """The measured matmul FLOP/s in the format used: this machine's own limit for the model's arithmetic."""
        return self.bf16_flops if self.bf16 else self.fp32_flops


def flops(shape: tuple[int, int, int]) -> float:
    return 2.0 * shape[0] * shape[1] * shape[2]


# The chat's probe: an answer is written one token at a time, so its cost is products of a single row. There bf16
# loses on the same Xeon with AMX whose 512-row products it runs 3x faster (measured 0.41x at (1 x 576) x
# (576 x 1536); chat decode 14.8 against 18.2 tokens/s), so the chat measures the shape it computes.
DECODE_TOKENS = 1


def model_shape(model_config, tokens: int = PROBE_SHAPE[0]) -> tuple[int, int, int]:
    """The probe's (tokens, hidden, MLP width) for a transformers config: `tokens` rows (training: PROBE_SHAPE's
    512; the chat: DECODE_TOKENS); SmolLM2's sizes when the config has none."""
    hidden = getattr(model_config, "hidden_size", None)
    if not hidden:
        return tokens, PROBE_SHAPE[1], PROBE_SHAPE[2]
    return tokens, hidden, getattr(model_config, "intermediate_size", None) or 4 * hidden


def matmul_seconds(
    dtype_name: str,
    threads: int | None = None,
    shape: tuple[int, int, int] = PROBE_SHAPE,
    budget_s: float = PROBE_BUDGET_S,
) -> float:
    """Seconds for one (m x k) x (k x n) product as a layer computes it in dtype_name ("fp32" / "bf16") with
    `threads` intra-op threads (None: the current count): the fastest of a few, after one untimed product, within
    about budget_s. In bf16 the casts count too: autocast takes fp32 activations in, the residual stream adds the
    product back in fp32."""
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    if dtype_name == BF16:
        b = b.to(torch.bfloat16)

        def product():
            return (a.to(torch.bfloat16) @ b).float()
    else:

        def product():
            return a @ b

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        product()  # first use: kernel selection, allocation
        best, spent = float("inf"), 0.0
        for _ in range(16):
            t0 = time.perf_counter()
            product()
            seconds = time.perf_counter() - t0
            best, spent = min(best, seconds), spent + seconds
            if spent > budget_s:
                break
    finally:
        torch.set_num_threads(before)
    return best


def measure(
    threads: int | None = None,
    shape: tuple[int, int, int] = PROBE_SHAPE,
    timer: Callable[[str, int | None, tuple[int, int, int]], float] = matmul_seconds,
) -> Precision:
    """Time the probe in fp32 and bf16 and pick: bf16 only when at least BF16_MIN_SPEEDUP times faster.

    `timer(dtype_name, threads, shape)` -> seconds per product; tests pass their own timings here."""
    # Rounds of the two formats back to back, and the median of the rounds' ratios: a neighbour's burst on a shared
    # machine lands in one round (seen: fp32 at 2 GFLOP/s for one whole round while a benchmark ran beside it,
    # which the best-of-each comparison took for a 63x bf16 gain on the tiny test model).
    ratios, fp32_s, bf16_s = [], float("inf"), float("inf")
    for _ in range(PROBE_ROUNDS):
        round_fp32, round_bf16 = timer(FP32, threads, shape), timer(BF16, threads, shape)
        ratios.append(round_fp32 / round_bf16 if round_bf16 > 0 else 0.0)
        fp32_s, bf16_s = min(fp32_s, round_fp32), min(bf16_s, round_bf16)
    speedup = statistics.median(ratios)
    fp32_flops, bf16_flops = flops(shape) / max(fp32_s, 1e-12), flops(shape) / max(bf16_s, 1e-12)
    name = BF16 if speedup >= BF16_MIN_SPEEDUP else FP32
    # Plain words for the Train tab; the FLOP/s go to the log (and bench/train_cpu.py prints them).
    reason = (f"a quick test on this processor computed {speedup:.2f}x the speed of fp32 in bf16, a shorter "
              f"number format; bf16 is used from {BF16_MIN_SPEEDUP}x")
    log.info("precision probe at %s: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s, round ratios %s", shape,
             fp32_flops / 1e9, bf16_flops / 1e9, ", ".join(f"{r:.2f}" for r in ratios))
    return Precision(name, reason, fp32_flops, bf16_flops)


@functools.lru_cache(maxsize=16)
def _measured(threads: int, shape: tuple[int, int, int]) -> Precision:
    return measure(threads, shape)


def choose(setting: str = AUTO, threads: int | None = None, shape: tuple[int, int, int] | None = None) -> Precision:
    """The CPU precision for a setting ("auto", "fp32", "bf16"): a forced one as it is, "auto" by the probe at the
    model's `shape` (model_shape; None: SmolLM2's), measured once per process, thread count and shape: about
    0.2 s, up to 0.3 s where bf16 is emulated."""
    if setting in (FP32, BF16):
        return Precision(setting, "chosen in settings")
    import torch

    result = _measured(threads or torch.get_num_threads(), tuple(shape or PROBE_SHAPE))
    log.info("cpu precision %s: %s", result.name, result.reason)
    return result


def cpu_flags() -> str:
    """The processor's model name and its bf16 / AMX flags, as /proc/cpuinfo gives them ("" where it cannot)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()  # noqa: SIM115 - one read
    except OSError:
        import platform

        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(wanted) or 'no avx2/avx512/amx flags'})"
