"""The fast training path gives the same numbers as the plain one.

Padding-free batches lay examples end to end in one row; the per-example attention, the trained-positions-only
loss and the tokenised-data cache must change speed, never results. Tiny random models (Llama as SmolLM2, Qwen2)
with the bundled tokenizer, so a wrong boundary shows up as a different loss.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import DataCollatorWithFlattening

from studio import models, packing, train
from studio.config import TINY_TEST_MODEL, RunConfig
from studio.data import encode_example

from .conftest import write_messages_jsonl

CONVERSATIONS = [
    [("What colour is the sky on Zorblax?", "On Zorblax the sky is bright green.")],
    [("Who runs the bakery?", "Mira Quell runs it, with her two brothers and a very old oven."),
     ("Since when?", "Since the second moon rose, which is a long time on Zorblax.")],
    [("Hi", "Hello!")],
    [("Tell me about the market.", "It opens at dawn and sells blue tea, green bread, seven kinds of moon salt and "
      "the loudest parrots of the southern hemisphere, all of them for sale.")],
]


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(TINY_TEST_MODEL)


@pytest.fixture(scope="module")
def features(tokenizer):
    rows = []
    for turns in CONVERSATIONS:
        messages = []
        for question, answer in turns:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append(encode_example({"messages": messages}, tokenizer, 512, train_on_answers_only=True))
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) == len(lengths), lengths  # different lengths, or boundaries are not exercised
    return rows


def llama(tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models.tiny_test_model_dir(), dtype=torch.float32,
                                                 attn_implementation="sdpa")
    # As in training (build_model): with a KV cache transformers does not look for packed rows at all.
    model.config.use_cache = False
    return model.eval()


def qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, initializer_range=0.2, attn_implementation="sdpa",
                         use_cache=False)
    return Qwen2ForCausalLM(config).eval()


def sum_and_count(model, feature) -> tuple[torch.Tensor, int]:
    """Summed next-token loss of one example on its own (no packing, no mask), and how many tokens it covers."""
    ids = torch.tensor([feature["input_ids"]])
    labels = torch.tensor([feature["labels"]])
    logits = model(input_ids=ids).logits[0, :-1]
    targets = labels[0, 1:]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def packed_batch(features):
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)([dict(f) for f in features])


@pytest.mark.parametrize("make_model", [llama, qwen2], ids=["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "varlen"])
def test_packed_loss_is_the_token_mean_of_the_examples_alone(tokenizer, features, make_model, attention):
    model = make_model(tokenizer)
    with torch.no_grad():
        parts = [sum_and_count(model, f) for f in features]
        expected = sum(s for s, _ in parts) / sum(n for _, n in parts)
        if attention == "varlen":
            assert packing.supports_varlen_attention(model.config)
            packing.use_varlen_attention(model)
        packing._bounds_cache[:] = [None, None]
        packed = model(**packed_batch(features)).loss
    assert packed.item() == pytest.approx(expected.item(), rel=1e-5)
    if attention == "varlen":  # the per-example path ran, cutting at the examples' boundaries
        lengths = [len(f["input_ids"]) for f in features]
        assert packing._bounds_cache[1] == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    # ...and not by luck: without the restarting position_ids the examples would see each other.
    batch = packed_batch(features)
    batch.pop("position_ids")
    with torch.no_grad():
        leaked = model(**batch).loss
    assert abs(leaked.item() - expected.item()) > 1e-3


def test_varlen_attention_matches_per_example_logits_and_gradients(tokenizer, features):
    from peft import get_peft_model

    def lora_model():
        torch.manual_seed(0)
        model = get_peft_model(llama(tokenizer), models.lora_config(RunConfig(lora_dropout=0.0)))
        for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter do something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        return model

    alone = lora_model()
    total, count = torch.zeros(()), 0
    for f in features:
        s, n = sum_and_count(alone, f)
        total, count = total + s, count + n
    (total / count).backward()

    packed = lora_model()
    packing.use_varlen_attention(packed.get_base_model())
    packed(**packed_batch(features)).loss.backward()

    grads_alone = {n: p.grad for n, p in alone.named_parameters() if p.requires_grad}
    grads_packed = {n: p.grad for n, p in packed.named_parameters() if p.requires_grad}
    assert grads_alone.keys() == grads_packed.keys() and grads_alone
    for name in grads_alone:
        torch.testing.assert_close(grads_packed[name], grads_alone[name], rtol=1e-4, atol=1e-6, msg=name)


def test_trained_positions_only_loss_equals_the_full_loss(tokenizer, features, tmp_path):
    from transformers import TrainingArguments

    model = llama(tokenizer)
    trainer_class = train.studio_trainer_class()
    trainer = trainer_class(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                report_to="none"))
    batch = packed_batch(features)
    with torch.no_grad():
        full = model(**batch).loss
        fast, outputs = trainer.compute_loss(model, batch, return_outputs=True)
        n_trained = int((batch["labels"][:, 1:] != -100).sum())
        assert outputs.logits.shape == (n_trained, len(tokenizer))  # only the trained positions
        # With gradient accumulation the Trainer passes the step's trained-token count; the sum is divided by it.
        scaled = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(2 * n_trained))
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    assert scaled.item() == pytest.approx(full.item() / 2, rel=1e-5)
    assert trainer.loss_is_scaled_for_ga is True


def test_varlen_attention_is_kept_off_where_it_would_be_wrong():
    from transformers import MistralConfig, Qwen2Config

    assert packing.supports_varlen_attention(Qwen2Config(use_sliding_window=False, sliding_window=4096))
    assert not packing.supports_varlen_attention(Qwen2Config(use_sliding_window=True, sliding_window=4096,
                                                           max_window_layers=0))
    assert not packing.supports_varlen_attention(MistralConfig(sliding_window=4096))
    assert packing.supports_varlen_attention(MistralConfig(sliding_window=None))
    gemma = dataclasses.make_dataclass("Cfg", [("model_type", str, "gemma2")])()
    assert not packing.supports_varlen_attention(gemma)


def test_padded_batches_still_use_the_mask(tokenizer, features):
    """A padded batch (packing off) through a model switched to varlen takes the masked SDPA path."""
    from transformers import DataCollatorForSeq2Seq

    model = llama(tokenizer)
    with torch.no_grad():
        parts = [sum_and_count(model, f) for f in features]
        expected = sum(s for s, _ in parts) / sum(n for _, n in parts)
        packing.use_varlen_attention(model)
        batch = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)(
            [dict(f) for f in features])
        padded = model(**batch).loss
    assert padded.item() == pytest.approx(expected.item(), rel=1e-5)


def test_tokenised_data_is_cached_per_file_and_settings(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path / "cache")
    data_path = write_messages_jsonl(tmp_path / "train.jsonl", 20)
    config = RunConfig(model=TINY_TEST_MODEL, data_path=str(data_path), validation_fraction=0.2, max_seq_length=128)
    first_train, first_val = train.load_datasets(config, tokenizer)
    entries = list((tmp_path / "cache" / "tokenized").iterdir())
    assert len(entries) == 1 and (entries[0] / "train").is_dir()

    calls = []
    monkeypatch.setattr(train, "encode_dataset", lambda *a, **k: calls.append(a) or pytest.fail("not cached"))
    again_train, again_val = train.load_datasets(config, tokenizer)
    assert again_train.to_dict() == first_train.to_dict() and again_val.to_dict() == first_val.to_dict()
    assert not calls
    monkeypatch.undo()
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path / "cache")

    # Anything the tokens depend on makes a new entry: the cut-off, the masking, the file's bytes.
    train.load_datasets(dataclasses.replace(config, max_seq_length=96), tokenizer)
    train.load_datasets(dataclasses.replace(config, train_on_answers_only=False), tokenizer)
    write_messages_jsonl(data_path, 25)
    changed, _ = train.load_datasets(config, tokenizer)
    assert len(changed) == 20  # 25 rows, a fifth held out
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 4


def run_tuner(tuner, monkeypatch, seconds_per_step, quick, steps: int) -> list[int]:
    """Drive the tuner through `steps` steps of 100 tokens: seconds_per_step(threads, step) -> seconds, and
    quick(step) -> what the matrix-multiply check says at that step."""
    clock = {"t": 0.0, "step": 0}
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(tuner, "quick_pick", lambda: quick(clock["step"]))

    class State:
        num_input_tokens_seen = 0

    state, used = State(), []
    for step in range(steps):
        clock["step"] = step
        tuner.on_step_begin(None, state, None)
        used.append(tuner.current)
        clock["t"] += seconds_per_step(tuner.current, step)
        state.num_input_tokens_seen += 100
        tuner.on_step_end(None, state, None)
    return used


@pytest.fixture
def tuner(monkeypatch):
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    tuner = train.CpuThreadTuner(candidates=[2, 1])
    tuner.set_to = set_to
    return tuner


def test_thread_tuner_follows_the_quick_check_when_the_steps_agree(tuner, monkeypatch):
    busy = lambda n, step: 3.0 if n == 2 else 1.0  # noqa: E731 - one thread 3x faster than two
    assert run_tuner(tuner, monkeypatch, busy, lambda step: 1, 40) == [1] * 40
    tuner.on_train_end(None, None, None)
    assert tuner.set_to[-1] == tuner.default


def test_thread_tuner_corrects_a_fooled_quick_check_within_one_check(tuner, monkeypatch):
    idle = lambda n, step: 0.5 if n == 2 else 1.0  # noqa: E731 - two threads twice as fast
    used = run_tuner(tuner, monkeypatch, idle, lambda step: 1 if step == 0 else 2, 40)
    assert used[:8] == [1] * 8 and used[8:] == [2] * 32  # the check at step 8 names 2; its step confirms


def test_thread_tuner_trusts_real_steps_over_the_quick_check(tuner, monkeypatch):
    idle = lambda n, step: 0.5 if n == 2 else 1.0  # noqa: E731
    used = run_tuner(tuner, monkeypatch, idle, lambda step: 2 if step == 0 else 1, 42)  # the check is wrong
    assert used.count(1) == 5 and used[-1] == 2  # one step every 8 is spent to find out, and 2 stays


def test_thread_tuner_looks_again_when_the_machine_gets_busy(tuner, monkeypatch):
    # Idle for 20 steps (two threads twice as fast), then busy (two threads 3x slower than one).
    def seconds(n, step):
        return (0.5 if n == 2 else 1.0) if step < 20 else (3.0 if n == 2 else 1.0)

    used = run_tuner(tuner, monkeypatch, seconds, lambda step: 2 if step < 20 else 1, 40)
    assert used[:20] == [2] * 20
    assert used.index(1) <= 23 and used[24:] == [1] * 16  # two slow steps, then the check, then it stays


def test_thread_tuner_quick_pick_returns_a_candidate():
    tuner = train.CpuThreadTuner()
    assert tuner.quick_pick(repeats=1) in tuner.candidates
    assert torch.get_num_threads() == tuner.default


def test_fast_dropout_drops_p_independently_and_scales_like_nn_dropout():
    dropout = packing.fast_dropout_class()(0.05)
    x = torch.ones(1000, 577, requires_grad=True)  # an element count that is not a multiple of 4
    y = dropout(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.95, abs=0.003)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.95))
    assert abs(torch.corrcoef(torch.stack([kept[:, :-1].flatten().float(),
                                           kept[:, 1:].flatten().float()]))[0, 1].item()) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.95)  # the gradient flows through the kept elements only
    assert not torch.equal(dropout(x).detach() != 0, kept)  # a fresh mask every call
    dropout.eval()
    assert dropout(x) is x


def test_build_model_swaps_lora_dropout_on_cpu(tiny_data):
    model = train.build_model(RunConfig(model=TINY_TEST_MODEL, data_path=str(tiny_data), lora_dropout=0.1), "lora32")
    kinds = {type(d).__name__ for m in model.modules() if isinstance(getattr(m, "lora_dropout", None),
                                                                      torch.nn.ModuleDict)
             for d in m.lora_dropout.values()}
    assert kinds == {"FastDropout"}


def test_gradient_checkpointing_only_when_the_activations_would_not_fit(monkeypatch):
    from types import SimpleNamespace

    from transformers import Qwen2Config

    qwen_1_5b = SimpleNamespace(config=Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                                   vocab_size=151936))
    config = RunConfig(batch_size=4, max_seq_length=2048)
    assert not train.needs_gradient_checkpointing(config, "qlora", qwen_1_5b)  # no CUDA: time is what is short
    assert train.needs_gradient_checkpointing(RunConfig(gradient_checkpointing=True), "lora32", qwen_1_5b)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    free = {"bytes": 78 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (free["bytes"], 80 * 2**30))
    # About 6 MB a token: a full 4 x 2048 step (~49 GB) is more than 60% of 78 GB; 4 chats of 600 tokens are not.
    assert train.needs_gradient_checkpointing(config, "qlora", qwen_1_5b)
    assert not train.needs_gradient_checkpointing(config, "qlora", qwen_1_5b, step_tokens=2400)
    free["bytes"] = 8 * 2**30
    assert train.needs_gradient_checkpointing(config, "qlora", qwen_1_5b, step_tokens=2400)


def test_longest_step_tokens():
    lengths = [10, 500, 30, 400, 20]
    assert train.longest_step_tokens(RunConfig(batch_size=2), lengths) == 900  # packed: the two longest
    assert train.longest_step_tokens(RunConfig(batch_size=2, packing=False), lengths) == 1000  # padded to 500


def test_cache_key_follows_exactly_the_tokenised_data_fields(tokenizer, tmp_path, monkeypatch):
    data_path = write_messages_jsonl(tmp_path / "train.jsonl", 5)
    config = RunConfig(model=TINY_TEST_MODEL, data_path=str(data_path))
    key = train.tokenized_cache_key(config, tokenizer)
    changed = {"validation_fraction": 0.3, "seed": 7, "prompt_column": "q", "response_column": "a",
               "system_column": "s", "text_column": "t", "max_seq_length": 64, "train_on_answers_only": False,
               "trust_remote_code": True, "model": "other/model",
               "system_prompt": "You answer as the clinic's front desk.", "objective": "sft"}
    assert set(changed) == set(train.TOKENIZED_DATA_FIELDS) - {"data_path", "validation_path", "corrections_path"}
    for name, value in changed.items():
        assert train.tokenized_cache_key(dataclasses.replace(config, **{name: value}), tokenizer) != key, name
    # Files count by their bytes: a next version's corrections, and a change in them.
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text('{"messages": [{"role": "user", "content": "Q?"}], "answer": "A.", "correction": "B."}\n')
    with_corrections = train.tokenized_cache_key(dataclasses.replace(config, corrections_path=str(corrections)),
                                                 tokenizer)
    assert with_corrections != key
    corrections.write_text('{"messages": [{"role": "user", "content": "Q?"}], "answer": "A.", "correction": "C."}\n')
    assert train.tokenized_cache_key(dataclasses.replace(config, corrections_path=str(corrections)),
                                     tokenizer) != with_corrections
    for name, value in {"learning_rate": 1e-3, "lora_rank": 4, "epochs": 3.0, "packing": False}.items():
        assert train.tokenized_cache_key(dataclasses.replace(config, **{name: value}), tokenizer) == key, name

    # The code that encodes rows is the whole studio.data package, not its __init__ alone: a change in any of its
    # modules must not reuse stale tokens.
    from studio import data

    package = tmp_path / "data"
    package.mkdir()
    (package / "__init__.py").write_text("from .template import *\n")
    (package / "template.py").write_text("CUT = 1\n")
    monkeypatch.setattr(data, "__file__", str(package / "__init__.py"))
    before = train.tokenized_cache_key(config, tokenizer)
    (package / "template.py").write_text("CUT = 2\n")
    assert train.tokenized_cache_key(config, tokenizer) != before


def test_packing_is_switched_off_where_no_packed_attention_is_declared():
    from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig

    config = RunConfig(model=TINY_TEST_MODEL, trust_remote_code=True)
    assert packing.packed_attention(LlamaConfig()) == "varlen"
    assert packing.packed_attention(Gemma3TextConfig()) == "masks"  # sliding windows: transformers' masks
    assert packing.packed_attention(Gemma2Config()) is None  # soft-capping
    remote = LlamaConfig(auto_map={"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    assert packing.packed_attention(remote) == "varlen"  # its own code runs only with trust_remote_code
    assert packing.packed_attention(remote, remote_code=True) is None
    assert packing.for_model(config, remote).packing is False
    assert packing.for_model(config, Gemma2Config()).packing is False
    assert packing.for_model(config, Gemma3TextConfig()) is config
