"""The Data tab: fields registered for RunConfig, handlers fill every output, errors are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from studio.data import SAMPLES_DIR
from studio.ui import data_tab
from studio.ui.common import UIContext, slots
from studio.ui.data_tab import histogram_svg, segments_html


@pytest.fixture
def gradio_uploads(tmp_path) -> Path:
    """Stands in for gradio's upload folder: where a gr.File value lies before the tab copies it into uploads."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def ctx(tmp_path, gradio_uploads):
    ctx = UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test", upload_temp_dir=gradio_uploads)
    with gr.Blocks():
        with gr.Tab("2. Data"):
            data_tab.build_data_tab(ctx)
        settings_length = gr.Number(value=128)
        ctx.fields["max_seq_length"] = settings_length
        data_tab.follow_max_seq_length(ctx, settings_length)
    return ctx


def test_fields_registered(ctx):
    assert {"data_path", "validation_path", "validation_fraction", "prompt_column", "response_column",
            "system_column", "text_column", "train_on_answers_only"} <= set(ctx.fields)
    assert ctx.fields["data_path"].label == "Training file"
    assert isinstance(ctx.fields["validation_fraction"], gr.Slider)
    assert ctx.data.max_len.value == 128  # the Settings tab's max_seq_length, linked after the build


def test_upload_fills_every_output(ctx, gradio_uploads):
    source = gradio_uploads / "in" / "my data (1).jsonl"
    source.parent.mkdir()
    rows = [{"question": "Is <b> bold?", "answer": "Yes & no."}, {"question": "Empty?", "answer": ""}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = data_tab.on_upload(ctx, str(source), "tiny-test", True, 128, 0.5, "")
    path = out.data_path
    assert Path(path).parent == ctx.uploads_dir.resolve() and Path(path).name == "my data (1).jsonl"
    assert "Question / answer" in out.status and "2 rows" in out.status
    assert list(out.table.columns) == ["question", "answer"]
    assert "Is &lt;b&gt; bold?" in out.preview and "Yes &amp; no.&lt;|im_end|&gt;" in out.preview
    assert "Tokens per example" in out.stats and "<svg" in out.histogram and "cut-off: 128 tokens" in out.histogram
    assert out.problems.to_dict("records")[0]["Row"] == "Line 2"
    assert "Line 1</div>" in out.preview  # the preview numbers rows as the problems do
    assert "Training rows: **1**" in out.split
    mapping = (out.prompt_column, out.response_column, out.system_column, out.text_column)
    assert tuple(box["value"] for box in mapping) == ("question", "answer", "", "")

    dropped = data_tab.on_drop(ctx, path, "question", "answer", "", "", "tiny-test", True, 128, 0.0, "")
    assert dropped.data_path.endswith("my data (1).clean.jsonl") and "dropped 1 unusable" in dropped.drop_note
    assert "Question / answer" in dropped.status  # the copy keeps the user's own columns


def test_bad_upload_is_one_sentence(ctx, gradio_uploads):
    bad = gradio_uploads / "sheet.csv"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    out = data_tab.on_upload(ctx, str(bad), "tiny-test", True, 128, 0.1, "")
    assert out.status.startswith("**Error:**") and "xlsx" in out.status and "Traceback" not in out.status


def test_bad_upload_keeps_the_file_already_in_use(ctx, gradio_uploads):
    good = gradio_uploads / "good.jsonl"
    good.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n", encoding="utf-8")
    in_use = data_tab.on_upload(ctx, str(good), "tiny-test", True, 128, 0.0, "").data_path
    bad = gradio_uploads / "notes.json"
    bad.write_text("{not json", encoding="utf-8")
    out = data_tab.on_upload(ctx, str(bad), "tiny-test", True, 128, 0.0, "", in_use)
    assert out.status.startswith("**Error:**") and "notes.json" in out.status
    assert "still **good.jsonl**" in out.status
    assert all(o == gr.update() for o in slots(out) if o is not out.status)  # path, preview, table... untouched


def test_mapping_by_hand(ctx):
    ctx.uploads_dir.mkdir()
    path = ctx.uploads_dir / "odd.csv"
    path.write_text("a,b\nPing?,Pong.\n", encoding="utf-8")
    out = data_tab.on_sample(ctx, str(path), "tiny-test", True, 128, 0.1, "")
    assert "Action needed" in out.status and "No usable rows" in out.preview
    out = data_tab.on_mapping(ctx, str(path), "a", "b", "", "", "tiny-test", True, 128, 0.1, "")
    assert "Columns mapped by hand" in out.status and "Pong." in out.preview


def test_renderers_escape_and_mark():
    page = segments_html([(4, [("<script>alert(1)</script>", False), ("a & b", True)])])
    assert "<script>" not in page and "&lt;script&gt;" in page and "Row 4" in page and "a &amp; b" in page
    svg = histogram_svg([10, 20, 600, 700], 512)
    assert svg.count("<rect") == 30 and "cut-off: 512 tokens" in svg
    assert histogram_svg([], 512) == ""


def test_a_path_outside_the_app_folders_is_refused_by_every_handler(ctx, tmp_path, gradio_uploads):
    """The page sends the training file as a plain string; an API client can send any. Each handler that reads it
    refuses one outside the uploads, samples and runs folders (after symlinks) in one sentence, and shows nothing
    of it."""
    outside = tmp_path / "elsewhere" / "private.csv"
    outside.parent.mkdir()
    outside.write_text("prompt,response\nWho?,ZQXSECRET\n", encoding="utf-8")
    ctx.uploads_dir.mkdir()
    link = ctx.uploads_dir / "inside.csv"
    link.symlink_to(outside)
    refused = "is outside the app's folders: upload the file on the Data tab."
    for path in (str(outside), str(link), "/etc/passwd", str(ctx.uploads_dir / ".." / "elsewhere" / "private.csv")):
        outputs = [data_tab.on_sample(ctx, path, "tiny-test", True, 128, 0.1, ""),
                   data_tab.on_mapping(ctx, path, "prompt", "response", "", "", "tiny-test", True, 128, 0.1, ""),
                   data_tab.on_view(ctx, path, "prompt", "response", "", "", "tiny-test", True, 128),
                   data_tab.on_drop(ctx, path, "prompt", "response", "", "", "tiny-test", True, 128, 0.1, ""),
                   data_tab.split_for(ctx, path, "prompt", "response", "", "", 0.1, ""),
                   data_tab.on_upload(ctx, path, "tiny-test", True, 128, 0.1, ""),
                   data_tab.on_validation(ctx, path, 0.1, "", "", "", "", "")]
        for out in outputs:
            text = str(out)
            assert refused.removesuffix("upload the file on the Data tab.") in text and "ZQXSECRET" not in text
        assert refused in outputs[0].status and outputs[0].data_path == gr.update()  # the training file stays
    assert sorted(p.name for p in ctx.uploads_dir.iterdir()) == ["inside.csv"]  # nothing copied in
    # A model "folder" outside the app's folders is refused too; the preview still shows the rows.
    sample = str(sorted(SAMPLES_DIR.glob("*.jsonl"))[0])
    out = data_tab.on_sample(ctx, sample, str(tmp_path / "elsewhere"), True, 128, 0.1, "")
    assert "**Token lengths unavailable:** The model folder elsewhere is outside the app's folders" in out.stats
    # The shipped sample itself was read: its rows are shown.
    assert "Chat messages" in out.status or "Detected" in out.status


CLINIC = ("Customer question,Our reply\n"
          "How do I book an appointment with the clinic?,Call us at +44 20 7946 0958 or mail desk@clinic.org.\n"
          ",\n"
          "How can I book an appointment with the clinic?,Call us at +44 20 7946 0958 or mail desk@clinic.org!\n"
          "What are your hours?,\n"
          "How do I book an appointment with the clinic?,We do not take bookings.\n"
          "Tell me everything about parking.," + " ".join(["The car park is behind the building."] * 60) + "\n")


def test_new_problem_kinds_at_the_rows_the_spreadsheet_shows(ctx, gradio_uploads):
    """Issue 15: blank rows, reworded copies, contradictions, personal data and rows over the cut-off are listed
    at the spreadsheet's row numbers (header = row 1) with the row's first words and the row it resembles; the
    mapping opens when unsure; the fixed copy stays a CSV."""
    source = gradio_uploads / "clinic.csv"
    source.write_text(CLINIC, encoding="utf-8")
    out = data_tab.on_upload(ctx, str(source), "tiny-test", True, 128, 0.0, "")
    assert out.file_name == "clinic.csv" and out.data_path.endswith("clinic.csv") and out.data_path != "clinic.csv"
    found = {(r["Row"], r["Problem"]): r for r in out.problems.to_dict("records")}
    assert {("Row 2", "personal data"), ("Row 3", "blank row"), ("Row 4", "near duplicate"),
            ("Row 5", "empty response"), ("Row 6", "contradiction"), ("Row 7", "too long")} <= set(found)
    near = found[("Row 4", "near duplicate")]
    assert near["Like row"] == "Row 2" and near["Alike"].endswith("%") and near["Starts with"].startswith("How can I")
    assert found[("Row 6", "contradiction")]["Like row"] == "Row 2"
    # Each problem's fix is one the page offers, by the words on its button.
    assert "Hide personal data" in found[("Row 2", "personal data")]["Details"]
    assert any(label.startswith("Hide personal data") for label, _ in data_tab.FIX_CHOICES)
    # The preview numbers rows as the spreadsheet does: the first example is row 2 (row 1 is the header).
    assert "Row 2</div>" in out.preview and "Row 1</div>" not in out.preview
    assert "1 row cannot be used and 0 repeat an earlier row" in out.status
    assert out.mapping_panel["open"] is True and out.prompt_column["value"] == "Customer question"
    assert out.readiness.startswith("**Is this enough?**") and "usable rows" in out.readiness

    fixes = ["drop_near_duplicates", "mask_personal_data", "drop_long"]
    fixed = data_tab.on_fix(ctx, fixes, out.data_path, "Customer question", "Our reply", "", "", "tiny-test", True,
                            128, 0.0, "")
    assert fixed.file_name == "clinic.clean.csv" and "Kept" in fixed.drop_note and "masked" in fixed.drop_note
    text = Path(fixed.data_path).read_text(encoding="utf-8")
    assert text.startswith("Customer question,Our reply") and "[EMAIL]" in text and "desk@clinic.org" not in text
    assert "How can I book" not in text and "parking" not in text
    kinds = {r["Problem"] for r in fixed.problems.to_dict("records")}
    assert not kinds & {"near duplicate", "personal data", "too long"}
    assert data_tab.on_fix(ctx, [], out.data_path, "", "", "", "", "tiny-test", True, 128, 0.0, "").drop_note


def test_a_document_gets_a_sentence_that_stays(ctx, gradio_uploads):
    doc = gradio_uploads / "faq.docx"
    doc.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    out = data_tab.on_upload(ctx, str(doc), "tiny-test", True, 128, 0.1, "")
    assert out.status.startswith("**Error:**") and ".xlsx" in out.status and "Traceback" not in out.status


def test_problems_table_fits_the_page(ctx):
    """Every column of the problems table has a width, so the Details wrap instead of pushing the row it resembles
    and how alike off the right edge."""
    table = ctx.data.view.problems
    assert table.wrap and len(table.column_widths) == len(data_tab.PROBLEM_COLUMNS)
    assert sum(float(w.rstrip("%")) for w in table.column_widths) == 100


def test_a_validation_row_that_repeats_a_training_row_is_named(ctx, gradio_uploads):
    """A separate validation file with a training row in it (a leak): the split line names the validation row, its
    first words and the training row it repeats, at the rows both spreadsheets show."""
    source = gradio_uploads / "clinic.csv"
    source.write_text(CLINIC, encoding="utf-8")
    out = data_tab.on_upload(ctx, str(source), "tiny-test", True, 128, 0.0, "")
    held_out = gradio_uploads / "held-out.csv"
    held_out.write_text("Customer question,Our reply\nDo you have parking for bikes?,Racks are by the door.\n"
                        "How do I book an appointment with the clinic?,Call us at +44 20 7946 0958 or mail "
                        "desk@clinic.org.\n", encoding="utf-8")
    kept, split = data_tab.on_validation(ctx, str(held_out), 0.0, out.data_path, "Customer question", "Our reply",
                                         "", "")
    assert kept.endswith("held-out.csv") and "validation rows come from **held-out.csv**" in split
    assert "**1 of the validation rows repeats a training row**" in split
    assert "- validation row 3 (“How do I book an appointment with the clinic?”) repeats training row 2" in split
    shown = data_tab.on_mapping(ctx, out.data_path, "Customer question", "Our reply", "", "", "tiny-test", True, 128,
                                0.0, kept)
    assert shown.split == split  # redrawing the training file keeps the leak in view
    no_leak = gradio_uploads / "fresh.csv"
    no_leak.write_text("Customer question,Our reply\nDo you have parking for bikes?,Racks are by the door.\n",
                       encoding="utf-8")
    assert "repeat" not in data_tab.on_validation(ctx, str(no_leak), 0.0, out.data_path, "", "", "", "")[1]
    # The validation path is read now, so one from outside the app's folders is refused like the training file.
    refused = data_tab.split_for(ctx, out.data_path, "", "", "", "", 0.0, "/etc/passwd")
    assert "outside the app's folders" in refused and "root:" not in refused


def test_the_runs_own_system_prompt_is_set_here_and_shown_in_the_preview(ctx, gradio_uploads):
    """The clinic's standing instruction goes into every row without one: the Data tab is where it is set, and the
    preview and the token lengths show the rows as they will train, with it."""
    assert ctx.fields["system_prompt"].label == "System prompt (optional)"
    source = gradio_uploads / "clinic.jsonl"
    source.write_text("".join(json.dumps({"question": f"Open on day {i}?", "answer": "Yes, 8 to 18."}) + "\n"
                              for i in range(4)), encoding="utf-8")
    path = data_tab.on_upload(ctx, str(source), "tiny-test", True, 128, 0.0, "").data_path
    clinic = "You answer for the Riverside vet clinic."
    plain = data_tab.on_view(ctx, path, "question", "answer", "", "", "tiny-test", True, 128)
    with_prompt = data_tab.on_view(ctx, path, "question", "answer", "", "", "tiny-test", True, 128, clinic)
    assert clinic not in plain.preview and clinic in with_prompt.preview
    assert with_prompt.stats != plain.stats  # the lengths count the system prompt's tokens too
    # A new file, a mapping by hand and a fix show it too: every redraw gets it last.
    uploaded = data_tab.on_upload(ctx, str(source), "tiny-test", True, 128, 0.0, "", "", clinic)
    assert clinic in uploaded.preview
    assert clinic in data_tab.on_mapping(ctx, path, "question", "answer", "", "", "tiny-test", True, 128, 0.0, "",
                                         clinic).preview


def test_a_preference_file_previews_both_answers_and_flags_identical_pairs(tmp_path):
    from studio import data
    from studio.config import TINY_TEST_MODEL

    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Capital of France?", "chosen": "Paris is the capital.", "rejected": "Lyon, <I think>."},
            {"prompt": "2+2?", "chosen": "4", "rejected": "4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = data.load_data(path)
    preview, _, _ = data_tab.model_view(report, TINY_TEST_MODEL, True, 128)
    assert "Paris is the capital." in preview and "Rejected answer" in preview
    assert "Lyon, &lt;I think&gt;." in preview  # escaped like the rest
    assert list(report.preview.columns) == ["prompt", "chosen", "rejected"]  # the table as read: both columns
    problems = data_tab.problems_frame(report)
    assert "same" in " ".join(problems.astype(str).values.ravel())
