"""The chat over HTTP, driven by the real gradio_client: the demo page of one run exposes only its chat
(no training, upload, file or export endpoint), and the Chat tab's named endpoints work."""

from __future__ import annotations

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from studio.chat import ChatSession, GenerationSettings
from studio.errors import UserError
from studio.ui import demo as demo_mod
from studio.ui.chat_tab import build_chat_tab
from studio.ui.common import UIContext
from studio.ui.export_tab import build_export_tab
from studio.ui.sessions import NO_RUN

from .conftest import MEMORISED
from .test_chat import make_trained_run

PROMPT, ANSWER = MEMORISED[1]
SHORT = GenerationSettings(max_new_tokens=12)
FORBIDDEN = ("train", "upload", "file", "export", "merge", "push", "batch", "run", "setting", "loss", "data")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return make_trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def session(trained_run):
    return ChatSession.for_run(trained_run)


def _serve(blocks: gr.Blocks) -> str:
    port = demo_mod.free_port()
    demo_mod.launch_demo(blocks, port, prevent_thread_lock=True)
    return f"http://127.0.0.1:{port}/"


def _answer(history) -> str:
    """The last message's text; the chatbot trims the spaces around it."""
    content = history[-1]["content"]
    return (content if isinstance(content, str) else "".join(part.get("text", "") for part in content)).strip()


def test_demo_serves_only_the_chat(trained_run, session):
    blocks = demo_mod.build_demo(trained_run, session, settings=SHORT)
    url = _serve(blocks)
    try:
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        names = set(api["named_endpoints"])
        assert names == {"/chat", "/stop", "/clear"}, names
        assert not api["unnamed_endpoints"]
        assert not any(word in name for name in names for word in FORBIDDEN)

        base, tuned, box = client.predict(PROMPT, [], [], api_name="/chat")
        assert box == ""
        assert _answer(base) == session.generate(PROMPT, SHORT, use_adapter=False).strip()
        assert _answer(tuned) == session.generate(PROMPT, SHORT, use_adapter=True).strip()
        assert _answer(tuned).startswith(ANSWER)

        # Second turn: each column continues its own conversation.
        base2, tuned2, _ = client.predict("Thanks!", base, tuned, api_name="/chat")
        assert len(base2) == len(tuned2) == 4
        assert _answer(tuned2) == session.generate(
            [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": _answer(tuned)},
             {"role": "user", "content": "Thanks!"}], SHORT).strip()

        # The server behind the page refuses uploads and never hands out the run's files.
        upload = httpx.post(url + "gradio_api/upload", files={"files": ("a.txt", b"hello")}, timeout=10)
        assert upload.status_code >= 400
        for path in (trained_run / "config.json", trained_run / "adapter" / "adapter_config.json"):
            assert httpx.get(f"{url}gradio_api/file={path}", timeout=10).status_code >= 400
        with pytest.raises(Exception, match="Type a message"):
            client.predict("   ", [], [], api_name="/chat")
    finally:
        blocks.close()


def test_share_requires_a_login():
    credentials, generated = demo_mod.resolve_auth(share=True, auth=None)
    assert generated and len(generated) >= 12 and credentials == ("demo", generated)
    assert demo_mod.resolve_auth(share=True, auth=None)[1] != generated  # fresh every time
    assert demo_mod.resolve_auth(share=True, auth="ann:pw") == (("ann", "pw"), None)
    assert demo_mod.resolve_auth(share=False, auth=None) == (None, None)
    with pytest.raises(UserError, match="USER:PASSWORD"):
        demo_mod.resolve_auth(share=True, auth="no-colon")


def test_demo_cli_refuses_a_run_without_adapter(tmp_path, capsys):
    assert demo_mod.main([str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.startswith("Error: The run folder")


def test_chat_tab_endpoints(trained_run, session, tmp_path):
    ctx = UIContext(runs_dir=trained_run.parent, uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    with gr.Blocks() as app, gr.Tab("5. Chat") as tab:
        build_chat_tab(ctx, tab)
        build_export_tab(ctx)
    url = _serve(app)
    try:
        client = Client(url, verbose=False)
        runs = client.predict(api_name="/list_runs")
        assert [r["run_id"] for r in runs] == [trained_run.name]
        names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
        assert {"/chat", "/list_runs", "/stop", "/clear", "/batch_compare", "/export_zip"} <= names
        # run, message, base history, tuned history, system prompt, same settings for both,
        # then (temperature, top-p, max new tokens, repetition penalty, seed) for base and for tuned.
        values = [0.0, 0.9, SHORT.max_new_tokens, 1.1, 0]
        base, tuned, _ = client.predict(trained_run.name, PROMPT, [], [], "", True, *values, *values,
                                        api_name="/chat")
        assert _answer(base) == session.generate(PROMPT, SHORT, use_adapter=False).strip()
        assert _answer(tuned) == session.generate(PROMPT, SHORT, use_adapter=True).strip()
        # With no run the tuned column says how to get one; the base column still answers.
        base, tuned, _ = client.predict(NO_RUN, PROMPT, [], [], "", True, *values, *values, api_name="/chat")
        assert _answer(base) == session.generate(PROMPT, SHORT, use_adapter=False).strip()
        assert "pick a finished run" in _answer(tuned)
        zip_file, message = client.predict(trained_run.name, api_name="/export_zip")
        assert zip_file.endswith(".zip") and "ready" in message and trained_run.name in message  # whose zip
        losses = client.predict(trained_run.name, api_name="/validation_loss")
        assert losses["headers"][0] == "run" and {row[0] for row in losses["data"]} == {trained_run.name}
        with pytest.raises(Exception, match="not in the list of choices|not a valid run id"):
            client.predict("../etc", PROMPT, [], [], "", True, *values, *values, api_name="/chat")
    finally:
        app.close()


def test_a_run_that_finished_after_the_server_started_is_a_valid_chat_choice(trained_run, tmp_path):
    """The README's gradio_client example, on a run that appeared after the app started: /list_runs names it, and
    /chat takes it at once, without /refresh_runs first (the run is checked on disk when /chat is called)."""
    import shutil

    from studio.ui.app import build_app

    runs_dir = tmp_path / "runs"
    app = build_app(runs_dir, test_models=True)
    url = _serve(app)
    try:
        shutil.copytree(trained_run, runs_dir / "finished-later")  # a run that finished while the app served
        client = Client(url, verbose=False)  # as the README writes it
        assert [r["run_id"] for r in client.predict(api_name="/list_runs")] == ["finished-later"]
        base, tuned, box = client.predict("finished-later", PROMPT, api_name="/chat")
        assert box == "" and _answer(tuned).startswith(ANSWER) and _answer(base) != _answer(tuned)
        # Anything else is refused in one sentence: a run that is not on disk, an id that would leave the folder.
        for bad, words in (("never-trained", "does not exist"), ("../etc", "not a valid run id")):
            with pytest.raises(Exception, match=words):
                client.predict(bad, PROMPT, api_name="/chat")
    finally:
        app.close()
