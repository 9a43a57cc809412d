"""The Train tab's live view, drawn from a run folder's files: status words, the log box, redraw only on change."""

from __future__ import annotations

import os
import time

import gradio as gr
import pytest

from studio.config import RunConfig
from studio.data import SAMPLES_DIR
from studio.events import CONFIG_FILE, EventWriter, read_events, read_status, replay, write_status
from studio.ui import sessions, train_tab
from studio.ui.app import settings_of_live_run
from studio.ui.common import UIContext, slots


@pytest.fixture
def runs_dir(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


@pytest.fixture
def ctx(runs_dir, tmp_path):
    return UIContext(runs_dir=runs_dir, uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                     default_model="tiny-test")


def make_run(runs_dir, run_id: str, status: str, events: list[tuple[str, dict]], **status_fields):
    run_dir = runs_dir / run_id
    run_dir.mkdir()
    RunConfig(max_steps=7).save(run_dir / CONFIG_FILE)
    writer = EventWriter(run_dir)
    for kind, data in events:
        writer.write(kind, **data)
    writer.close()
    (run_dir / "worker.log").write_text("Traceback (most recent call last):\n  boom\n")
    write_status(run_dir, status=status, **status_fields)
    return run_dir


def test_finished_run_says_how_far_validation_loss_moved(runs_dir):
    make_run(runs_dir, "r1", "finished", [
        ("eval", {"step": 0, "eval_loss": 4.0}), ("start", {"total_steps": 2, "method": "lora32"}),
        ("log", {"step": 1, "loss": 3.9}), ("log", {"step": 2, "loss": 3.0}), ("eval", {"step": 2, "eval_loss": 3.0}),
        ("end", {"status": "finished", "step": 2})], step=2, total_steps=2)
    text = train_tab.draw_run(runs_dir, "r1").status
    assert "from **4.000** before training to **3.000** (25% lower)" in text
    assert "LoRA fp32" in text  # the method in words, not "lora32"


def test_starting_run_shows_what_it_does_not_a_row_of_zeros(runs_dir):
    make_run(runs_dir, "r2", "starting", [], message="Measuring the validation loss before training",
             pid=os.getpid())
    text = train_tab.draw_run(runs_dir, "r2").status
    assert "Measuring the validation loss before training..." in text
    assert "Step" not in text and "tokens/s" not in text


def test_a_one_sentence_failure_hides_the_traceback_and_a_crash_shows_it(runs_dir):
    make_run(runs_dir, "bad-id", "failed", [("error", {"message": "Model nobody/x was not found.", "kind": "user"})])
    view = train_tab.draw_run(runs_dir, "bad-id")
    assert "Model nobody/x was not found." in view.status and view.log["visible"] is False
    make_run(runs_dir, "crash", "failed", [("error", {"message": "Training crashed (ValueError: x).",
                                                      "kind": "crash", "log_tail": "Traceback ... boom"})])
    log = train_tab.draw_run(runs_dir, "crash").log
    assert log["visible"] is True and "boom" in log["value"]


def test_files_key_changes_only_when_the_run_changes(runs_dir):
    run_dir = make_run(runs_dir, "r3", "finished", [("start", {"total_steps": 1})])
    first = train_tab.files_key(runs_dir, "r3")
    assert train_tab.files_key(runs_dir, "r3") == first  # nothing new: the page skips the redraw
    with open(run_dir / "events.jsonl", "a") as f:
        f.write('{"type": "log", "step": 1, "loss": 1.0}\n')
    assert train_tab.files_key(runs_dir, "r3") != first


def test_a_reload_refills_the_form_only_while_a_run_is_live(runs_dir):
    names = ["max_steps", "learning_rate"]
    make_run(runs_dir, "done", "finished", [])
    assert all(v == gr.skip() for v in settings_of_live_run(runs_dir, names))
    make_run(runs_dir, "live", "running", [], pid=os.getpid())
    assert settings_of_live_run(runs_dir, names) == [7, RunConfig().learning_rate]


def test_starting_a_run_on_a_gpu_frees_the_chat_models(monkeypatch):
    import torch

    from studio import models

    class Loaded:
        stopped = False

        def stop(self):
            self.stopped = True

    loaded = Loaded()
    monkeypatch.setitem(sessions._sessions, ("some-model", ""), loaded)
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    sessions.release_gpu_sessions()
    assert ("some-model", "") in sessions._sessions  # on a CPU the chat keeps its model
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    sessions.release_gpu_sessions()
    assert not sessions._sessions and loaded.stopped


def test_the_poll_redraws_only_what_changed(runs_dir, ctx):
    run_dir = make_run(runs_dir, "live", "running", [("start", {"total_steps": 9})], pid=os.getpid())
    view = train_tab.poll(ctx, "live", None)
    assert "running" in view.status and view.table == gr.skip()
    seen = view.seen
    again = train_tab.poll(ctx, "live", seen)
    assert all(value == gr.skip() for value in slots(again))  # nothing new on disk: nothing sent
    with open(run_dir / "events.jsonl", "a") as f:
        f.write('{"type": "log", "step": 1, "loss": 2.0}\n')
    view = train_tab.poll(ctx, "live", seen)
    assert "Step **1 / 9**" in view.status and view.table == gr.skip()  # the table waits for its 10 s
    with open(run_dir / "events.jsonl", "a") as f:
        f.write('{"type": "log", "step": 2, "loss": 1.5}\n')
    view = train_tab.poll(ctx, "live", {**view.seen, "table_at": 0})
    assert list(view.table["Run"]) == ["live"]
    write_status(run_dir, status="finished", step=2, total_steps=9)
    view = train_tab.poll(ctx, "live", view.seen)
    assert "finished" in view.status and list(view.table["Status"]) == ["finished"]  # the status changed: table now


def test_chat_keeps_base_only_when_chosen_and_follows_a_newly_finished_run(runs_dir, ctx):
    from studio.ui.chat_tab import NO_RUN, follow_newest

    def finished(run_id):
        run_dir = make_run(runs_dir, run_id, "finished", [])
        (run_dir / "adapter").mkdir()
        (run_dir / "adapter" / "adapter_config.json").write_text("{}")
        os.utime(run_dir, (time.time() + len(os.listdir(runs_dir)),) * 2)  # newest by modification time

    finished("older")
    picked, seen = follow_newest(ctx, None, None)  # a fresh page: the newest finished run
    assert picked.value == "older" and seen == "older"
    picked, seen = follow_newest(ctx, NO_RUN, seen)  # the user chose the base model alone: it stays
    assert picked.value == NO_RUN
    finished("newer")
    picked, seen = follow_newest(ctx, "older", seen)  # a run finished since: it is the one to try
    assert picked.value == "newer" and seen == "newer"


def test_chat_names_the_base_and_tuned_validation_loss_of_the_run(runs_dir):
    from studio.ui.chat_tab import describe

    make_run(runs_dir, "r5", "finished", [("eval", {"step": 0, "eval_loss": 3.99}), ("start", {"total_steps": 20}),
                                          ("eval", {"step": 10, "eval_loss": 3.5}),
                                          ("eval", {"step": 20, "eval_loss": 3.561})])
    text = describe(runs_dir, "r5", "tiny-test")
    assert "validation loss 3.990 for the base model and 3.561 fine-tuned" in text


def test_a_run_without_progress_for_two_minutes_says_so(runs_dir, monkeypatch):
    """A worker stopped with SIGSTOP (or hung) stays "running" with a live pid; its files stop changing. After two
    minutes the status line says so, in minutes, with what to do, and the poll redraws as the minutes pass."""
    import json

    run_dir = make_run(runs_dir, "stuck", "running", [("start", {"total_steps": 9}), ("log", {"step": 1, "loss": 2.0})],
                       pid=os.getpid(), step=1, total_steps=9)
    text = train_tab.draw_run(runs_dir, "stuck").status
    assert "no progress" not in text.lower() and "🟢 running" in text
    last_step = time.time() - 185  # the last step, three minutes ago
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "updated": last_step}))
    for name in ("status.json", "events.jsonl"):
        os.utime(run_dir / name, (last_step, last_step))
    text = train_tab.draw_run(runs_dir, "stuck").status
    headline = text.splitlines()[0]
    assert "running" in headline and "no progress for 3 min" in headline
    assert "**No progress for 3 min:**" in text and "press **Stop**, then **Resume**" in text
    key = train_tab.files_key(runs_dir, "stuck")
    assert train_tab.files_key(runs_dir, "stuck") == key  # no redraw each second...
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 60)
    assert train_tab.files_key(runs_dir, "stuck") != key  # ...but one a minute: "4 min"
    assert "no progress for 4 min" in train_tab.draw_run(runs_dir, "stuck").status


def test_start_and_estimate_refuse_data_outside_the_app_folders(runs_dir, ctx, tmp_path):
    """Start trains only on a file in the uploads, samples or runs folder: the form's path comes from the client."""
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"prompt": "Who?", "response": "ZQXSECRET"}\n' * 40, encoding="utf-8")
    good = RunConfig(model="tiny-test", data_path=str(sorted(SAMPLES_DIR.glob("*.jsonl"))[0]), max_steps=2)
    names = list(good.to_dict())
    for field_name, path in (("data_path", outside), ("validation_path", "/etc/passwd"), ("model", tmp_path)):
        values = {**good.to_dict(), field_name: str(path)}
        sent = [values[n] for n in names]
        notice = train_tab.start_training(ctx, names, *sent).notice
        assert notice.startswith("**Cannot start:**") and "is outside the app's folders" in notice, notice
        assert "is outside the app's folders" in train_tab.estimate_text(ctx, names, *sent)
    assert list(runs_dir.iterdir()) == []  # no run folder, no worker


def test_stop_and_resume_are_offered_only_when_they_can_act(runs_dir):
    def buttons(run_id):
        view = train_tab.draw_run(runs_dir, run_id)
        return view.stop["interactive"], view.resume["interactive"]

    assert buttons(None) == (False, False)  # no run at all
    make_run(runs_dir, "live", "running", [("start", {"total_steps": 9})], pid=os.getpid())
    assert buttons("live") == (True, False)
    make_run(runs_dir, "halted", "stopped", [("start", {"total_steps": 9}),
                                             ("checkpoint", {"step": 3, "path": "checkpoints/checkpoint-3"})])
    assert buttons("halted") == (False, True)
    make_run(runs_dir, "early", "stopped", [("start", {"total_steps": 9})])  # stopped before its first checkpoint
    assert buttons("early") == (False, False)
    make_run(runs_dir, "done", "finished", [("start", {"total_steps": 9})])
    assert buttons("done") == (False, False)


def test_a_second_start_while_training_says_the_run_trains_not_that_start_failed(runs_dir, ctx):
    first = make_run(runs_dir, "20990101-000000-first", "running", [("start", {"total_steps": 9})],
                     pid=os.getpid())
    good = RunConfig(model="tiny-test", data_path=str(sorted(SAMPLES_DIR.glob("*.jsonl"))[0]), max_steps=2)
    good.save(first / CONFIG_FILE)  # the press that started it: the same settings
    view = train_tab.start_training(ctx, list(good.to_dict()), *good.to_dict().values())
    assert "Cannot" not in view.notice and "failed" not in view.notice
    assert view.notice == "Run **20990101-000000-first** is training with these settings (shown below)."
    assert view.run_select["value"] == "20990101-000000-first"  # the run shown is the one training
    assert sorted(p.name for p in runs_dir.iterdir()) == ["20990101-000000-first"]  # nothing queued either


def test_a_start_failure_goes_when_a_setting_changes(runs_dir):
    from studio.ui.app import build_app

    from .test_app import redrawn_by

    assert "train-notice" in redrawn_by(build_app(runs_dir, test_models=True), "field-max_steps", "change")
    assert train_tab.forget_start_failure("**Cannot start:** No file was given.") == ""
    for kept in ("Started run **r1**.", "Stopping r1: the adapter and a checkpoint are being saved."):
        assert train_tab.forget_start_failure(kept) == gr.skip()


def test_eta_and_estimate_use_the_pace_measured_so_far(runs_dir, ctx):
    """10 steps in 50 s of 40: 5 s a step, so 150 s left and 200 s in all, whatever the estimate assumed."""
    make_run(runs_dir, "busy", "running", [("start", {"total_steps": 40}),
                                           ("log", {"step": 10, "loss": 2.0, "elapsed_s": 50.0, "tokens_per_s": 40})],
             pid=os.getpid(), step=10, total_steps=40, elapsed_s=50.0, eta_s=1.0, tokens_per_s=40.0)
    view = train_tab.draw_run(runs_dir, "busy")
    assert "ETA 2m 30s" in view.status  # from the pace, not the worker's eta_s
    assert view.estimate.startswith("**Measured so far** (run busy, 10 steps): 5.0 s a step, 40 tokens/s")
    assert "about **3m 20s** in all, **2m 30s** left" in view.estimate
    names = list(RunConfig().to_dict())
    text = train_tab.estimate_text(ctx, names, *RunConfig().to_dict().values())
    assert text.startswith("**Fix this before starting:**") and text.endswith("**2m 30s** left.")
    make_run(runs_dir, "fresh", "running", [("start", {"total_steps": 40})], pid=os.getpid())
    assert train_tab.draw_run(runs_dir, "fresh").estimate == gr.skip()  # no step yet: the estimate stays


def test_the_plots_span_the_run_and_hide_without_one(runs_dir):
    """An empty plot labels its only axis point 0.000000: without a run there is no plot; with one, the step axis
    runs from 0 to the run's last step, so the curve fills it as the run goes."""
    view = train_tab.draw_run(runs_dir, None)
    assert view.loss_plot["visible"] is False and view.lr_plot["visible"] is False
    make_run(runs_dir, "r6", "running", [("start", {"total_steps": 40}), ("log", {"step": 1, "loss": 2.0})],
             pid=os.getpid())
    view = train_tab.draw_run(runs_dir, "r6")
    for plot in (view.loss_plot, view.lr_plot):
        assert plot["visible"] is True and plot["x_lim"] == [0, 40]
    assert list(view.loss_plot["value"]["step"])[-1] == 1


def test_rising_validation_while_training_falls_is_said_in_plain_words(runs_dir):
    logs = [("log", {"step": s, "loss": 3.0 - 0.2 * s}) for s in range(1, 10)]
    evals = [("eval", {"step": s, "eval_loss": v}) for s, v in ((0, 4.0), (3, 2.5), (6, 2.6), (9, 2.9))]
    make_run(runs_dir, "over", "running", [("start", {"total_steps": 20, "method": "lora32"}), *logs, *evals],
             step=9, total_steps=20)
    assert "learn your rows by heart" in train_tab.draw_run(runs_dir, "over").status
    falling = [("eval", {"step": s, "eval_loss": v}) for s, v in ((0, 4.0), (3, 2.5), (6, 2.3), (9, 2.2))]
    make_run(runs_dir, "fine", "running", [("start", {"total_steps": 20, "method": "lora32"}), *logs, *falling],
             step=9, total_steps=20)
    assert "by heart" not in train_tab.draw_run(runs_dir, "fine").status


def test_a_finished_run_shows_its_report_card_verdict(runs_dir):
    import json

    run_dir = make_run(runs_dir, "rep", "finished", [("start", {"total_steps": 2, "method": "lora32"}),
                                                    ("end", {"status": "finished", "step": 2})], step=2, total_steps=2)
    assert "Report card" not in train_tab.draw_run(runs_dir, "rep").status
    (run_dir / "report.json").write_text(json.dumps({"verdict": {"text": "Better at your task (+38%)."}}))
    text = train_tab.draw_run(runs_dir, "rep").status
    assert "### Report card\nBetter at your task (+38%)." in text and "rep/report.html" in text


def test_run_history_shows_each_report_cards_headline_as_sortable_columns(runs_dir):
    import json

    from studio.evaluate import headline

    def report(base_chrf, tuned_chrf, forgetting, parroting, ready, next_step):
        card = {"task": {"chrf": {"base": base_chrf, "tuned": tuned_chrf}, "loss": {"base": 3.5, "tuned": 2.4}},
                "general": {"accuracy": {"base": 0.6, "tuned": 0.58}, "forgetting": forgetting},
                "parroting": {"flag": parroting, "train": {"share": 0.1}},
                "verdict": {"ready": ready, "next": next_step}}
        return {**card, "headline": headline(card)}

    events = [("start", {"total_steps": 2, "method": "lora32"}), ("end", {"status": "finished", "step": 2})]
    for run_id, card in [("good", report(20.0, 27.6, False, False, True, "none")),
                         ("parrot", report(20.0, 22.0, True, True, False, "fewer_epochs")), ("bare", None)]:
        run_dir = make_run(runs_dir, run_id, "finished", events, step=2, total_steps=2)
        if card:
            (run_dir / "report.json").write_text(json.dumps(card))
    table = train_tab.history_table(runs_dir).set_index("Run")
    assert table.loc["good", "Task score"] == 27.6 and table.loc["good", "vs base %"] == 38
    assert (table.loc["good", "General knowledge"], table.loc["good", "Parroting"],
            table.loc["good", "Try next"]) == ("kept", "no", "ready to share")
    assert (table.loc["parrot", "General knowledge"], table.loc["parrot", "Parroting"],
            table.loc["parrot", "Try next"]) == ("slipped", "yes", "fewer epochs")
    assert table.loc["bare", "Task score"] is None and table.loc["bare", "Try next"] == ""
    # Numbers stay numbers, so sorting the column orders runs by score, not by text.
    assert sorted(table["Task score"].dropna()) == [22.0, 27.6]
    # What runs are compared on comes first, in view without scrolling; the method by its short name.
    assert list(table.reset_index().columns[:7]) == ["Run", "Status", "Task score", "vs base %", "General knowledge",
                                                     "Parroting", "Try next"]
    assert set(table["Method"]) == {"LoRA fp32"}


def test_the_cpu_number_format_is_said_in_plain_words_beside_the_method(runs_dir):
    from studio import precision

    chosen = precision.measure(timer=lambda name, threads, shape: 0.010 if name == "fp32" else 0.004)
    start = {"total_steps": 2, "method": "lora32", "cpu_precision": chosen.name,
             "cpu_precision_reason": chosen.reason}
    make_run(runs_dir, "bf", "running", [("start", start), ("log", {"step": 1, "loss": 2.0})], step=1, total_steps=2)
    text = train_tab.draw_run(runs_dir, "bf").status
    assert "the model you start from held in **bf16** on this CPU, your adapter in fp32" in text
    assert "2.50x the speed of fp32" in text and "GFLOP" not in text
    make_run(runs_dir, "gpu", "running", [("start", {"total_steps": 2, "method": "qlora"}),
                                          ("log", {"step": 1, "loss": 2.0})], step=1, total_steps=2)
    assert "on this CPU" not in train_tab.draw_run(runs_dir, "gpu").status


def test_a_preference_run_plots_its_reward_margin_beside_the_loss(tmp_path):
    from studio.events import read_events, replay

    writer = EventWriter(tmp_path)
    writer.write("start", total_steps=4, objective="dpo")
    writer.write("eval", step=0, eval_loss=0.69, reward_margin=0.0, reward_accuracy=0.0)
    for step, margin in enumerate([0.0, 0.4, 1.1, 2.0], 1):
        writer.write("log", step=step, loss=0.7 - 0.1 * step, learning_rate=1e-3, reward_margin=margin,
                     reward_accuracy=min(1.0, margin))
    writer.write("eval", step=4, eval_loss=0.3, reward_margin=1.5, reward_accuracy=1.0)
    writer.close()
    history = replay(read_events(tmp_path))
    frame = train_tab.reward_frame(history)
    margins = frame[frame.series == "margin (train)"].dropna()
    assert list(margins.step) == [1, 2, 3, 4] and list(margins.value) == [0.0, 0.4, 1.1, 2.0]
    assert list(frame[frame.series == "margin (validation)"].dropna().value) == [0.0, 1.5]
    assert list(frame[frame.series.str.startswith("chosen preferred")].dropna().value) == [0.0, 0.4, 1.0, 1.0]
    assert train_tab.reward_curve(history, 4)["visible"] is True
    supervised = replay([{"type": "log", "step": 1, "loss": 1.0}])
    assert train_tab.reward_curve(supervised, 4)["visible"] is False  # supervised runs: no preference plot


def test_run_history_shows_each_versions_lineage_its_corrections_and_preference_goal(runs_dir):
    import json

    events = [("start", {"total_steps": 2, "method": "lora32"}), ("end", {"status": "finished", "step": 2})]
    make_run(runs_dir, "v1", "finished", events, step=2, total_steps=2)
    v2_events = [("start", {"total_steps": 2, "method": "lora32", "parent_run": "v1", "corrections": 3,
                            "objective": "dpo"}), ("end", {"status": "finished", "step": 2})]
    for run_id, parent in (("v2", "v1"), ("v3", "v2")):
        run_dir = make_run(runs_dir, run_id, "finished", v2_events, step=2, total_steps=2)
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**config, "parent_run": parent}))
    table = train_tab.history_table(runs_dir).set_index("Run")
    assert table.loc["v1", "Version"] == "v1" and table.loc["v2", "Version"] == "v2, from v1"
    assert table.loc["v3", "Version"] == "v3, from v2"
    assert table.loc["v2", "Data"].endswith(" + 3 corrections") and "correction" not in table.loc["v1", "Data"]
    assert table.loc["v2", "Method"] == "LoRA fp32, DPO" and table.loc["v1", "Method"] == "LoRA fp32"


def test_a_next_versions_status_says_what_it_continues_and_how_many_corrections(runs_dir):
    events = [("start", {"total_steps": 2, "method": "lora32", "parent_run": "v1", "corrections": 1})]
    run_dir = make_run(runs_dir, "v2", "running", events, step=1, total_steps=2)
    text = train_tab.status_markdown(run_dir, read_status(run_dir), replay(read_events(run_dir)))
    assert "Next version of run v1: continues its fine-tuning on its data plus 1 correction made in Chat." in text


def test_a_run_of_several_processes_says_how_many_and_its_global_batch(runs_dir):
    events = [("start", {"total_steps": 4, "method": "lora32", "processes": 2, "global_batch": 8}),
              ("log", {"step": 1, "loss": 2.0, "tokens_per_s": 10.0})]
    run_dir = make_run(runs_dir, "ddp", "running", events, step=1, total_steps=4)
    text = train_tab.status_markdown(run_dir, read_status(run_dir), replay(read_events(run_dir)))
    assert "**2 processes** (one per GPU) train together: each step learns from 8 examples" in text
    single = make_run(runs_dir, "one", "running", [("start", {"total_steps": 4, "method": "lora32", "processes": 1,
                                                              "global_batch": 4}),
                                                   ("log", {"step": 1, "loss": 2.0, "tokens_per_s": 10.0})],
                      step=1, total_steps=4)
    assert "processes" not in train_tab.status_markdown(single, read_status(single), replay(read_events(single)))
