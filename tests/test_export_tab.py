"""The Share tab: each button writes into the run's folder (the slow ones in a `python -m studio export` process of
their own, followed through a status file), and the tab lists what was made with how to use it; the run id from the
page is checked."""

from __future__ import annotations

import json
import time
import zipfile

import pytest

from studio import export, train
from studio.ui import export_tab
from studio.ui.common import UIContext

from .conftest import write_messages_jsonl
from .test_train import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-tab")

    data = write_messages_jsonl(root / "train.jsonl", 20)
    runs = root / "runs"
    run_dir = runs / "clinic"
    assert train.run(tiny_config(data, max_steps=2, eval_every=0, validation_fraction=0.0), run_dir) == "finished"
    ctx = UIContext(runs_dir=runs, uploads_dir=root / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    return ctx, run_dir


def _wait_until_done(ctx, run_id, timeout_s=240):
    """Poll as the page does, until nothing is being made any more."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text, live = export_tab.describe_exports(ctx, run_id)
        if not live:
            return text
        assert "being made" in text
        time.sleep(1)
    raise AssertionError(f"exports still running after {timeout_s} s")


def test_zip_is_downloadable_and_listed_with_how_to_load_it(finished):
    ctx, run_dir = finished
    view = export_tab.make_zip(ctx, "clinic")
    assert "ready" in view.status and "clinic" in view.status
    with zipfile.ZipFile(view.zip_file) as archive:
        assert "adapter_model.safetensors" in archive.namelist()
    assert (run_dir / "exports" / "clinic-adapter.zip").is_file()
    text, live = export_tab.describe_exports(ctx, "clinic")
    assert not live and "`runs/clinic/exports/clinic-adapter.zip`" in text and " MB)" in text
    assert "AutoPeftModelForCausalLM.from_pretrained" in text


def test_slow_exports_run_in_their_own_process_and_say_how_to_use_them(finished):
    ctx, run_dir = finished
    for target in ("gguf-f16", "gguf-q8_0", "space", "merged"):
        status = export_tab.start(ctx, target, "clinic")
        assert "in the background" in status, status
    # The page does not wait: the jobs are live on disk, and a second press is refused while one is.
    states = {t: export.export_job(run_dir, t)["state"] for t in ("gguf-f16", "merged")}
    assert set(states.values()) <= {"starting", "running", "done"}, states
    if export.export_job(run_dir, "gguf-f16")["state"] != "done":
        assert "already being made" in export_tab.start(ctx, "gguf-f16", "clinic")
    view = export_tab.show_results(ctx, "clinic")
    assert "Made from run clinic" in view.results

    text = _wait_until_done(ctx, "clinic")
    gguf = run_dir / "exports" / "gguf"
    # Each GGUF has its own Modelfile: f16 and q8_0 in one folder do not overwrite each other's.
    assert sorted(p.name for p in gguf.iterdir()) == ["clinic-f16.Modelfile", "clinic-f16.gguf",
                                                      "clinic-q8_0.Modelfile", "clinic-q8_0.gguf"]
    assert (gguf / "clinic-q8_0.Modelfile").read_text().startswith("FROM ./clinic-q8_0.gguf")
    assert (gguf / "clinic-q8_0.gguf").stat().st_size < 0.75 * (gguf / "clinic-f16.gguf").stat().st_size
    lines = "cd runs/clinic/exports/gguf\nollama create clinic-f16 -f clinic-f16.Modelfile\nollama run clinic-f16"
    assert lines in text
    assert "ollama create clinic-q8_0 -f clinic-q8_0.Modelfile" in text
    assert "`runs/clinic/exports/gguf/clinic-f16.gguf`" in text
    assert (run_dir / "exports" / "space" / "app.py").is_file()
    assert "cd runs/clinic/exports/space" in text and "python app.py" in text and "huggingface.co/spaces/" in text
    assert (run_dir / "exports" / "merged" / "config.json").is_file()
    assert 'from_pretrained("runs/clinic/exports/merged")' in text
    assert str(ctx.runs_dir.parent) not in text  # no server folder above the runs
    assert json.loads(export.job_file(run_dir, "space").read_text())["state"] == "done"
    assert "already made" in export_tab.start(ctx, "space", "clinic")
    assert not export_tab.show_results(ctx, "clinic").timer.active  # nothing live: the poll stops


def test_a_failed_export_says_why(finished, tmp_path):
    ctx, run_dir = finished
    # A job whose process died without a word (killed, the machine restarted) is shown as failed, not "being made".
    export.job_file(run_dir, "gguf-q8_0").write_text(json.dumps({"state": "running", "pid": 2**22 + 1,
                                                                  "started": time.time() - 60}))
    text, live = export_tab.describe_exports(ctx, "clinic")
    assert not live and "GGUF (q8_0, smaller)**: failed. The export process ended unexpectedly" in text


def test_serve_line_and_curl(finished):
    ctx, _ = finished
    text = export_tab.serve_howto(ctx, "clinic")
    assert "python -m studio serve runs/clinic" in text and "curl http://127.0.0.1:8000/v1/chat/completions" in text
    assert '"model": "clinic"' in text
    assert export_tab.serve_howto_or_blank(ctx, export_tab.NO_RUN) == ""


def test_the_hub_box_or_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row, note = export_tab.hub_controls()
    assert row.visible is False and note.startswith("**Hugging Face Hub:** this machine is set to work offline")
    assert "\n" not in note
    # Online, and no token anywhere (environment or saved login).
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", "/nonexistent/token")
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", "/nonexistent/stored_tokens")
    row, note = export_tab.hub_controls()
    assert row.visible is False and "log in first with `hf auth login`" in note


def test_the_run_list_offers_finished_runs_and_follows_the_chat(finished):
    ctx, _ = finished
    picker = export_tab.run_list(ctx, None)
    assert picker.value == "clinic" and [v for _, v in picker.choices] == ["clinic"]
    assert export_tab.follow_chat_run(ctx, "clinic").value == "clinic"


@pytest.mark.parametrize("run_id", ["../clinic", "/etc", "..", "nope", None, 3])
def test_run_ids_from_a_client_are_checked(finished, run_id):
    ctx, run_dir = finished
    for text in (export_tab.start(ctx, "gguf-f16", run_id), export_tab.start(ctx, "space", run_id),
                 export_tab.serve_howto(ctx, run_id), export_tab.make_zip(ctx, run_id).status,
                 export_tab.push_space(ctx, run_id, "a/b")):
        assert text.startswith("**Error:**") and "Traceback" not in text
    assert export_tab.start(ctx, "../../x", "clinic").startswith("**Error:**")
    assert not (run_dir.parent.parent / "exports").exists()
