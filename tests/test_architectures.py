"""Every architecture in the model catalogue trains, chats and exports on a CPU, and packs its batches correctly.

The real models are gigabytes behind a network; their architectures are not. For each model_type the catalogue
lists, a tiny model is built from that architecture's config (2 layers, hidden size 64, the bundled tokenizer's
vocabulary) with the features that make the family differ (sliding-window layers, layers without rotary
embeddings, scaling multipliers, partial rotary, tied embeddings), so a user who picks a catalogue model meets no
unsupported-architecture crash in any of the three steps.
"""

from __future__ import annotations

import json

import pytest
import torch

from studio import models, packing, train
from studio.chat import ChatSession, GenerationSettings
from studio.config import RunConfig
from studio.events import read_events, replay
from studio.export import merge_adapter

from .conftest import MEMORISED, write_messages_jsonl

# The family traits of the real checkpoints, at toy size. Keys are transformers model_type names.
TRAITS: dict[str, dict] = {
    "llama": {},  # SmolLM2, Llama 3.2
    "qwen3": {"head_dim": 16},  # Qwen3: q/k norms
    "gemma3_text": {"head_dim": 16, "sliding_window": 4, "query_pre_attn_scalar": 16,
                    "layer_types": ["sliding_attention", "full_attention"]},  # Gemma 3: local and global layers
    "smollm3": {"no_rope_layers": [1, 0]},  # SmolLM3: every 4th layer without rotary embeddings
    "phi3": {"partial_rotary_factor": 0.75},  # Phi-4-mini: fused qkv and gate_up projections, partial rotary
    "granite": {"embedding_multiplier": 12.0, "attention_multiplier": 0.015625, "residual_multiplier": 0.22,
                "logits_scaling": 8.0},  # Granite 3: muP-style multipliers
    "mistral": {"sliding_window": None},  # Mistral 7B v0.3: no sliding window
}
# Gemma 2 is not in the catalogue: it stands for an architecture the packed path does not take (soft-capping).
UNPACKED = {"gemma2": {"head_dim": 16, "sliding_window": 4, "query_pre_attn_scalar": 16,
                       "attn_logit_softcapping": 50.0, "layer_types": ["sliding_attention", "full_attention"]}}
# How each packs: our per-example attention where attention is plain causal, transformers' block-diagonal masks
# (built from position_ids) where layers have sliding windows, padded batches where neither is declared.
PACKED_MODE = {"llama": "varlen", "qwen3": "varlen", "smollm3": "varlen", "phi3": "varlen", "granite": "varlen",
               "mistral": "varlen", "gemma3_text": "masks", "gemma2": None}


def test_every_catalogue_architecture_is_covered():
    assert {entry.architecture for entry in models.CATALOG} == set(TRAITS)


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(str(models.tiny_test_model_dir()))


def build_tiny(model_type: str, traits: dict, folder, tokenizer):
    """Save a 2-layer random model of `model_type` with the bundled tokenizer into folder; returns folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  tie_word_embeddings=True, **traits)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(TRAITS) + sorted(UNPACKED))
def tiny_model(request, tmp_path_factory, tokenizer):
    model_type = request.param
    folder = tmp_path_factory.mktemp(model_type)
    return model_type, build_tiny(model_type, {**TRAITS, **UNPACKED}[model_type], folder, tokenizer)


def test_packed_rows_give_the_logits_of_each_example_alone(tiny_model, tokenizer):
    """Where packing is declared for an architecture, a packed row (our per-example attention, or transformers'
    block-diagonal masks) computes exactly what each example computes alone; elsewhere training pads instead."""
    model_type, folder = tiny_model
    model = models.load_base_model(str(folder))
    mode = packing.packed_attention(model.config)
    assert mode == PACKED_MODE[model_type]
    if mode is None:
        return
    if mode == "varlen":
        packing.use_varlen_attention(model)
    lengths = [7, 12, 5]  # longer than Gemma's 4-token window: the window must be applied per example
    rows = [torch.randint(3, len(tokenizer), (n,)) for n in lengths]
    with torch.no_grad():  # no KV cache, as in training: with one, transformers does not look for packed rows
        alone = [model(input_ids=row[None], use_cache=False).logits[0] for row in rows]
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
        packed = model(input_ids=torch.cat(rows)[None], position_ids=position_ids, use_cache=False).logits[0]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)


def test_train_chat_and_export_on_cpu(tiny_model, tmp_path):
    model_type, folder = tiny_model
    data = write_messages_jsonl(tmp_path / "train.jsonl", 10)
    config = RunConfig(model=str(folder), data_path=str(data), max_steps=3, batch_size=2, max_seq_length=64,
                       learning_rate=1e-2, validation_fraction=0.2, eval_every=0, save_every=0, warmup_ratio=0.0)
    run_dir = tmp_path / "runs" / model_type
    assert train.run(config, run_dir) == "finished", (run_dir / "worker.log").read_text()[-3000:]
    history = replay(read_events(run_dir))
    assert history.train_steps == [1, 2, 3] and all(loss > 0 for loss in history.train_loss)
    log = (run_dir / "worker.log").read_text()
    expected = packing.packed_attention(models.load_config(str(folder)))
    assert f"packed attention: {expected or 'none, padded batches'}" in log

    session = ChatSession.for_run(run_dir)
    settings = GenerationSettings(max_new_tokens=5)
    tuned = session.generate(MEMORISED[0][0], settings)
    base = session.generate(MEMORISED[0][0], settings, use_adapter=False)
    assert isinstance(tuned, str) and isinstance(base, str)

    merged = merge_adapter(run_dir, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert json.loads((merged / "config.json").read_text())["model_type"] == model_type
    ids = session.encode([{"role": "user", "content": MEMORISED[0][0]}], settings)
    with torch.no_grad():  # the merged weights compute what base + adapter computes
        torch.testing.assert_close(plain(input_ids=ids).logits, session.model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_the_estimate_counts_padded_batches_where_packing_is_off(tmp_path, tokenizer):
    from studio.config import TINY_TEST_MODEL
    from studio.estimate import estimate_run

    data = str(write_messages_jsonl(tmp_path / "train.jsonl", 10))
    gemma2 = str(build_tiny("gemma2", UNPACKED["gemma2"], tmp_path / "gemma2", tokenizer))

    def memory(model: str, packing: bool) -> float:
        return estimate_run(RunConfig(model=model, data_path=data, packing=packing, batch_size=2)).memory_gb

    assert memory(TINY_TEST_MODEL, True) < memory(TINY_TEST_MODEL, False)  # packed rows hold no padding
    assert memory(gemma2, True) == memory(gemma2, False)  # trains padded either way
