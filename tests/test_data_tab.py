"""The Data tab: fields registered for RunConfig, handlers fill every output, errors are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from studio.data import SAMPLES_DIR
from studio.ui.common import UIContext
from studio.ui.data_tab import build_data_tab, histogram_svg, segments_html


@pytest.fixture
def gradio_uploads(tmp_path) -> Path:
    """Stands in for gradio's upload folder: where a gr.File value lies before the tab copies it into uploads."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def tab(tmp_path, gradio_uploads):
    ctx = UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test", upload_temp_dir=gradio_uploads)
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


def test_upload_fills_every_output(tab, gradio_uploads):
    ctx, handlers = tab
    source = gradio_uploads / "in" / "my data (1).jsonl"
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


def test_bad_upload_is_one_sentence(tab, gradio_uploads):
    _, handlers = tab
    bad = gradio_uploads / "sheet.csv"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    out = handlers["on_upload"](str(bad), "tiny-test", True, 128, 0.1, "")
    assert out[1].startswith("**Error:**") and "xlsx" in out[1] and "Traceback" not in out[1]


def test_bad_upload_keeps_the_file_already_in_use(tab, gradio_uploads):
    _, handlers = tab
    good = gradio_uploads / "good.jsonl"
    good.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n", encoding="utf-8")
    in_use = handlers["on_upload"](str(good), "tiny-test", True, 128, 0.0, "")[0]
    bad = gradio_uploads / "notes.json"
    bad.write_text("{not json", encoding="utf-8")
    out = handlers["on_upload"](str(bad), "tiny-test", True, 128, 0.0, "", in_use)
    assert out[1].startswith("**Error:**") and "notes.json" in out[1]
    assert "still **good.jsonl**" in out[1]
    assert all(o == gr.update() for o in (out[0], *out[2:]))  # path, preview, table... untouched


def test_mapping_by_hand(tab):
    ctx, handlers = tab
    ctx.uploads_dir.mkdir()
    path = ctx.uploads_dir / "odd.csv"
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


def test_a_path_outside_the_app_folders_is_refused_by_every_handler(tab, tmp_path, gradio_uploads):
    """The page sends the training file as a plain string; an API client can send any. Each handler that reads it
    refuses one outside the uploads, samples and runs folders (after symlinks) in one sentence, and shows nothing
    of it."""
    ctx, handlers = tab
    outside = tmp_path / "elsewhere" / "private.csv"
    outside.parent.mkdir()
    outside.write_text("prompt,response\nWho?,ZQXSECRET\n", encoding="utf-8")
    ctx.uploads_dir.mkdir()
    link = ctx.uploads_dir / "inside.csv"
    link.symlink_to(outside)
    refused = "is outside the app's folders: upload the file on the Data tab."
    for path in (str(outside), str(link), "/etc/passwd", str(ctx.uploads_dir / ".." / "elsewhere" / "private.csv")):
        outputs = [handlers["on_sample"](path, "tiny-test", True, 128, 0.1, ""),
                   handlers["on_mapping"](path, "prompt", "response", "", "", "tiny-test", True, 128, 0.1, ""),
                   handlers["on_view"](path, "prompt", "response", "", "", "tiny-test", True, 128),
                   handlers["on_drop"](path, "prompt", "response", "", "", "tiny-test", True, 128, 0.1, ""),
                   handlers["split_for"](path, "prompt", "response", "", "", 0.1, ""),
                   handlers["on_upload"](path, "tiny-test", True, 128, 0.1, ""),
                   handlers["on_validation"](path, 0.1, "", "", "", "", "")]
        for out in outputs:
            text = str(out)
            assert refused.removesuffix("upload the file on the Data tab.") in text and "ZQXSECRET" not in text
        assert refused in outputs[0][1] and outputs[0][0] == gr.update()  # the training file stays as it was
    assert sorted(p.name for p in ctx.uploads_dir.iterdir()) == ["inside.csv"]  # nothing copied in
    # A model "folder" outside the app's folders is refused too; the preview still shows the rows.
    sample = str(sorted(SAMPLES_DIR.glob("*.jsonl"))[0])
    out = handlers["on_sample"](sample, str(tmp_path / "elsewhere"), True, 128, 0.1, "")
    assert "**Token lengths unavailable:** The model folder elsewhere is outside the app's folders" in out[4]
    # The shipped sample itself was read: its rows are shown.
    assert "Chat messages" in out[1] or "Detected" in out[1]
