"""The Chat tab and the Export under it: every result names the run it belongs to, and goes when another run is
picked (a zip or a comparison under a newly selected run would be read as that run's)."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import pytest

from studio.chat import BATCH_COLUMNS
from studio.config import RunConfig
from studio.events import CONFIG_FILE
from studio.ui import chat_tab, export_tab
from studio.ui.common import UIContext, slots

from .test_app import redrawn_by


@pytest.fixture
def ctx(tmp_path):
    return UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                     default_model="tiny-test")


def test_picking_another_run_clears_the_previous_runs_results(ctx):
    with gr.Blocks() as app, gr.Tab("5. Chat") as tab:
        chat_tab.build_chat_tab(ctx, tab)
        export_tab.build_export_tab(ctx)
    assert {"chat-run-info", "batch-status", "batch-table", "batch-csv", "batch-losses", "export-file",
            "export-status"} <= redrawn_by(app, "chat-run", "change")
    status, table, csv = slots(chat_tab.forget_results())
    assert status == "" and table.empty and csv.visible is False
    assert slots(export_tab.forget()) == [None, ""]
    assert list(chat_tab.empty_losses().columns) == ["run", "model", "loss", "perplexity"]


def test_the_batch_comparison_names_its_run(ctx, monkeypatch):
    class Session:
        def batch_compare(self, items, base_settings, tuned_settings, stop_event=None):
            return pd.DataFrame([{"prompt": "Hi?", "reference": "Hello.", "base": "x", "tuned": "Hello."}],
                                columns=BATCH_COLUMNS)

    monkeypatch.setattr(chat_tab, "get_session", lambda *a: Session())
    monkeypatch.setattr(chat_tab, "batch_items", lambda *a: [([{"role": "user", "content": "Hi?"}], "Hello.")] * 2)
    settings = [0.0, 0.9, 4, 1.1, 0]
    views = list(chat_tab.batch(ctx, "20990101-run-a", chat_tab.VALIDATION, None, 5, "", True, *settings, *settings))
    assert len(views) == 4  # the start, one per prompt, the end
    assert all(view.status.startswith("Run **20990101-run-a**") for view in views), [v.status for v in views]
    csv = views[-1].csv.value
    csv = csv.get("path") if isinstance(csv, dict) else csv  # gradio may wrap it as file data
    assert csv.endswith("comparison-20990101-run-a.csv")
    *_, last = chat_tab.batch(ctx, chat_tab.NO_RUN, chat_tab.UPLOADED, "x.txt", 1, "", True, *settings, *settings)
    assert last.status.startswith("The base model alone, done: 1 prompts")


def test_bound_handlers_still_get_the_browser_session_and_progress(ctx):
    """Gradio passes gr.Request (each browser's own Stop flag) and gr.Progress by reading a handler's signature
    and type hints: common.bind must show both, without the context it fixes."""
    import inspect

    from gradio.helpers import special_args
    from gradio.utils import get_type_hints

    from studio.ui import data_tab
    from studio.ui.common import bind

    for handler in (chat_tab.chat, chat_tab.batch):
        bound = bind(handler, ctx)
        assert get_type_hints(bound)["request"] is gr.Request and inspect.isgeneratorfunction(bound)
        assert "ctx" not in inspect.signature(bound).parameters
    progress_at = special_args(bind(data_tab.on_upload, ctx))[1]
    assert list(inspect.signature(bind(data_tab.on_upload, ctx)).parameters)[progress_at] == "progress"


def test_the_batch_comparison_and_validation_loss_are_views_of_the_report_card(ctx, monkeypatch):
    """A run with a report shows its answers and losses without loading a model; without one, one sentence."""
    import json

    run_dir = ctx.runs_dir / "20990101-run-r"
    run_dir.mkdir(parents=True)
    RunConfig().save(run_dir / CONFIG_FILE)
    monkeypatch.setattr(chat_tab, "get_session", lambda *a: pytest.fail("the report view must not load a model"))
    settings = [0.0, 0.9, 4, 1.1, 0]
    with pytest.raises(gr.Error, match=r"no report card answers yet.*python -m studio eval"):
        list(chat_tab.batch(ctx, run_dir.name, chat_tab.FROM_REPORT, None, 5, "", True, *settings, *settings))
    examples = [{"prompt": f"Q{i}?", "reference": f"A{i}.", "base": "dunno", "tuned": f"A{i}.", "chrf_base": 5.0,
                 "chrf_tuned": 100.0} for i in range(8)]
    report = {"task": {"examples": examples, "chrf": {"base": 5.0, "tuned": 100.0},
                       "loss": {"base": 3.2, "tuned": 1.1}}}
    (run_dir / "report.json").write_text(json.dumps(report))
    view, = chat_tab.batch(ctx, run_dir.name, chat_tab.FROM_REPORT, None, 5, "", True, *settings, *settings)
    assert list(view.table["tuned"]) == [f"A{i}." for i in range(5)] and list(view.table.columns) == BATCH_COLUMNS
    assert "5 of 8 held-out rows" in view.status and "base 5, fine-tuned 100" in view.status
    assert view.csv.visible
    losses = chat_tab.measure_loss(ctx, run_dir.name)
    assert list(losses["loss"]) == [3.2, 1.1] and list(losses["run"]) == [run_dir.name] * 2
