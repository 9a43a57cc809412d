"""Corrections made in Chat: kept per run, and trained on by the run's next version (studio/feedback.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from studio import feedback, train
from studio.chat import ChatSession
from studio.config import RunConfig
from studio.errors import ConfigError, UserError
from studio.events import read_events, read_status

from .conftest import MEMORISED, studio_cmd
from .test_train import tiny_config

# What the person teaches v2: answers the data never held (v1 learnt the MEMORISED ones).
CORRECTED = [
    (MEMORISED[0][0], "The sky on Zorblax is a deep violet at every hour."),
    (MEMORISED[1][0], "Nobody runs it now: the bakery closed last spring."),
    (MEMORISED[2][0], "Zorblax has no moons at all, only a bright ring."),
]


def asked(question: str, system: str = "") -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as a finished run leaves it, as far as feedback cares: a config and an adapter folder."""
    run_dir = tmp_path / "runs" / "20261206-100000-support"
    (run_dir / "adapter").mkdir(parents=True)
    RunConfig(data_path=str(tmp_path / "train.jsonl"), run_name="support").save(run_dir / "config.json")
    return run_dir


def test_marks_are_appended_one_line_each_and_read_back(finished_run):
    feedback.record(finished_run, asked("Hours?", "Be brief."), "We open at 9.", correction="Open 8 to 6.")
    feedback.record(finished_run, asked("Price?"), "It costs 10.", rating="good")
    lines = (finished_run / "feedback.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["prompt"] == "Hours?" and first["answer"] == "We open at 9." and first["correction"] == "Open 8 to 6."
    assert first["messages"][0] == {"role": "system", "content": "Be brief."} and first["time"] > 0
    assert json.loads(lines[1])["rating"] == "good"
    assert feedback.counts(finished_run) == feedback.Counts(corrections=1, good=1, bad=0)
    assert "1 correction" in feedback.counts(finished_run).sentence()


@pytest.mark.parametrize("answer, correction, rating, words", [
    ("", "Better.", "", "not answered yet"),
    ("An answer.", "", "", "Write the answer"),
    ("An answer.", "An answer.", "", "same as the model's answer"),
    ("An answer.", "", "meh", "'good' or 'bad'"),
    ("An answer.", "x" * (feedback.MAX_TEXT_CHARS + 1), "", "characters long"),
])
def test_a_useless_mark_is_refused_in_one_sentence_and_nothing_is_written(finished_run, answer, correction, rating,
                                                                          words):
    feedback.record(finished_run, asked("Kept?"), "Yes.", rating="good")
    with pytest.raises(UserError, match=words):
        feedback.record(finished_run, asked("Hours?"), answer, correction=correction, rating=rating)
    assert len(feedback.read(finished_run)) == 1  # the earlier mark is still there, nothing added


def test_no_question_or_no_adapter_is_refused(finished_run, tmp_path):
    with pytest.raises(UserError, match="no question"):
        feedback.record(finished_run, [], "An answer.", correction="Better.")
    with pytest.raises(UserError, match="no fine-tuned model"):
        feedback.record(tmp_path, asked("Hours?"), "An answer.", correction="Better.")


def test_the_newest_mark_of_an_answer_counts_and_a_damaged_line_is_skipped(finished_run):
    feedback.record(finished_run, asked("Hours?"), "At 9.", correction="From 8.")
    with open(finished_run / "feedback.jsonl", "a") as f:
        f.write('{"messages": "not a list"\n')  # a crash mid-line, or a hand edit
        for bad in ({"messages": [], "answer": "A.", "correction": "B."},
                    {"messages": [{"role": "wizard", "content": "Q?"}], "answer": "A.", "correction": "B."},
                    {"messages": [{"role": "user", "content": "Q?"}], "answer": None, "correction": "B."},
                    {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
                     "answer": "A.", "correction": "B."}):
            f.write(json.dumps(bad) + "\n")  # hand edits that would train nonsense
    feedback.record(finished_run, asked("Hours?"), "At 9.", correction="From 8 to 6.")
    feedback.record(finished_run, asked("Hours?"), "At 9.", rating="bad")  # keeps the correction before it
    marks = feedback.latest(feedback.read(finished_run))
    assert len(marks) == 1 and marks[0].correction == "From 8 to 6." and marks[0].rating == "bad"
    assert feedback.counts(finished_run) == feedback.Counts(corrections=1, good=0, bad=1)


def test_corrections_are_weighted_so_a_handful_matter_but_are_not_learnt_by_heart():
    assert feedback.repeats(0, 300) == 0
    assert feedback.repeats(5, 300) == 12  # 60 of 360 rows: about a fifth of the epoch
    assert feedback.repeats(3, 1_000_000) == feedback.MAX_REPEATS
    assert feedback.repeats(50, 10) == 1


def test_corrections_export_as_preference_pairs_the_data_loader_reads(finished_run, tmp_path):
    from studio import data

    feedback.record(finished_run, asked("Hours?"), "At 9.", correction="From 8 to 6.")
    feedback.record(finished_run, asked("Price?"), "Ten.", rating="bad")  # no correction: no pair
    dest = tmp_path / "pairs.jsonl"
    assert feedback.write_preference_file(finished_run, dest) == 1
    row = json.loads(dest.read_text())
    assert row["chosen"][-1] == {"role": "assistant", "content": "From 8 to 6."}
    assert row["rejected"][-1] == {"role": "assistant", "content": "At 9."}
    assert data.load_data(dest).format in ("preference_chat", "preference")


def test_lineage_follows_parent_runs_and_survives_a_missing_parent_or_a_loop(tmp_path):
    runs = tmp_path / "runs"
    for name, parent in (("a", ""), ("b", "a"), ("c", "b"), ("x", "gone"), ("p", "q"), ("q", "p")):
        (runs / name).mkdir(parents=True)
        RunConfig(data_path="d.jsonl", parent_run=parent).save(runs / name / "config.json")
    assert feedback.lineage(runs / "c") == ["a", "b", "c"]
    assert feedback.lineage(runs / "x") == ["gone", "x"]
    assert feedback.lineage(runs / "p") == ["q", "p"]  # a loop is cut, never followed forever


def test_next_version_config_keeps_the_adapter_shape_and_names_the_version(finished_run, tmp_path):
    mine = RunConfig(data_path="other.jsonl", lora_rank=64, learning_rate=1e-4)
    config = feedback.next_version_config(finished_run, mine)
    assert config.parent_run == finished_run.name and config.run_name == "support v2"
    assert config.lora_rank == 8 and config.learning_rate == 1e-4  # the parent's adapter; my training settings
    with pytest.raises(ConfigError, match="not a run folder"):
        feedback.next_version_config(tmp_path)
    unnamed = tmp_path / "runs" / "20261206-110000-faq"
    (unnamed / "adapter").mkdir(parents=True)
    RunConfig(data_path="uploads/faq.csv").save(unnamed / "config.json")
    assert feedback.next_version_config(unnamed).run_name == "faq v2"  # not the id: no timestamp twice


def loss_on(run_dir, examples) -> float:
    session = ChatSession("tiny-test", adapter_dir=run_dir / "adapter", cpu_precision="fp32")
    return session.eval_loss(examples, max_seq_length=128)["tuned"]


def test_corrections_make_a_v2_that_learnt_them_better_than_v1(tiny_data, tmp_path):
    """The issue's test: v2, trained from v1's adapter on v1's data plus three corrections, has a lower loss on the
    corrected answers than v1; its config, start event and name say what it is."""
    runs = tmp_path / "runs"
    v1 = runs / "20261206-100000-zorblax"
    config = tiny_config(tiny_data, max_steps=20, run_name="zorblax")
    assert train.run(config, v1) == "finished", (v1 / "worker.log").read_text()[-2000:]
    for question, better in CORRECTED:
        feedback.record(v1, asked(question), "whatever v1 said", correction=better)

    assert train.main([str(v1 / "config.json"), "--from-run", str(v1)]) == 0
    (v2,) = [p for p in runs.iterdir() if p.is_dir() and p != v1]
    saved = json.loads((v2 / "config.json").read_text())
    assert saved["parent_run"] == v1.name and saved["run_name"] == "zorblax v2"
    assert saved["corrections_path"] == str((v2 / "corrections.jsonl").resolve())
    assert len((v2 / "corrections.jsonl").read_text().splitlines()) == 3
    start = next(e for e in read_events(v2) if e["type"] == "start")
    assert start["parent_run"] == v1.name and start["corrections"] == 3
    assert read_status(v2)["status"] == "finished"
    assert feedback.lineage(v2) == [v1.name, v2.name]

    corrected = [{"messages": [*asked(q), {"role": "assistant", "content": a}]} for q, a in CORRECTED]
    v1_loss, v2_loss = loss_on(v1, corrected), loss_on(v2, corrected)
    print("corrected-answer loss v1 %.3f v2 %.3f" % (v1_loss, v2_loss))
    assert v2_loss < 0.8 * v1_loss, (v1_loss, v2_loss)


def test_from_run_without_corrections_is_refused_before_any_folder_exists(finished_run, tmp_path):
    runs = finished_run.parent
    result = subprocess.run(studio_cmd("train", "--from-run", str(finished_run)), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no corrections yet" in result.stderr
    assert sorted(p.name for p in runs.iterdir()) == [finished_run.name]
    result = subprocess.run(studio_cmd("train"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "No config file given" in result.stderr


def test_a_next_version_resumes_from_its_own_checkpoint_after_its_parent_is_deleted(tiny_data, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    v1 = runs / "20261206-100000-zorblax"
    assert train.run(tiny_config(tiny_data, max_steps=4, eval_every=0), v1) == "finished"
    feedback.record(v1, asked(CORRECTED[0][0]), "whatever v1 said", correction=CORRECTED[0][1])
    mine = tmp_path / "v2.json"
    tiny_config(tiny_data, max_steps=4, eval_every=0, save_every=2).save(mine)
    assert train.main([str(mine), "--from-run", str(v1)]) == 0
    (v2,) = [p for p in runs.iterdir() if p.is_dir() and p != v1]
    shutil.rmtree(v1)
    assert train.main(["--resume", str(v2)]) == 0, (v2 / "worker.log").read_text()[-2000:]
    assert read_status(v2)["status"] == "finished"
