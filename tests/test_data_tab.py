"""The Data tab: fields registered for RunConfig, handlers fill every output, errors are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from studio.ui.common import UIContext
from studio.ui.data_tab import build_data_tab, histogram_svg, segments_html


@pytest.fixture
def tab(tmp_path):
    ctx = UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    with gr.Blocks() as app:
        with gr.Tab("2. Data"):
            build_data_tab(ctx)
        settings_length = gr.Number(value=128)
        ctx.fields["max_seq_length"] = settings_length
        for hook in ctx.extra.get("after_build", []):
            hook(ctx)
    handlers = {}
    for block_fn in app.fns.values():
        handlers.setdefault(block_fn.name, block_fn.fn)
    return ctx, handlers


def test_fields_registered(tab):
    ctx, handlers = tab
    assert {"data_path", "validation_path", "validation_fraction", "prompt_column", "response_column",
            "system_column", "text_column", "train_on_answers_only"} <= set(ctx.fields)
    assert ctx.fields["data_path"].label == "Training file"
    assert isinstance(ctx.fields["validation_fraction"], gr.Slider)
    assert "on_length" in handlers  # the Settings tab's max_seq_length is wired after the build


def test_upload_fills_every_output(tab, tmp_path):
    ctx, handlers = tab
    source = tmp_path / "in" / "my data (1).jsonl"
    source.parent.mkdir()
    rows = [{"question": "Is <b> bold?", "answer": "Yes & no."}, {"question": "Empty?", "answer": ""}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = handlers["on_upload"](str(source), "tiny-test", True, 128, 0.5, "")
    path, status, table, preview, stats, svg, problems, split, _note, prompt, response, system, text = out
    assert Path(path).parent == ctx.uploads_dir.resolve() and Path(path).name == "my data (1).jsonl"
    assert "Question / answer" in status and "2 rows" in status
    assert list(table.columns) == ["question", "answer"]
    assert "Is &lt;b&gt; bold?" in preview and "Yes &amp; no.&lt;|im_end|&gt;" in preview
    assert "Tokens per example" in stats and "<svg" in svg and "cut-off: 128 tokens" in svg
    assert problems.to_dict("records")[0]["Row"] == 2
    assert "Training rows: **1**" in split
    assert (prompt["value"], response["value"], system["value"], text["value"]) == ("question", "answer", "", "")

    dropped = handlers["on_drop"](path, "question", "answer", "", "", "tiny-test", True, 128, 0.0, "")
    assert dropped[0].endswith("my data (1).clean.jsonl") and "Dropped 1" in dropped[8]
    assert "Chat messages" in dropped[1]


def test_bad_upload_is_one_sentence(tab, tmp_path):
    _, handlers = tab
    bad = tmp_path / "sheet.csv"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    out = handlers["on_upload"](str(bad), "tiny-test", True, 128, 0.1, "")
    assert out[1].startswith("**Error:**") and "xlsx" in out[1] and "Traceback" not in out[1]


def test_bad_upload_keeps_the_file_already_in_use(tab, tmp_path):
    _, handlers = tab
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n", encoding="utf-8")
    in_use = handlers["on_upload"](str(good), "tiny-test", True, 128, 0.0, "")[0]
    bad = tmp_path / "notes.json"
    bad.write_text("{not json", encoding="utf-8")
    out = handlers["on_upload"](str(bad), "tiny-test", True, 128, 0.0, "", in_use)
    assert out[1].startswith("**Error:**") and "notes.json" in out[1]
    assert "still **good.jsonl**" in out[1]
    assert all(o == gr.update() for o in (out[0], *out[2:]))  # path, preview, table... untouched


def test_mapping_by_hand(tab, tmp_path):
    _, handlers = tab
    path = tmp_path / "odd.csv"
    path.write_text("a,b\nPing?,Pong.\n", encoding="utf-8")
    out = handlers["on_sample"](str(path), "tiny-test", True, 128, 0.1, "")
    assert "Action needed" in out[1] and "No usable rows" in out[3]
    out = handlers["on_mapping"](str(path), "a", "b", "", "", "tiny-test", True, 128, 0.1, "")
    assert "Columns mapped by hand" in out[1] and "Pong." in out[3]


def test_renderers_escape_and_mark():
    page = segments_html([(4, [("<script>alert(1)</script>", False), ("a & b", True)])])
    assert "<script>" not in page and "&lt;script&gt;" in page and "Row 4" in page and "a &amp; b" in page
    svg = histogram_svg([10, 20, 600, 700], 512)
    assert svg.count("<rect") == 30 and "cut-off: 512 tokens" in svg
    assert histogram_svg([], 512) == ""
