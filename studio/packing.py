"""Padding-free batches and the CPU speed-ups of the training step: packed rows with per-example attention, the
collator that makes them, and a cheaper dropout for LoRA on a CPU.

A packed batch is one row of several examples laid end to end, position_ids restarting at 0 for each. Each piece
here gives the same numbers as the plain path (tests/test_packing.py), only faster. Importing this module imports
neither torch nor transformers: they are imported where used.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from .config import RunConfig

log = logging.getLogger("studio.packing")

# --- padding-free attention -------------------------------------------------------------
# A packed batch is one row of several examples laid end to end, position_ids restarting at 0 for each. SDPA given
# that row needs a (tokens x tokens) block-diagonal mask: it computes the whole square and cannot use its causal
# kernels. Cutting the row at the example boundaries and running causal SDPA per example does sum(L_i^2)/2 work
# instead of (sum L_i)^2, the same result (tests/test_packing.py). Registered as an attention implementation of
# its own, for decoder families whose attention is plain causal (no sliding window, no soft-capping).
#
# Which architectures pack, and how, is declared here; each catalogue architecture's packed rows are checked against
# its examples run one by one (tests/test_architectures.py). Anything not declared trains on padded batches.
VARLEN_ATTENTION_NAME = "studio_varlen_sdpa"
VARLEN_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "granite")  # plain causal attention
# Families whose own masks keep packed examples apart: transformers' masking_utils reads the example boundaries from
# position_ids and applies them to causal and sliding-window masks alike (Gemma 3's local layers, Mistral or Qwen2
# with a sliding window). Attention soft-capping (Gemma 2) is not among them: no packed row for it.
MASKED_PACKING_MODEL_TYPES = (*VARLEN_MODEL_TYPES, "gemma3_text")


def packed_attention(model_config, remote_code: bool = False) -> str | None:
    """How a model keeps the examples of a packed row apart: "varlen" (studio's per-example attention), "masks"
    (transformers' block-diagonal masks), or None when its architecture declares neither: it trains on padded
    batches. `remote_code`: the model runs code from its repository (trust_remote_code with an auto_map), whose
    masks nobody here has checked."""
    if remote_code and getattr(model_config, "auto_map", None):
        return None
    if getattr(model_config, "attn_logit_softcapping", None):
        return None
    if supports_varlen_attention(model_config):
        return "varlen"
    return "masks" if getattr(model_config, "model_type", "") in MASKED_PACKING_MODEL_TYPES else None


def for_model(config: RunConfig, model_config) -> RunConfig:
    """The run's settings as they train this model: packing switched off where its architecture declares no packed
    attention (padded batches give the same losses, at the cost of the padding)."""
    if not config.packing:
        return config
    mode = packed_attention(model_config, remote_code=config.trust_remote_code)
    log.info("packed attention: %s (%s)", mode or "none, padded batches", getattr(model_config, "model_type", "?"))
    return config if mode else dataclasses.replace(config, packing=False)


def supports_varlen_attention(model_config) -> bool:
    if getattr(model_config, "model_type", "") not in VARLEN_MODEL_TYPES:
        return False
    if getattr(model_config, "_attn_implementation", None) not in (None, "sdpa", VARLEN_ATTENTION_NAME):
        return False  # e.g. flash_attention_2 chosen by the user already handles packed rows natively
    layer_types = getattr(model_config, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types):
        return False
    if getattr(model_config, "sliding_window", None) and getattr(model_config, "use_sliding_window", True):
        return False
    return True


def use_varlen_attention(model) -> None:
    """Switch a loaded model (and its sub-configs) to the per-example attention."""
    _register_varlen_attention()
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = VARLEN_ATTENTION_NAME


_registered = False


def _register_varlen_attention() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_ATTENTION_NAME, _varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION_NAME, _varlen_mask)
    _registered = True


def _varlen_mask(**kwargs):
    """No mask for unpadded rows (packed or single: boundaries come from position_ids); the usual SDPA mask for a
    padded batch, which then takes the plain SDPA path."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None and kwargs.get("q_length") == kwargs.get("kv_length"):
        return None
    return sdpa_mask(**kwargs)


_bounds_cache: list = [None, None]  # (position_ids tensor, its segment bounds): one host sync per forward


def _segment_bounds(position_ids) -> list[int]:
    """[0, start_2, ..., total]: where position_ids (shape (1, tokens)) restart, i.e. do not go up by one."""
    if _bounds_cache[0] is position_ids:
        return _bounds_cache[1]
    import torch

    pos = position_ids[0]
    starts = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1
    bounds = [0, *starts.tolist(), pos.shape[0]]
    _bounds_cache[0], _bounds_cache[1] = position_ids, bounds
    return bounds


def _varlen_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                           is_causal=None, **kwargs):
    """query (1, heads, tokens, dim), key/value (1, kv_heads, tokens, dim) -> (1, tokens, heads, dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if (attention_mask is not None or query.shape[0] != 1 or position_ids is None
            or query.shape[2] != key.shape[2] or position_ids.shape[-1] != query.shape[2]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if kwargs.get("sliding_window"):
        raise RuntimeError("studio's per-example attention does not do sliding windows; supports_varlen_attention "
                           "should have kept this model on sdpa")
    bounds = _segment_bounds(position_ids.reshape(1, -1) if position_ids.dim() != 2 else position_ids)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    outputs = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, scale=scaling, is_causal=True,
        enable_gqa=gqa) for a, b in zip(bounds[:-1], bounds[1:])]
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def make_collator(config: RunConfig, tokenizer):
    """Padding-free batches when packing is on (attention boundaries from position_ids), else pad to longest."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if config.packing:
        return _DropLength(DataCollatorWithFlattening(return_position_ids=True, separator_id=-100))
    return _DropLength(DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))


class _DropLength:
    """The 'length' column is for the sampler only; the model must not see it."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        return self.inner([{k: v for k, v in f.items() if k != "length"} for f in features])


# --- LoRA dropout on a CPU ---------------------------------------------------------------
def use_fast_dropout(model) -> int:
    """Swap peft's nn.Dropout on the LoRA inputs for FastDropout; returns how many were swapped."""
    import torch

    fast_dropout = fast_dropout_class()
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, layer in list(dropouts.items()):
                if type(layer) is torch.nn.Dropout and layer.p > 0:
                    dropouts[name] = fast_dropout(layer.p)
                    swapped += 1
    return swapped


@functools.cache
def fast_dropout_class():
    """Made on first use, so that importing this module (and studio.train) does not import torch."""
    import torch

    class FastDropout(torch.nn.Module):
        """Dropout whose mask comes from 16-bit uniform integers, four per 64-bit draw of the CPU generator.

        nn.Dropout on a CPU draws one random number per element (bernoulli_): with LoRA on every linear layer
        that is 7 masks per layer per step, 15% of a SmolLM2 step (profiled). Each element is still dropped
        independently with probability p (rounded to a multiple of 1/65536) and the rest scaled by 1/(1-p),
        as nn.Dropout does.
        """

        def __init__(self, p: float):
            super().__init__()
            self.p = p
            self.threshold = round(p * 65536) - 32768  # int16 values below it (p of them) are dropped

        def forward(self, x):
            if not self.training or self.p <= 0:
                return x
            n = x.numel()
            bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
            drop = bits.view(torch.int16)[:n].view(x.shape) < self.threshold
            return x.masked_fill(drop, 0.0).mul_(1.0 / (1.0 - self.p))

        def extra_repr(self) -> str:
            return f"p={self.p}"

    return FastDropout
