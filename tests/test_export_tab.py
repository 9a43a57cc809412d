"""The export section: GGUF and Space buttons write into the run's folder and say how to use what they made; the
run id from the page is checked."""

from __future__ import annotations

import pytest

from studio import train
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


def test_gguf_button_writes_into_the_run_and_says_how_to_use_it(finished):
    ctx, run_dir = finished
    text = export_tab.make_gguf(ctx, "clinic", "f16")
    out = run_dir / "exports" / "gguf"
    assert (out / "clinic-f16.gguf").is_file() and (out / "Modelfile").is_file(), text
    assert "ollama create clinic -f Modelfile" in text and "runs/clinic/exports/gguf/clinic-f16.gguf" in text
    assert str(ctx.runs_dir.parent) not in text  # no server folder above the runs
    assert export_tab.make_gguf(ctx, "clinic", "q2_k").startswith("**Error:**")


def test_space_button_writes_a_folder_that_says_python_app_py(finished):
    ctx, run_dir = finished
    text = export_tab.make_space(ctx, "clinic")
    out = run_dir / "exports" / "space"
    assert (out / "app.py").is_file() and (out / "requirements.txt").is_file() and (out / "README.md").is_file()
    assert "python app.py" in text and "runs/clinic/exports/space" in text
    again = export_tab.make_space(ctx, "clinic")
    assert "already there" in again and "python app.py" in again


def test_serve_line_and_curl(finished):
    ctx, _ = finished
    text = export_tab.serve_howto(ctx, "clinic")
    assert "python -m studio serve runs/clinic" in text and "curl http://127.0.0.1:8000/v1/chat/completions" in text
    assert '"model": "clinic"' in text
    assert export_tab.serve_howto_or_blank(ctx, export_tab.NO_RUN) == ""


@pytest.mark.parametrize("run_id", ["../clinic", "/etc", "..", "nope", None, 3])
def test_run_ids_from_a_client_are_checked(finished, run_id):
    ctx, run_dir = finished
    for text in (export_tab.make_gguf(ctx, run_id), export_tab.make_space(ctx, run_id),
                 export_tab.serve_howto(ctx, run_id)):
        assert text.startswith("**Error:**") and "Traceback" not in text
    assert not (run_dir.parent.parent / "exports").exists()
