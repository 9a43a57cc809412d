"""Preference training (DPO, ORPO through TRL) on the tiny model: the reward margin rises, the adapter is saved,
the CLI stays quiet, and a preference goal on data without pairs is refused before anything starts."""

import json
import subprocess

import pytest

from studio import data, train
from studio.config import RunConfig
from studio.errors import ConfigError
from studio.events import read_events

from .conftest import studio_cmd, write_messages_jsonl
from .test_train import tiny_config

# Sixteen pairs that share no wording (the split keeps reworded copies on one side, and these must split), each
# with a full chosen answer and a curt rejected one.
PAIRS = [
    ("Why is the sea salty?", "Rivers carry dissolved minerals into it, and evaporation leaves the salt behind."),
    ("How do I tune a violin?", "Turn each peg gently until the string matches its note on a tuner: G, D, A, E."),
    ("What makes winter mornings dark?", "The tilt of the Earth keeps our hemisphere facing away from the Sun."),
    ("Should bread dough rest?", "Yes: resting lets gluten relax and the yeast produce gas, so the loaf rises."),
    ("Where can I find old maps?", "Try your city archive, a university library, or a national map collection."),
    ("Who keeps a lighthouse running today?", "Mostly automatic lamps, checked now and then by coastal crews."),
    ("Do honey bees sleep?", "They do: foragers rest at night, antennae drooping, for several hours."),
    ("Why does the Moon change shape?", "We see different parts of its sunlit half as it circles the Earth."),
    ("Which chess opening suits beginners?", "The Italian Game: develop knights and bishops, castle early."),
    ("Are wool socks good for hiking?", "Merino wool keeps feet warm when wet and resists odour over long days."),
    ("What causes thunder?", "Lightning heats air so fast that it expands explosively, which we hear as a boom."),
    ("How many folds make a paper crane?", "Around twenty, starting from a square base and a bird base."),
    ("How did steam trains move?", "Burning coal boiled water; the steam pushed pistons that turned the wheels."),
    ("When should tulips be planted?", "In autumn, six weeks before the ground freezes, pointy end up."),
    ("Can volcanoes be predicted?", "Partly: swelling ground, small quakes and gas changes often come first."),
    ("Where do coffee beans grow?", "On shrubs in warm highlands near the equator, inside red cherries."),
]


def write_pairs(path, n: int = 16):
    with open(path, "w", encoding="utf-8") as f:
        for prompt, chosen in PAIRS[:n]:
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": "No."}) + "\n")
    return path


def preference_config(path, **overrides) -> RunConfig:
    values = dict(objective="dpo", max_steps=8, learning_rate=5e-3, logging_every=1, eval_every=4, seed=0,
                  validation_fraction=0.2, preference_beta=0.1)
    values.update(overrides)
    return tiny_config(path, **values)


def figures(run_dir, kind: str, name: str) -> list[float]:
    return [e[name] for e in read_events(run_dir) if e["type"] == kind and e.get(name) is not None]


def test_dpo_raises_the_reward_margin(tmp_path):
    # Seeded; run three times in a row when written: each rose from 0.0 to about 3.2 in 8 steps (validation pairs:
    # 0.0 before training, 0.85 at step 4, 1.19 at the end).
    run_dir = tmp_path / "run"
    assert train.run(preference_config(write_pairs(tmp_path / "pairs.jsonl")), run_dir) == "finished"
    margins = figures(run_dir, "log", "reward_margin")
    assert len(margins) == 8 and margins[-1] > margins[0] + 1.0, margins
    assert figures(run_dir, "log", "reward_accuracy")[-1] == 1.0
    evals = figures(run_dir, "eval", "reward_margin")  # before training, at step 4 and at the end
    assert len(evals) == 3 and evals[-1] > evals[0], evals
    start = next(e for e in read_events(run_dir) if e["type"] == "start")
    assert start["objective"] == "dpo"
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "ref").exists()  # DPO's reference
    # The report card counts the held-out pairs fine-tuning moved toward the chosen answer (DPO's reward accuracy on
    # pairs it never saw), and those each model finds the chosen answer likelier per token: measured 3 of 3, and
    # 3 against the base model's 2.
    from studio import evaluate

    report = evaluate.evaluate_run(run_dir, use_cache=False, check_gpu=False)
    preference = report["preference"]
    assert preference["pairs"] == report["task"]["validation_rows"] > 0
    assert preference["toward_chosen"] == preference["pairs"]
    assert preference["prefers_chosen"]["tuned"] >= preference["prefers_chosen"]["base"]
    assert f"on {preference['pairs']} of them" in (run_dir / evaluate.REPORT_HTML).read_text()
    from studio import export

    merged = export.merge_adapter(run_dir, tmp_path / "merged")  # exported like any run's adapter
    assert any(merged.glob("*.safetensors"))


def test_orpo_trains_and_saves_the_adapter(tmp_path):
    run_dir = tmp_path / "run"
    config = preference_config(write_pairs(tmp_path / "pairs.jsonl"), objective="orpo", max_steps=4, eval_every=0)
    assert train.run(config, run_dir) == "finished"
    losses = figures(run_dir, "log", "loss")
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert len(figures(run_dir, "log", "reward_margin")) == 4
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_automatic_goal_trains_preference_files_with_dpo_and_supervised_says_it_uses_the_chosen(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    assert data.objective_of(RunConfig(data_path=str(pairs))).name == "dpo"
    plain = write_messages_jsonl(tmp_path / "plain.jsonl", 10)
    assert data.objective_of(RunConfig(data_path=str(plain))).name == "sft"
    train_rows, _ = data.load_examples(RunConfig(data_path=str(pairs), objective="sft"))
    assert isinstance(train_rows[0], data.Preference)  # a Chat of the chosen answer for supervised training
    assert data.encode_example(train_rows[0].chosen_chat(), _tokenizer(), 128) == \
        data.encode_example(train_rows[0], _tokenizer(), 128)
    assert data.formats.PREFERENCE_NOTE in data.load_data(pairs).notes


def _tokenizer():
    from studio import models
    from studio.config import TINY_TEST_MODEL

    return models.load_tokenizer(TINY_TEST_MODEL)


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_a_preference_goal_on_plain_data_is_refused_before_the_run(tmp_path, objective):
    config = tiny_config(write_messages_jsonl(tmp_path / "plain.jsonl", 10), objective=objective)
    with pytest.raises(ConfigError, match="preference pairs"):
        data.load_examples(config)  # what the Train tab checks before it starts a process
    config_path = tmp_path / "config.json"
    config.save(config_path)
    out = subprocess.run(studio_cmd("train", str(config_path), "--runs-dir", str(tmp_path / "runs")),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "Supervised" in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder left behind


def test_corrections_train_as_pairs_in_a_preference_run(tmp_path):
    from studio import feedback

    corrections = tmp_path / "corrections.jsonl"
    mark = feedback.Feedback(messages=[{"role": "user", "content": "Capital of Zorblax?"}], answer="Paris.",
                             correction="Zorbton is the capital.")
    corrections.write_text(json.dumps(mark.to_dict()) + "\n")
    config = RunConfig(data_path=str(write_pairs(tmp_path / "pairs.jsonl")), objective="dpo",
                       corrections_path=str(corrections), validation_fraction=0.2)
    train_rows, val_rows = data.load_examples(config)
    assert train_rows[-1] == data.Preference([{"role": "user", "content": "Capital of Zorblax?"},
                                              {"role": "assistant", "content": "Zorbton is the capital."}], "Paris.")
    assert all(isinstance(e, data.Preference) for e in train_rows + val_rows)


def test_a_dpo_run_from_the_command_line_keeps_stderr_clean(tmp_path):
    config_path = tmp_path / "config.json"
    preference_config(write_pairs(tmp_path / "pairs.jsonl"), max_steps=2, eval_every=0).save(config_path)
    out = subprocess.run(studio_cmd("train", str(config_path), "--runs-dir", str(tmp_path / "runs")),
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    run_dir = out.stdout.strip()
    assert len(out.stdout.strip().splitlines()) == 1 and figures(run_dir, "log", "reward_margin")


def test_the_estimate_counts_both_answers_and_dpos_reference_pass(tmp_path, monkeypatch):
    from studio import estimate

    monkeypatch.setattr(estimate, "measured_speed", lambda *a: None)
    monkeypatch.setattr(estimate, "cpu_precision", lambda *a, **k: None)  # the same speed for every goal
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    runs = {goal: estimate.estimate_run(RunConfig(model="tiny-test", data_path=str(pairs), objective=goal, epochs=1,
                                                  batch_size=4, validation_fraction=0.2, max_seq_length=128))
            for goal in ("sft", "orpo", "dpo")}
    assert runs["sft"].steps == runs["dpo"].steps == runs["orpo"].steps  # one step per batch of pairs
    # Both answers are trained: more tokens than the chosen answers alone (the rejected "No." is short).
    assert runs["orpo"].tokens == runs["dpo"].tokens > runs["sft"].tokens
    overhead = estimate.LOAD_OVERHEAD_S["cpu"]
    orpo, dpo = runs["orpo"].seconds - overhead, runs["dpo"].seconds - overhead
    assert dpo == pytest.approx(orpo * 4 / 3)  # the reference pass: both answers forward only, a third of the cost
    assert runs["dpo"].memory_gb > runs["sft"].memory_gb  # chosen and rejected in one padded batch


def test_no_data_file_yet_is_said_as_such_not_as_a_bad_file_name():
    """The Settings tab estimates before any file is chosen: the goal "auto" looks at the data, and there is none."""
    from studio.config import RunConfig
    from studio.errors import DataError
    from studio.estimate import estimate_run

    with pytest.raises(DataError, match=r"^No training data: upload a file in the Data tab\.$"):
        estimate_run(RunConfig())
