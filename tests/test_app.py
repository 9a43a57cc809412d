"""The app starts as `python -m studio ui`, answers HTTP, and loads no model at start."""

import json
import os
import socket
import subprocess
import time
import urllib.request

from .conftest import studio_cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_page_quickly(tmp_path):
    port = free_port()
    env = {**os.environ, "STUDIO_TEST_MODELS": "1"}
    proc = subprocess.Popen(studio_cmd("ui", "--port", str(port), "--runs-dir", str(tmp_path / "runs")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    started = time.time()
    try:
        body = None
        while time.time() - started < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read()) from None
                time.sleep(0.5)
        assert body is not None, "the page was not served within 60 s"
        assert "Studio" in body
        # The app binds to this machine only unless --share is given.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
            config = response.read().decode()
        for tab in ("1. Model", "2. Data", "3. Settings", "4. Train", "5. Chat"):
            assert tab in config
        # The other tabs' handlers are page glue, not an API: a client sees only the Chat tab's named endpoints.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=5) as response:
            api = json.loads(response.read().decode())
        assert not api["unnamed_endpoints"]
        assert set(api["named_endpoints"]) == {"/chat", "/stop", "/clear", "/refresh_runs", "/list_runs",
                                               "/batch_compare", "/validation_loss", "/export_zip",
                                               "/export_merged", "/push_to_hub", "/train_next_version"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_share_requires_a_login():
    from studio.ui.demo import resolve_auth

    creds, generated = resolve_auth(share=True, auth=None, user="studio")
    assert creds[0] == "studio" and creds[1] == generated and len(generated) >= 12
    assert resolve_auth(share=True, auth="ann:secret", user="studio") == (("ann", "secret"), None)
    assert resolve_auth(share=False, auth=None, user="studio") == (None, None)


def redrawn_by(app, elem_id: str, event: str) -> set[str]:
    """The elem_ids of every component that the `event` of the component `elem_id` redraws, from the page's config
    (what the browser is told to do), whichever handlers do it."""
    config = app.get_config_file()
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    source = next(i for i, name in ids.items() if name == elem_id)
    return {ids[o] for dep in config["dependencies"] if [source, event] in [list(t) for t in dep["targets"]]
            for o in dep["outputs"] if ids.get(o)}


def test_messages_go_with_the_action_they_belong_to(tmp_path):
    """A "Cannot use this model" about the previous model goes when another is picked; the Settings tab shows the
    estimate and redraws it when a setting it depends on changes."""
    from studio.ui.app import build_app
    from studio.ui.model_tab import forget_model_info

    app = build_app(tmp_path / "runs", test_models=True)
    assert "model-info" in redrawn_by(app, "model-choice", "change") and forget_model_info() == ""
    for field in ("max_steps", "batch_size", "max_seq_length", "method"):
        assert "settings-estimate" in redrawn_by(app, f"field-{field}", "change"), field


def test_a_page_opened_while_a_run_trains_lands_on_the_train_tab(tmp_path):
    import gradio as gr

    from studio.config import RunConfig
    from studio.events import CONFIG_FILE, write_status
    from studio.ui.app import landing_tab

    runs = tmp_path / "runs"
    (runs / "live").mkdir(parents=True)
    RunConfig().save(runs / "live" / CONFIG_FILE)
    write_status(runs / "live", status="finished")
    assert landing_tab(runs) == gr.skip()
    write_status(runs / "live", status="running", pid=os.getpid())
    assert landing_tab(runs).selected == "train"


def test_the_model_check_says_terms_in_plain_words():
    from studio.ui.model_tab import describe_model

    text = describe_model("tiny-test", False)
    assert "hidden size 64 (numbers per token inside each layer" in text, text
    assert "layers (processing stages" in text and "(word pieces it reads and writes)" in text


def test_the_fit_badges_start_from_the_settings_the_form_shows(tmp_path):
    """The Model tab's memory column assumes the sequence length and batch size the Settings tab starts with (the
    Quick test preset), not RunConfig's bare defaults, so the two tabs agree before anything is touched."""
    from studio.ui.app import build_app
    from studio.ui.common import form_defaults
    from studio.ui.model_tab import catalog_table

    config = build_app(tmp_path / "runs", test_models=True).get_config_file()
    catalog = next(c for c in config["components"] if c["props"].get("elem_id") == "catalog")["props"]["value"]
    start = form_defaults()
    expected = catalog_table(start.method, start.max_seq_length, start.batch_size)
    memory = catalog["headers"].index("Est. memory (longest rows)")
    assert [row[memory] for row in catalog["data"]] == list(expected["Est. memory (longest rows)"])
    settings = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]}
    assert (settings["field-max_seq_length"], settings["field-batch_size"]) == (start.max_seq_length, start.batch_size)


def test_terms_come_with_plain_words(tmp_path):
    """A domain expert who does not know ML reads what loss, validation, tokens and perplexity mean where they
    meet them; methods are named by their labels, never by their config names."""
    from studio.ui.app import build_app

    config = build_app(tmp_path / "runs", test_models=True).get_config_file()
    page = json.dumps(config, default=str)
    for words in ("how wrong the model's guesses of the next word are", "rows it never trains on",
                  "Tokens are the word pieces a model reads", "perplexity: about how many words"):
        assert words in page, words
    method = next(c for c in config["components"] if c["props"].get("elem_id") == "field-method")["props"]
    for label, value in method["choices"]:
        assert value not in label and len(label) > 20, (label, value)  # "LoRA fp32 (full precision): ..."
