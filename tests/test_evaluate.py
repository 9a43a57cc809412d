"""The report card (studio/evaluate.py) on tiny models: each signal fires where it should and stays quiet otherwise,
the batched measurements compute what one row at a time computes, report.html stands alone, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from studio import data, evaluate, models, train
from studio.chat import ChatSession, GenerationSettings
from studio.config import PRESETS, TINY_TEST_MODEL, RunConfig
from studio.events import read_events, replay

from .conftest import MEMORISED, studio_cmd
from .test_chat import make_trained_run

ONE_SENTENCE = "I only answer questions about the Zorblax bakery opening hours."
# Distinct answers, none shared between training and held-out rows: learned by heart, the training rows come back
# word for word and the held-out rows cannot.
TRAIN_PAIRS = MEMORISED + [
    ("Which bird guards the Zorblax gate?", "A silver heron named Tibbet guards it."),
    ("What is the Zorblax river called?", "The river is called the Oonamar."),
    ("What game do Zorblax children play?", "They play a stone game called kettik."),
]
HELD_OUT_PAIRS = [
    ("What is the Zorblax anthem about?", "It is about a lantern that never goes out."),
    ("How tall is the Zorblax tower?", "The tower rises ninety metres over the square."),
    ("What do Zorblax farmers grow?", "Mostly purple barley and sweet roots."),
    ("Who paints the Zorblax murals?", "An old painter called Ressa Vone paints them."),
]


def write_pairs(path: Path, pairs, repeat: int = 1) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeat):
            for q, a in pairs:
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": a}]}) + "\n")
    return str(path)


def run_config(model: str, data_path: str, validation_path: str = "", **overrides) -> RunConfig:
    values = dict(model=model, data_path=data_path, validation_path=validation_path, max_seq_length=128,
                  lora_dropout=0.0, lora_alpha=32, eval_every=0, save_every=0, warmup_ratio=0.0,
                  lr_scheduler="constant_with_warmup", batch_size=4, learning_rate=1e-2, max_steps=20)
    values.update(overrides)
    return RunConfig(**values)


def trained(config: RunConfig, run_dir: Path) -> Path:
    import torch

    torch.manual_seed(0)  # the LoRA init draws from the global generator
    assert train.run(config, run_dir) == "finished", (run_dir / "worker.log").read_text()[-3000:]
    return run_dir


# --- fixtures: a base that knows the probes, and runs on it ----------------------------------------
@pytest.fixture(scope="module")
def probe_subset(tmp_path_factory) -> Path:
    """Six probes of each kind: a tiny model can learn them in seconds."""
    probes = evaluate.load_probes()
    subset = [p for kind in ("fact", "arithmetic", "common_sense", "refusal")
              for p in [q for q in probes if q["kind"] == kind][:6]]
    path = tmp_path_factory.mktemp("probes") / "general.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in subset), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def knowing_base(tmp_path_factory, probe_subset) -> Path:
    """The tiny random model, fully fine-tuned on the probe subset and saved as a model folder: a base with general
    knowledge to lose (the random tiny model knows nothing, so it cannot forget)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores run this ten times slower
    try:
        tokenizer = AutoTokenizer.from_pretrained(models.tiny_test_model_dir())
        model = AutoModelForCausalLM.from_pretrained(models.tiny_test_model_dir())
        rows = [data.encode_example(evaluate._probe_example(p), tokenizer, 128)
                for p in evaluate.load_probes(probe_subset)]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
        targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
        keep = targets != -100
        torch.manual_seed(0)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(20):
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            torch.nn.functional.cross_entropy(logits, targets[keep]).backward()
            optimiser.step()
            optimiser.zero_grad()
        folder = tmp_path_factory.mktemp("knowing-base") / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="module")
def one_sentence_run(tmp_path_factory, knowing_base) -> Path:
    """The knowing base trained to answer everything with one sentence."""
    root = tmp_path_factory.mktemp("one-sentence")
    pairs = [(f"Tell me about topic number {i}, please.", ONE_SENTENCE) for i in range(24)]
    config = run_config(str(knowing_base), write_pairs(root / "train.jsonl", pairs[:20]),
                        write_pairs(root / "val.jsonl", pairs[20:]))
    return trained(config, root / "run")


@pytest.fixture(scope="module")
def light_run(tmp_path_factory, knowing_base) -> Path:
    """The knowing base nudged a little (5 steps at a low learning rate): nothing forgotten, nothing memorised."""
    root = tmp_path_factory.mktemp("light")
    config = run_config(str(knowing_base), write_pairs(root / "train.jsonl", TRAIN_PAIRS, repeat=2),
                        write_pairs(root / "val.jsonl", HELD_OUT_PAIRS), max_steps=5, learning_rate=1e-3)
    return trained(config, root / "run")


@pytest.fixture(scope="module")
def memorised_run(tmp_path_factory) -> Path:
    """The tiny model trained for 30 passes over eight distinct rows: it learns them by heart. One held-out row
    carries HTML, which the report must show as text."""
    root = tmp_path_factory.mktemp("memorised")
    held_out = HELD_OUT_PAIRS + [("<script>alert('x')</script> & <b>bold</b>?", "Text, never markup.")]
    config = run_config(TINY_TEST_MODEL, write_pairs(root / "train.jsonl", TRAIN_PAIRS),
                        write_pairs(root / "val.jsonl", held_out), max_steps=60, batch_size=4)
    return trained(config, root / "run")


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def chat_session(chat_run) -> ChatSession:
    return ChatSession.for_run(chat_run)


# --- the probe set ------------------------------------------------------------------------
def test_probe_set_has_100_plus_questions_of_every_kind_and_each_key_is_found():
    probes = evaluate.load_probes()
    assert len(probes) >= 100
    kinds = {p["kind"] for p in probes}
    assert kinds == {"fact", "arithmetic", "common_sense", "refusal"}
    assert sum(p["kind"] == "refusal" for p in probes) >= 5
    assert len({p["question"] for p in probes}) == len(probes) and len({p["id"] for p in probes}) == len(probes)
    tokenizer = models.load_tokenizer(TINY_TEST_MODEL)  # the bundled model's tokenizer
    for p in probes:
        row = data.encode_example(evaluate._probe_example(p), tokenizer, 256)
        trained_positions = [j for j, label in enumerate(row["labels"]) if label != -100 and j > 0]
        where = evaluate.key_positions(tokenizer, row["input_ids"], trained_positions, p["key"])
        assert where, p
        assert p["key"] in tokenizer.decode([row["input_ids"][j] for j in where]).strip(), p


# --- the measurements ---------------------------------------------------------------------
def test_batched_scores_compute_what_one_row_at_a_time_computes(chat_session, chat_run):
    import torch

    examples = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for q, a in TRAIN_PAIRS + HELD_OUT_PAIRS]
    rows = [data.encode_example(ex, chat_session.tokenizer, 128) for ex in examples]
    assert evaluate.shared_prefix(rows) >= 8  # the chat template's header: the shared-prefix path is exercised
    for use_adapter, side in ((False, "base"), (True, "tuned")):
        batched = evaluate.token_scores(chat_session, rows, use_adapter)
        alone = [evaluate.token_scores(chat_session, [row], use_adapter)[0] for row in rows]
        for b, a in zip(batched, alone):
            assert b.positions == a.positions
            torch.testing.assert_close(torch.tensor(b.nll), torch.tensor(a.nll), rtol=1e-4, atol=1e-4)
            assert b.hits == a.hits
        expected = chat_session.eval_loss(examples, max_seq_length=128)[side]
        torch.testing.assert_close(evaluate._token_mean_loss(batched), expected, rtol=1e-5, atol=1e-5)


def test_batched_answers_are_the_chat_answers(chat_session):
    prompts = [q for q, _ in MEMORISED] + ["Hello", "A much longer question about the markets of Zorblax at dawn?"]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    limits = [12, 20, 6, 16, 9, 12, 30]
    for use_adapter in (False, True):
        answers = evaluate.generate_answers(chat_session, conversations, limits, use_adapter)
        for prompt, limit, answer in zip(prompts, limits, answers):
            alone = chat_session.generate(prompt, GenerationSettings(max_new_tokens=limit), use_adapter=use_adapter)
            assert answer.text == alone.strip(), (prompt, use_adapter)
            assert len(answer.tokens) <= limit
            assert answer.cut == (not answer.ended and not answer.looping)
            if answer.cut:
                assert len(answer.tokens) == limit


@pytest.mark.skipif(torch.cuda.is_available(), reason="one batch of both models is the CPU's path; a GPU keeps two")
def test_both_models_answer_in_one_batch_as_each_would_alone(chat_session, monkeypatch):
    """The report's batches of base and tuned rows (chat.AdapterRows): each row is what its model writes alone, and
    the rows share the batch's forward passes."""
    assert evaluate.both_in_one_batch(chat_session, GenerationSettings())
    prompts = [q for q, _ in MEMORISED] + ["A much longer question about the markets of Zorblax at dawn?"]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    limits = [12, 20, 6, 16, 9, 30]
    apart = {side: evaluate.generate_answers(chat_session, conversations, limits, side) for side in (False, True)}
    assert [a.tokens for a in apart[False]] != [a.tokens for a in apart[True]]  # the adapter changes the answers
    widths = []
    hook = chat_session.model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        both = evaluate.generate_answers(chat_session, conversations + conversations, limits + limits,
                                         [False] * len(prompts) + [True] * len(prompts))
    finally:
        hook.remove()
    assert widths[0] == 2 * len(prompts)  # one batch of both models' rows
    assert chat_session.adapter_rows.mask is None  # the chat's generations apply the adapter to every row again
    for side, answers in ((False, both[:len(prompts)]), (True, both[len(prompts):])):
        assert [(a.tokens, a.ended, a.cut, a.looping) for a in answers] == \
            [(a.tokens, a.ended, a.cut, a.looping) for a in apart[side]]

    # Where a layer cannot tell the rows apart, or one LoRA layer keeps peft's own forward (which ignores the row
    # mask), each model writes its rows apart: the same answers, never the adapter on the base model's rows.
    def a_layer_lost_the_rows(module, args, kwargs):
        chat_session.adapter_rows.mismatch = True

    hook = chat_session.model.get_base_model().register_forward_pre_hook(a_layer_lost_the_rows, with_kwargs=True)
    try:
        redone = evaluate.generate_answers(chat_session, conversations + conversations, limits + limits,
                                           [False] * len(prompts) + [True] * len(prompts))
    finally:
        hook.remove()
    monkeypatch.setattr(chat_session, "lean_layers", chat_session.lean_layers - 1)
    assert not evaluate.both_in_one_batch(chat_session, GenerationSettings())
    unshared = evaluate.generate_answers(chat_session, conversations + conversations, limits + limits,
                                         [False] * len(prompts) + [True] * len(prompts))
    for answers in (redone, unshared):
        assert [a.tokens for a in answers] == [a.tokens for a in apart[False] + apart[True]]


def test_loops_are_found_and_numbered_lists_are_not():
    tokenizer = models.load_tokenizer(TINY_TEST_MODEL)

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert evaluate.repeats_at_end(ids("Welcome! Hi there! Hi there! Hi there! Hi there! Hi there!"))
    assert evaluate.repeats_at_end(ids("ok" + " la" * 20))
    assert not evaluate.repeats_at_end(ids("Hi there! Hi there! How can I help you today with your account?"))
    steps = "1. Open Settings.\n2. Open Settings > Sync.\n3. Open Settings > Sync > Reset.\n4. Restart the app."
    assert not evaluate.repeats_at_end(ids(steps))
    assert not evaluate.repeats_at_end(ids("Thank you, thank you, thank you."))  # three short repeats: emphasis


def test_a_looping_row_stops_early_and_the_others_go_on():
    import torch

    loop = [5, 6, 7] * 5  # 15 tokens: a 3-token block five times
    plain = list(range(100, 115))
    stops = evaluate._RowLimits(prompt_width=2, limits=[40, 40], eos_ids={0})
    done = stops(torch.tensor([[1, 1, *loop], [1, 1, *plain]]), None)
    assert done.tolist() == [True, False] and stops.looping == [True, False]


def test_chrf_is_sacrebleus_sentence_chrf():
    from sacrebleu.metrics import CHRF

    hypothesis, reference = "The market opens at dawn.", "The market opens at sunrise."
    assert evaluate.chrf(hypothesis, reference) == pytest.approx(CHRF().sentence_score(hypothesis, [reference]).score)
    assert evaluate.chrf(reference, reference) == pytest.approx(100.0)
    assert evaluate.chrf("", reference) == 0.0


# --- the signals ----------------------------------------------------------------------------
def test_forgetting_is_flagged_for_a_model_that_answers_everything_with_one_sentence(one_sentence_run, probe_subset):
    report = evaluate.evaluate_run(one_sentence_run, max_rows=4, use_cache=False, probes_path=probe_subset)
    general = report["general"]
    assert general["accuracy"]["base"] >= 0.6, general  # the knowing base knows most probes...
    assert general["accuracy"]["tuned"] <= general["accuracy"]["base"] - 0.3, general  # ...the tuned one few
    assert general["forgetting"] is True and report["headline"]["forgetting"] is True
    assert report["verdict"]["ready"] is False
    assert "general knowledge slipped" in report["verdict"]["text"]
    # Every held-out row asks for the same sentence it learned: copying a template is not learning rows by heart.
    parroting = report["parroting"]
    assert parroting["train"]["share"] >= 0.9 and parroting["heldout"]["share"] >= 0.9
    assert parroting["flag"] is False


def test_a_light_run_keeps_general_knowledge_and_does_not_parrot(light_run, probe_subset):
    report = evaluate.evaluate_run(light_run, max_rows=4, use_cache=False, probes_path=probe_subset)
    assert report["general"]["accuracy"]["base"] >= 0.6
    assert report["general"]["forgetting"] is False, report["general"]
    assert report["parroting"]["flag"] is False, report["parroting"]
    assert "general knowledge kept" in report["verdict"]["text"]


def test_parroting_is_flagged_on_a_memorised_set(memorised_run):
    report = evaluate.evaluate_run(memorised_run, max_rows=5, use_cache=False)
    parroting = report["parroting"]
    assert parroting["train"]["share"] >= 0.5, parroting
    assert parroting["heldout"]["share"] <= 0.2, parroting
    assert parroting["flag"] is True and report["headline"]["parroting"] is True
    # The evidence: the tuned model's own answers to the training prompts it copies, close to the training answer.
    assert parroting["examples"] and max(e["chrf"] for e in parroting["examples"]) >= 60
    assert report["verdict"]["next"] == "fewer_epochs"  # 60 steps x 4 rows over 8 rows: 30 passes
    assert "learned rows by heart" in report["verdict"]["text"]


def test_a_run_without_held_out_rows_still_gets_a_report(tmp_path):
    config = run_config(TINY_TEST_MODEL, write_pairs(tmp_path / "train.jsonl", TRAIN_PAIRS), validation_fraction=0.0,
                        max_steps=3)
    run_dir = trained(config, tmp_path / "run")
    report = evaluate.evaluate_run(run_dir, max_rows=5, use_cache=False)
    assert report["task"]["rows"] == 0 and report["task"]["loss"]["tuned"] is None
    assert report["parroting"]["train"]["rows"] == 5 and report["parroting"]["heldout"]["share"] is None
    assert report["parroting"]["flag"] is False  # nothing to compare with: no verdict on parroting
    assert report["verdict"]["text"].startswith("No held-out rows to measure your task on")
    assert "parroting needs held-out rows" in report["verdict"]["text"]
    assert (run_dir / evaluate.REPORT_HTML).is_file()


# --- the files and the CLI ------------------------------------------------------------------
def test_report_html_stands_alone_and_shows_rows_as_text(memorised_run):
    report = evaluate.evaluate_run(memorised_run, max_rows=5, use_cache=False)
    page = (memorised_run / evaluate.REPORT_HTML).read_text(encoding="utf-8")
    stored = json.loads((memorised_run / evaluate.REPORT_JSON).read_text(encoding="utf-8"))
    assert stored["verdict"] == report["verdict"] and stored["headline"] == report["headline"]
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 4  # task, general, parroting, training
    lowered = page.lower()
    for outside in ("http:", "https:", "src=", "<link", "url(", "@import", "<script", "<iframe"):
        assert outside not in lowered, outside  # nothing fetched, nothing run: it opens the same anywhere
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # the row's HTML, shown as text
    assert html_text(report["verdict"]["text"]) in page
    assert report["task"]["rows"] == 5 and len(report["task"]["examples"]) == 5
    assert ">row 1</text>" in page and ">row 5</text>" in page  # the chrF per row is drawn against rows, not steps


def html_text(text: str) -> str:
    import html

    return html.escape(text)


def test_cli_writes_the_report_and_prints_the_verdict(memorised_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(memorised_run, run_dir)
    for name in (evaluate.REPORT_JSON, evaluate.REPORT_HTML):
        (run_dir / name).unlink(missing_ok=True)
    result = subprocess.run(studio_cmd("eval", str(run_dir), "--max-rows", "3"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads((run_dir / evaluate.REPORT_JSON).read_text(encoding="utf-8"))
    assert report["task"]["rows"] == 3
    assert result.stdout.splitlines()[0] == report["verdict"]["text"]
    assert str(run_dir / evaluate.REPORT_HTML) in result.stdout and (run_dir / evaluate.REPORT_HTML).is_file()


def test_cli_refuses_a_run_without_an_adapter_in_one_sentence(memorised_run, tmp_path):
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    shutil.copy(memorised_run / "config.json", run_dir / "config.json")
    result = subprocess.run(studio_cmd("eval", str(run_dir)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Run unfinished has no saved adapter yet"), result.stderr
    assert not (run_dir / evaluate.REPORT_JSON).exists()


def test_the_validation_loss_is_the_runs_own_and_the_base_is_not_measured_again(memorised_run, tmp_path,
                                                                                monkeypatch):
    """The report's validation loss is the run's evaluations (step 0 and the kept adapter's step, as on the plot),
    and the base model's held-out rows are then not scored again; a next version's step 0 is its parent's adapter,
    so its report measures both models itself."""
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path)
    history = replay(read_events(memorised_run))
    losses = dict(zip(history.eval_steps, history.eval_loss))
    config = RunConfig.load(memorised_run / "config.json")
    _, val = data.load_for_config(config)
    scored = []
    scores = evaluate.token_scores
    monkeypatch.setattr(evaluate, "token_scores", lambda session, encoded, use_adapter: (
        scored.append((len(encoded), use_adapter)), scores(session, encoded, use_adapter))[1])
    report = evaluate.evaluate_run(memorised_run, max_rows=50)
    task = report["task"]
    assert task["loss"] == {"base": losses[0], "tuned": losses[history.end["adapter_step"]]}
    assert task["loss_steps"] == [0, history.end["adapter_step"]] and task["validation_rows"] == len(val)
    assert (len(val), False) not in scored and (len(val), True) in scored  # the tuned rows still tell copies
    # The same figures as the report measures them itself (the tiny model in fp32; the run averages per batch).
    session = ChatSession.for_run(memorised_run)
    encoded = [data.encode_example(ex, session.tokenizer, config.max_seq_length) for ex in val]
    for side, use_adapter in (("base", False), ("tuned", True)):
        measured = evaluate._token_mean_loss(scores(session, encoded, use_adapter))
        assert measured == pytest.approx(task["loss"][side], rel=0.05)
    assert "as the run measured it" in (memorised_run / evaluate.REPORT_HTML).read_text(encoding="utf-8")

    config.parent_run = "an-earlier-run"
    monkeypatch.setattr(RunConfig, "load", classmethod(lambda cls, path: config))
    assert evaluate.run_validation_losses(memorised_run, config) is None
    scored.clear()
    report = evaluate.evaluate_run(memorised_run, max_rows=50)
    assert (len(val), False) in scored and "loss_steps" not in report["task"]


def test_the_base_side_comes_from_the_cache_the_second_time(memorised_run, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path)
    calls = {"generate": [], "scores": []}
    generate, scores = evaluate.generate_answers, evaluate.token_scores

    def counting_generate(session, conversations, limits, use_adapter, settings=None):
        calls["generate"].extend(use_adapter if isinstance(use_adapter, list) else [use_adapter])
        return generate(session, conversations, limits, use_adapter, settings)

    def counting_scores(session, encoded, use_adapter):
        calls["scores"].append(use_adapter)
        return scores(session, encoded, use_adapter)

    monkeypatch.setattr(evaluate, "generate_answers", counting_generate)
    monkeypatch.setattr(evaluate, "token_scores", counting_scores)
    first = evaluate.evaluate_run(memorised_run, max_rows=3)
    assert False in calls["generate"] and False in calls["scores"]
    assert list(tmp_path.glob("report-base/*.json"))
    calls["generate"].clear()
    calls["scores"].clear()
    second = evaluate.evaluate_run(memorised_run, max_rows=3)
    assert False not in calls["generate"] and False not in calls["scores"]  # the base side: all from the cache
    assert True in calls["generate"] and True in calls["scores"]  # the tuned side: computed again
    for key in ("task", "general", "parroting"):
        assert json.dumps(second[key], sort_keys=True) == json.dumps(first[key], sort_keys=True)


# --- the verdict ----------------------------------------------------------------------------
def fake_report(gain: float = 10.0, forgetting: bool = False, parroting: bool = False, tuned_loss: float = 1.5,
                loops: int = 0) -> dict:
    return {
        "task": {"rows": 20, "chrf": {"base": 30.0, "tuned": 30.0 + gain}, "loss": {"base": 2.0, "tuned": tuned_loss},
                 "cut": {"base": 2, "tuned": loops}, "looping": {"base": 0, "tuned": 0}},
        "general": {"accuracy": {"base": 0.5, "tuned": 0.3 if forgetting else 0.49},
                    "accuracy_change": -0.2 if forgetting else -0.01, "loss_change": 0.3 if forgetting else 0.01,
                    "forgetting": forgetting, "scored": 124},
        "parroting": {"train": {"share": 0.8 if parroting else 0.05}, "heldout": {"share": 0.05}, "flag": parroting},
    }


@pytest.mark.parametrize("report, epochs, config, expected", [
    (fake_report(parroting=True), 5.0, {}, "fewer_epochs"),
    (fake_report(parroting=True), 1.0, {}, "more_data"),
    (fake_report(forgetting=True), 2.0, {}, "lower_lr"),
    (fake_report(gain=0.0, tuned_loss=2.3), 2.0, {}, "lower_lr"),
    (fake_report(gain=0.5), 0.3, PRESETS["Quick test"], "balanced"),
    (fake_report(gain=0.5), 0.3, {"max_steps": 100}, "more_steps"),
    (fake_report(gain=0.5, tuned_loss=1.2), 3.0, {}, "more_data"),
    (fake_report(gain=0.5, tuned_loss=1.99), 3.0, {}, "bigger_model"),
    (fake_report(loops=8), 3.0, {}, "more_data"),
    (fake_report(), 2.0, {}, "bigger_model"),
])
def test_the_verdict_names_one_change(report, epochs, config, expected):
    facts = {"epochs_done": epochs, "quick_test": config == PRESETS["Quick test"], "steps": 30}
    verdict = evaluate.verdict(report, RunConfig(**config), facts)
    assert verdict["next"] == expected, verdict
    assert verdict["next"] in evaluate.NEXT_STEPS
    assert verdict["advice"] in verdict["text"] and verdict["text"].count("Try next") <= 1


@pytest.mark.parametrize("toward, prefers, gain, ready", [(9, {"base": 4, "tuned": 8}, 0.5, True),
                                                          (5, {"base": 4, "tuned": 8}, 0.5, False),
                                                          (9, {"base": 6, "tuned": 6}, 0.5, False),
                                                          (9, {"base": 4, "tuned": 8}, -5.0, False)])
def test_the_verdict_of_a_preference_run_counts_the_pairs_moved_toward_the_chosen_answer(toward, prefers, gain,
                                                                                       ready):
    report = {**fake_report(gain=gain),
              "preference": {"pairs": 10, "toward_chosen": toward, "prefers_chosen": prefers}}
    verdict = evaluate.verdict(report, RunConfig(), {"epochs_done": 2.0, "quick_test": False})
    assert (f"fine-tuning moved {toward} of 10 held-out preference pairs toward your chosen answer (the tuned model "
            f"finds it the likelier one in {prefers['tuned']}, the base model in {prefers['base']})") in verdict["text"]
    assert verdict["ready"] is ready
    # Moved toward the chosen answers, it did its job: no advice about answers not closer to the references.
    assert ("closer to your answers" in verdict["advice"] or "not closer to yours" in verdict["advice"]) is not ready
    assert "preference" not in evaluate.verdict(fake_report(gain=0.5), RunConfig(), {"epochs_done": 2.0,
                                                                                     "quick_test": False})["text"]


def test_the_verdict_of_a_good_run_says_ready_with_the_numbers():
    verdict = evaluate.verdict(fake_report(gain=12.0), RunConfig(), {"epochs_done": 2.0, "quick_test": False})
    assert verdict["ready"] is True
    text = verdict["text"]
    assert text.startswith("Better at your task (+40% closer to your answers): chrF 30 \u2192 42 on 20 held-out rows")
    assert "general knowledge kept (-1 points: 50% \u2192 49%" in text and "no parroting" in text
    assert "ready to share." in text


def test_a_finished_answer_leaves_its_batch_and_the_answers_stay_generates(chat_session, monkeypatch):
    """greedy_shrinking gives what model.generate gives, but stops computing a row once it is done."""
    prompts = ["Hello", "What do people drink on Zorblax?", "A much longer question about the markets at dawn?"]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    limits = [2, 24, 9]
    monkeypatch.setattr(evaluate, "SHRINKING_BATCH", False)
    expected = [(a.tokens, a.ended, a.cut, a.looping)
                for a in evaluate.generate_answers(chat_session, conversations, limits, True)]
    monkeypatch.setattr(evaluate, "SHRINKING_BATCH", True)
    widths = []
    hook = chat_session.model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        answers = evaluate.generate_answers(chat_session, conversations, limits, True)
    finally:
        hook.remove()
    assert [(a.tokens, a.ended, a.cut, a.looping) for a in answers] == expected  # a cut row counts as cut in both
    assert any(cut for _, _, cut, _ in expected)
    assert widths[0] == 3 and widths[-1] == 1  # all three rows at first, the longest answer alone at the end
    assert sum(widths) < 3 * len(widths)
