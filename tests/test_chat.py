"""Chat: base vs fine-tuned on one loaded model, streaming, stop, multi-turn, batch comparison, loss, the CLI."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from studio import chat, models
from studio.chat import ChatSession, GenerationSettings
from studio.config import TINY_TEST_MODEL, RunConfig
from studio.errors import ConfigError, UserError
from studio.events import write_status

from .conftest import MEMORISED, studio_cmd, write_messages_jsonl

PROMPT, ANSWER = MEMORISED[1]  # a prompt from the training data, and its answer
SHORT = GenerationSettings(max_new_tokens=16)


def make_trained_run(tmp_path_factory) -> Path:
    """A tiny-model run trained on five memorised answers (about 10 s), built once per test session.

    45 steps of 2 rows at the highest learning rate (and alpha = 4 x rank): the tuned model then answers
    most training prompts word for word, while the random base model answers gibberish. The tokens
    after the answer vary with the CPU's thread count, so tests look for the answer only."""
    import torch

    from studio import train

    root = tmp_path_factory.getbasetemp() / "trained-chat-run"
    run_dir = root / "runs" / "memorised"
    if (run_dir / "adapter" / "adapter_config.json").is_file():
        return run_dir
    root.mkdir(parents=True, exist_ok=True)
    data = write_messages_jsonl(root / "train.jsonl", 20)
    config = RunConfig(model=TINY_TEST_MODEL, data_path=str(data), max_steps=45, learning_rate=1e-2, batch_size=2,
                       lora_alpha=32, max_seq_length=128, lora_dropout=0.0, validation_fraction=0.2, eval_every=0,
                       save_every=0, warmup_ratio=0.0, lr_scheduler="constant_with_warmup", run_name="memorised")
    torch.manual_seed(0)  # the LoRA init draws from the global generator: same adapter whatever ran before
    status = train.run(config, run_dir)
    assert status == "finished", (run_dir / "worker.log").read_text()[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory)


@pytest.fixture(scope="session")
def session(trained_run) -> ChatSession:
    return ChatSession.for_run(trained_run)


@pytest.fixture(scope="session")
def plain_base():
    """The base model loaded by plain transformers: no peft anywhere."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(models.tiny_test_model_dir()).eval()


def plain_generate(model, tokenizer, messages, settings: GenerationSettings) -> str:
    import torch

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=settings.max_new_tokens, do_sample=False,
                             repetition_penalty=settings.repetition_penalty, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


# --- base vs tuned -------------------------------------------------------------------------
def test_base_column_is_the_plain_base_model_and_tuned_differs(session, plain_base):
    messages = [{"role": "user", "content": PROMPT}]
    base, tuned = session.compare(PROMPT, SHORT)
    assert base == plain_generate(plain_base, session.tokenizer, messages, SHORT)
    assert tuned != base
    assert tuned.startswith(ANSWER), tuned  # the memorised answer
    # The adapter switch is restored after a base answer: the tuned answer is the same again.
    assert session.generate(PROMPT, SHORT, use_adapter=True) == tuned


def test_disabling_the_adapter_really_disables_it(session, plain_base):
    import torch

    ids = session.encode([{"role": "user", "content": PROMPT}], SHORT)
    with torch.no_grad():
        plain = plain_base(input_ids=ids).logits
        with session.model.disable_adapter():
            disabled = session.model(input_ids=ids).logits
        enabled = session.model(input_ids=ids).logits
    torch.testing.assert_close(disabled, plain, rtol=1e-5, atol=1e-5)
    assert (enabled - plain).abs().max() > 1e-2


def test_tuned_model_learned_the_training_answers(session, trained_run):
    examples = chat.training_examples(trained_run)
    losses = session.eval_loss(examples, max_seq_length=128)
    assert losses["tuned"] < 0.5 * losses["base"], losses
    table = chat.loss_table(losses)
    assert list(table["model"]) == ["Base", "Fine-tuned"]
    assert table["perplexity"].iloc[1] < table["perplexity"].iloc[0]


def test_lean_lora_forward_computes_what_peft_computes(session, trained_run):
    import torch
    from peft import PeftModel

    assert session.lean_layers == 14  # 7 linear layers x 2 blocks of the tiny model
    general = PeftModel.from_pretrained(models.load_base_model(TINY_TEST_MODEL), trained_run / "adapter").eval()
    ids = session.encode([{"role": "user", "content": PROMPT}], SHORT)
    with torch.no_grad():
        assert torch.equal(session.model(input_ids=ids).logits, general(input_ids=ids).logits)
        with session.model.disable_adapter(), general.disable_adapter():
            assert torch.equal(session.model(input_ids=ids).logits, general(input_ids=ids).logits)


# --- conversation and settings ---------------------------------------------------------------
def test_multi_turn_conversation_with_system_prompt(session, plain_base):
    settings = GenerationSettings(max_new_tokens=12, system_prompt="You answer about Zorblax.")
    messages = [{"role": "user", "content": MEMORISED[1][0]}, {"role": "assistant", "content": MEMORISED[1][1]},
                {"role": "user", "content": "And " + MEMORISED[2][0]}]
    text = session.tokenizer.decode(session.encode(messages, settings)[0])
    # Every turn, in order, after the system prompt, with the assistant's turn opened at the end.
    positions = [text.index(s) for s in ("You answer about Zorblax.", MEMORISED[1][0], MEMORISED[1][1],
                                         MEMORISED[2][0])]
    assert positions == sorted(positions)
    assert text.rstrip().endswith("assistant")
    full = [{"role": "system", "content": settings.system_prompt}, *messages]
    assert session.generate(messages, settings, use_adapter=False) == \
        plain_generate(plain_base, session.tokenizer, full, settings)
    with pytest.raises(UserError, match="end with a user message"):
        session.encode(messages[:2], settings)


def test_streaming_grows_and_sampling_repeats_with_the_same_seed(session):
    pieces = list(session.stream(PROMPT, GenerationSettings(max_new_tokens=24), use_adapter=True))
    assert len(pieces) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(pieces))
    hot = GenerationSettings(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=7)
    assert session.generate(PROMPT, hot) == session.generate(PROMPT, hot)


def test_an_answer_cut_inside_a_character_does_not_end_in_a_replacement_sign(session, monkeypatch):
    # Generation stops (max_new_tokens) after the first byte-level token of an emoji: the streamer then
    # flushes "Sure \ufffd"; the user should see "Sure ".
    ids = session.tokenizer.encode("Sure \U0001F600", add_special_tokens=False)
    cut = next(n for n in range(1, len(ids)) if session.tokenizer.decode(ids[:n]).endswith("\ufffd"))

    def fake_generate(input_ids, streamer, **kwargs):
        import torch

        streamer.put(input_ids)  # the prompt, skipped
        for token in ids[:cut]:
            streamer.put(torch.tensor([token]))
        streamer.end()

    monkeypatch.setattr(session.model, "generate", fake_generate)
    pieces = list(session.stream(PROMPT, SHORT, use_adapter=False))
    assert pieces[-1] == "Sure " and not any("\ufffd" in p for p in pieces)


def test_generation_settings_are_checked():
    with pytest.raises(ConfigError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    assert GenerationSettings(temperature=0).generate_kwargs()["do_sample"] is False
    assert GenerationSettings(temperature=0.7).generate_kwargs()["top_p"] == 0.9


# --- stop ----------------------------------------------------------------------------------
def test_stop_ends_a_long_generation_early(session):
    long = GenerationSettings(max_new_tokens=2000, repetition_penalty=1.0)
    started, pieces = time.time(), []
    for text in session.stream(PROMPT, long, use_adapter=True):
        pieces.append(text)
        if len(pieces) == 2:
            threading.Timer(0.05, session.stop).start()
    tokens = len(session.tokenizer(pieces[-1], add_special_tokens=False)["input_ids"])
    assert tokens < 1000 and time.time() - started < 20
    # A stop flag of the caller's own works too, and a closed stream releases the model for the next one.
    flag = threading.Event()
    flag.set()
    assert session.generate(PROMPT, long, stop_event=flag) == ""
    stream = session.stream(PROMPT, long)
    next(stream)
    stream.close()
    assert session.generate(PROMPT, SHORT) == session.generate(PROMPT, SHORT)


# --- batch comparison ------------------------------------------------------------------------
def test_batch_compare_table(session, trained_run):
    examples = chat.validation_examples(trained_run)
    assert examples, "validation_fraction 0.2 of 20 rows keeps 4"
    items = [chat.prompt_and_reference(ex) for ex in examples][:2]
    table = session.batch_compare(items, SHORT)
    assert list(table.columns) == ["prompt", "reference", "base", "tuned"]
    assert len(table) == 2
    assert table["reference"].iloc[0] in {a for _, a in MEMORISED}
    assert (table["base"] != table["tuned"]).all()


def test_prompt_list_from_txt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("First question?\n\n  Second one  \n", encoding="utf-8")
    items = chat.read_prompt_list(path)
    assert [m[-1]["content"] for m, _ in items] == ["First question?", "Second one"]
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no prompts"):
        chat.read_prompt_list(tmp_path / "empty.txt")


# --- who may load a model ----------------------------------------------------------------------
def test_refuses_while_a_run_trains_on_the_only_gpu(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    busy = runs / "busy"
    busy.mkdir(parents=True)
    RunConfig(model=TINY_TEST_MODEL).save(busy / "config.json")
    write_status(busy, status="running", pid=os.getpid())  # this live process stands in for the worker
    chat.ensure_gpu_free(runs)  # CPU: chat and training may share
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    with pytest.raises(UserError, match="training on the GPU"):
        chat.ensure_gpu_free(runs)


def test_run_without_adapter_is_refused_in_one_sentence(tmp_path):
    run = tmp_path / "running"
    run.mkdir()
    RunConfig(model=TINY_TEST_MODEL).save(run / "config.json")
    write_status(run, status="running")
    with pytest.raises(UserError, match="no saved adapter yet"):
        ChatSession.for_run(run)
    with pytest.raises(UserError, match="does not exist"):
        ChatSession.for_run(tmp_path / "nope")


# --- CLI -----------------------------------------------------------------------------------
def _cli(*args, cwd=None):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(studio_cmd("chat", *args), capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
                          check=False)


def test_cli_prints_both_answers(session, trained_run):
    out = _cli(str(trained_run), "--prompt", PROMPT, "--max-new-tokens", "16")
    assert out.returncode == 0, out.stderr
    base, tuned = session.compare(PROMPT, SHORT)
    assert out.stdout == f"Base:\n{base.strip()}\n\nFine-tuned:\n{tuned.strip()}\n"


def test_cli_without_a_run_chats_with_the_base_model(tmp_path, capsys):
    # In-process (the subprocess path is covered above): saves a second start-up of torch.
    code = chat.main(["--model", TINY_TEST_MODEL, "--prompt", "Hi", "--max-new-tokens", "4",
                      "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Base:\n") and "Fine-tuned" not in out
    assert chat.main([str(tmp_path), "--model", TINY_TEST_MODEL, "--prompt", "Hi"]) == 1
    assert capsys.readouterr().err.startswith("Error: Give either a run folder or --model")


def test_cli_user_errors_are_one_sentence(tmp_path):
    out = _cli(str(tmp_path / "missing"), "--prompt", "Hi")
    assert out.returncode == 1
    assert out.stderr.startswith("Error: The run folder") and "Traceback" not in out.stderr
    assert out.stdout == ""
