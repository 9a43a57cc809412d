"""The Chat tab's corrections: an answer edited in place is kept as a correction, 👍/👎 as a mark, and "Train v2"
starts the next version, which the Train tab then shows."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from studio import feedback, jobs, train
from studio.config import RunConfig
from studio.ui import chat_tab
from studio.ui.common import UIContext

from .test_app import redrawn_by
from .test_train import tiny_config

RUN = "20261206-100000-zorblax"


@pytest.fixture
def ctx(tmp_path):
    return UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                     default_model="tiny-test")


@pytest.fixture
def run_dir(ctx, tmp_path):
    """A finished run as far as the Chat tab's corrections care: a config and an adapter folder."""
    path = ctx.runs_dir / RUN
    (path / "adapter").mkdir(parents=True)
    RunConfig(data_path=str(tmp_path / "train.jsonl")).save(path / "config.json")
    return path


def conversation() -> list[dict]:
    """The fine-tuned column after two turns, as Gradio 6 sends it (content as a list of typed parts)."""
    return [{"role": "user", "content": [{"type": "text", "text": "Hours?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "We open at 9."}]},
            {"role": "user", "content": "And on Sunday?"},
            {"role": "assistant", "content": "Also at 9."}]


def edit(index: int, before: str, after: str) -> gr.EditData:
    return gr.EditData(None, {"index": index, "previous_value": before, "value": after})


def test_an_answer_edited_in_place_is_kept_as_a_correction(ctx, run_dir):
    view = chat_tab.correct_answer(ctx, RUN, "Be brief.", conversation(), edit(3, "Also at 9.", "Closed on Sunday."))
    (mark,) = feedback.read(run_dir)
    assert mark.answer == "Also at 9." and mark.correction == "Closed on Sunday."
    # What the answer replied to: the typed system prompt, then the column's own turns up to the question.
    assert [m["role"] for m in mark.messages] == ["system", "user", "assistant", "user"]
    assert mark.messages[0]["content"] == "Be brief." and mark.prompt == "And on Sunday?"
    assert view.tuned[3]["content"] == "Closed on Sunday."  # the correction stays where the answer was
    assert "Correction saved" in view.notice and "1 correction" in view.notice
    pairs = json.loads(open(view.pairs.value if isinstance(view.pairs.value, str) else view.pairs.value["path"])
                       .read())
    assert pairs["chosen"][-1]["content"] == "Closed on Sunday." and pairs["rejected"][-1]["content"] == "Also at 9."


@pytest.mark.parametrize("index, before, run, words", [
    (2, "And on Sunday?", RUN, "Only the fine-tuned model's answers"),  # a question edited
    (3, "Also at 9.", chat_tab.NO_RUN, "Pick a finished run"),
    (3, "Also at 9.", RUN, "same as the model's answer"),  # nothing changed
])
def test_any_other_edit_is_undone_and_explained(ctx, run_dir, index, before, run, words):
    after = "Also at 9." if "same" in words else "Something else."
    view = chat_tab.correct_answer(ctx, run, "", conversation(), edit(index, before, after))
    assert words in view.notice
    assert view.tuned[index]["content"] == before  # the page shows what was there before the edit
    assert feedback.read(run_dir) == []


def test_thumbs_mark_an_answer_good_or_bad(ctx, run_dir):
    view = chat_tab.rate_answer(ctx, RUN, "", conversation(), gr.LikeData(None, {"index": 1, "value": "x",
                                                                                 "liked": False}))
    (mark,) = feedback.read(run_dir)
    assert mark.rating == "bad" and mark.answer == "We open at 9." and mark.prompt == "Hours?"
    assert view.notice == "Marked bad. This run has 0 corrections and 1 answer marked (0 good, 1 bad)."


def test_edits_and_marks_redraw_the_corrections_line(ctx):
    from studio.ui.app import build_app

    app = build_app(ctx.runs_dir, test_models=True, uploads_dir=ctx.uploads_dir)
    for event in ("edit", "like"):
        assert {"feedback-note", "feedback-pairs", "chat-tuned"} <= redrawn_by(app, "chat-tuned", event)
    assert {"feedback-note", "feedback-pairs"} <= redrawn_by(app, "chat-run", "change")
    assert "feedback-note" in redrawn_by(app, "train-v2", "click")


def test_train_v2_without_corrections_says_what_to_do(ctx, run_dir):
    view = chat_tab.train_next_version(ctx, RUN)
    assert view.notice.startswith("**Cannot start the next version:**") and "no corrections yet" in view.notice
    assert sorted(p.name for p in ctx.runs_dir.iterdir() if p.is_dir()) == [RUN]


def corrected_v1(ctx, tiny_data) -> None:
    """Run RUN trained on the tiny model (a few steps), one of its answers corrected in Chat."""
    assert train.run(tiny_config(tiny_data, max_steps=5, eval_every=0), ctx.runs_dir / RUN) == "finished"
    history = [{"role": "user", "content": "Who runs the Zorblax bakery?"},
               {"role": "assistant", "content": "whatever v1 said"}]
    chat_tab.correct_answer(ctx, RUN, "", history, edit(1, "whatever v1 said", "The bakery closed last spring."))


def test_train_v2_starts_the_next_version_in_its_own_process(ctx, tiny_data):
    corrected_v1(ctx, tiny_data)
    view = chat_tab.train_next_version(ctx, RUN)
    assert view.started and "plus 1 correction" in view.notice, view.notice
    v2 = ctx.runs_dir / view.started
    assert jobs.wait_for(v2, timeout_s=300)["status"] == "finished", (v2 / "worker.log").read_text()[-2000:]
    assert feedback.lineage(v2) == [RUN, v2.name]
    assert "Version 2, continuing run " + RUN in chat_tab.describe(ctx.runs_dir, v2.name, "tiny-test")


def test_train_v2_while_another_run_trains_queues_it_with_the_corrections_as_of_its_start(ctx, tiny_data):
    import os

    from studio import run_queue
    from studio.events import write_status

    corrected_v1(ctx, tiny_data)
    busy = ctx.runs_dir / "20261206-110000-busy"
    busy.mkdir()
    RunConfig(data_path="other.jsonl").save(busy / "config.json")
    write_status(busy, status="running", pid=os.getpid())  # this test's process: alive, so the run is live
    view = chat_tab.train_next_version(ctx, RUN)
    assert "waits in the queue" in view.notice and view.started == gr.skip()  # the Chat tab stays
    (entry,) = run_queue.entries(ctx.runs_dir)
    assert entry.config["parent_run"] == RUN and entry.config["corrections_path"] == ""
    # A second correction made while it waits is part of what it trains on.
    chat_tab.correct_answer(ctx, RUN, "", [{"role": "user", "content": "How many moons?"},
                                           {"role": "assistant", "content": "eleven"}], edit(1, "eleven", "None."))
    write_status(busy, status="finished")
    v2 = run_queue.start_next(ctx.runs_dir)
    assert v2 is not None and jobs.wait_for(v2, timeout_s=300)["status"] == "finished"
    assert len((v2 / "corrections.jsonl").read_text().splitlines()) == 2
    assert feedback.lineage(v2) == [RUN, v2.name]


def test_an_edit_of_a_gone_run_or_message_is_said_in_one_sentence(ctx, run_dir):
    view = chat_tab.correct_answer(ctx, "20990101-gone", "", conversation(), edit(3, "Also at 9.", "Closed."))
    assert view.notice.startswith("**Error:** Run 20990101-gone does not exist")
    view = chat_tab.correct_answer(ctx, RUN, "", conversation(), edit(7, "Also at 9.", "Closed."))
    assert "no longer in the conversation" in view.notice and feedback.read(run_dir) == []
