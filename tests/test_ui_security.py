"""The app as an attacker with a login sees it: every handler, called by its number over raw HTTP, refuses a path
outside the app's folders; before the login nothing names a run; the CSVs the app writes are safe in a spreadsheet.

One app is served for the module (127.0.0.1, a free port, a login). Handlers registered with
api_visibility="private" are still callable by number (fn_index) at /gradio_api/run/predict: that is what is tried.
"""

from __future__ import annotations

import csv
import os
import re
import socket
from pathlib import Path

import httpx
import pytest

from studio import jobs, paths
from studio.config import RunConfig
from studio.data import SAMPLES_DIR
from studio.errors import UserError
from studio.events import CONFIG_FILE, write_status

USER, PASSWORD = "ann", "s3cret-pw"
MARKER = "ZQXSECRET"  # in every row of the outside file, never in its path
PASSWD_LINE = "root:x:0:0"
HIDDEN_RUN = "20990101-000000-hidden-run-4242"
STRING_TYPES = {"textbox", "dropdown", "radio", "code", "markdown"}
WHOLE_FORM = "field-method"  # an input of the handlers that take every RunConfig field (start, estimate, ...)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _finished_run(runs_dir: Path, run_id: str) -> Path:
    run_dir = runs_dir / run_id
    (run_dir / "adapter").mkdir(parents=True)
    RunConfig(model="tiny-test").save(run_dir / CONFIG_FILE)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    write_status(run_dir, status="finished")
    return run_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from studio.ui.app import UPLOAD_LIMIT, build_app

    root = tmp_path_factory.mktemp("secure-app")
    runs_dir = root / "runs"
    runs_dir.mkdir()
    _finished_run(runs_dir, HIDDEN_RUN)
    outside = tmp_path_factory.mktemp("elsewhere") / "private.csv"
    with open(outside, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "response"])
        for i in range(40):
            writer.writerow([f"Question {i}?", f"{MARKER} answer {i}."])
    app = build_app(runs_dir, test_models=True)
    app.queue(default_concurrency_limit=4)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, auth=(USER, PASSWORD), prevent_thread_lock=True,
               quiet=True, show_error=False, max_file_size=UPLOAD_LIMIT, footer_links=[])
    try:
        yield {"url": f"http://127.0.0.1:{port}", "runs": runs_dir, "uploads": root / "uploads", "outside": outside}
    finally:
        app.close()


def _login(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    response = client.post("/login", data={"username": USER, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client


# --- 1. no file outside the app's folders, whichever handler is called -----------------------------------------
def _file_value(path) -> dict:
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def _base_values(dep: dict, components: dict, sample: str) -> list:
    """What the page would send: each input's value as built, the training file a shipped sample (for the Data tab
    handlers), and one-token answers so the chat handlers stay quick."""
    ids = [components[i]["props"].get("elem_id") for i in dep["inputs"]]
    whole_form = WHOLE_FORM in ids
    values = []
    for i in dep["inputs"]:
        props = components[i]["props"]
        value = props.get("value")
        if props.get("elem_id") == "field-data_path" and not whole_form:
            value = sample  # so a handler gets as far as its other inputs (the validation file, the model)
        if props.get("label") == "Max new tokens":
            value = 1
        values.append(value)
    return values


def _call(client: httpx.Client, fn_index: int, values: list) -> str:
    response = client.post("/gradio_api/run/predict", json={"fn_index": fn_index, "data": values})
    return response.text


def _leaks(text: str) -> bool:
    return MARKER in text or PASSWD_LINE in text


def test_every_handler_refuses_a_path_outside_the_app(served, tmp_path):
    client = _login(served["url"])
    config = client.get("/config").json()
    components = {c["id"]: c for c in config["components"]}
    deps = config["dependencies"]
    assert len(deps) > 40  # every tab's handlers are there to be tried
    outside = served["outside"]
    uploads = served["uploads"]
    uploads.mkdir(exist_ok=True)
    link = uploads / "looks-inside.csv"  # a symlink in the uploads folder to the outside file: resolved, refused
    link.symlink_to(outside)
    sample = str(sorted(SAMPLES_DIR.glob("*.jsonl"))[0])
    runs_before = sorted(p.name for p in served["runs"].iterdir())
    leaked, seen_refusal, tried = [], 0, 0
    tried_groups = set()
    for dep in deps:
        fn_index, base = dep["id"], _base_values(dep, components, sample)
        kinds = [components[i]["type"] for i in dep["inputs"]]
        # Every handler: every string input at once, with each outside path, and every file input likewise.
        for bad in (str(outside), "/etc/passwd", str(link)):
            values = [bad if kind in STRING_TYPES else _file_value(bad) if kind == "file" else value
                      for kind, value in zip(kinds, base)]
            text = _call(client, fn_index, values)
            tried += 1
            seen_refusal += "outside the app's folders" in text
            if _leaks(text):
                leaked.append((dep.get("api_name"), "all inputs", bad, text[:300]))
        # One handler of each kind (note_1, note_2... call one function): each string or file input on its own, so
        # a check on one input cannot hide a missing check on another.
        group = (re.sub(r"_\d+$", "", str(dep.get("api_name"))), tuple(dep["inputs"]))
        if group in tried_groups:
            continue
        tried_groups.add(group)
        for position, kind in enumerate(kinds):
            if kind not in STRING_TYPES and kind != "file":
                continue
            values = list(base)
            values[position] = str(outside) if kind != "file" else _file_value(outside)
            text = _call(client, fn_index, values)
            tried += 1
            if _leaks(text):
                label = components[dep["inputs"][position]]["props"].get("elem_id")
                leaked.append((dep.get("api_name"), label, str(outside), text[:300]))
    assert not leaked, leaked
    assert seen_refusal > 10, "the handlers should say the path is outside the app's folders"
    # Nothing started a run, nothing was copied in from outside, and the file route does not serve it either.
    assert sorted(p.name for p in served["runs"].iterdir()) == runs_before
    assert jobs.active_run(served["runs"]) is None
    for path in uploads.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert MARKER not in path.read_text(errors="replace"), path
    for path in (outside, "/etc/passwd"):
        assert not _leaks(client.get(f"/gradio_api/file={path}").text)
    assert tried > 200


def test_a_real_upload_still_reaches_the_uploads_folder(served):
    """An upload goes to gradio's upload folder, then the Data tab copies it into uploads and reads it."""
    client = _login(served["url"])
    config = client.get("/config").json()
    components = {c["id"]: c for c in config["components"]}
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "on_upload")
    uploaded = client.post("/gradio_api/upload", files={"files": ("my rows.csv", b"prompt,response\nHi?,Hello.\n")})
    assert uploaded.status_code == 200, uploaded.text
    values = _base_values(dep, components, "")
    values[0] = _file_value(uploaded.json()[0])
    response = client.post("/gradio_api/run/predict", json={"fn_index": dep["id"], "data": values})
    assert response.status_code == 200, response.text
    path = response.json()["data"][0]
    assert Path(path).parent == served["uploads"].resolve() and Path(path).name == "my rows.csv"
    assert "Hello." in response.text


# --- 2. nothing about runs before the login ----------------------------------------------------------------------
def test_nothing_names_a_run_before_the_login(served):
    anonymous = httpx.Client(base_url=served["url"], timeout=30)
    for route in ("/", "/?all_endpoints=true", "/config", "/gradio_api/info", "/gradio_api/info?all_endpoints=true",
                  "/gradio_api/openapi.json", "/gradio_api/runs", "/gradio_api/login_check"):
        response = anonymous.get(route)
        assert HIDDEN_RUN not in response.text and "hidden-run" not in response.text, route
    # After the login the run is there: the test above looked for something that exists.
    client = _login(served["url"])
    listed = client.post("/gradio_api/run/list_runs", json={"data": []})
    assert HIDDEN_RUN in listed.text


# --- the checks themselves ------------------------------------------------------------------------------------
def test_check_client_path(tmp_path):
    uploads, runs = tmp_path / "uploads", tmp_path / "runs"
    uploads.mkdir()
    runs.mkdir()
    roots = paths.app_roots(runs, uploads)
    inside = uploads / "rows.csv"
    inside.write_text("a\n")
    assert paths.check_client_path(str(inside), roots) == inside.resolve()
    assert paths.check_client_path(str(uploads / "not-yet.csv"), roots) == (uploads / "not-yet.csv").resolve()
    sample = sorted(SAMPLES_DIR.iterdir())[0]
    assert paths.check_client_path(sample, roots) == sample.resolve()
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("a\n")
    (uploads / "link.csv").symlink_to(outside)
    for bad in (outside, tmp_path / "missing.csv", "/etc/passwd", uploads / ".." / "elsewhere.csv",
                uploads / "link.csv", "relative.csv"):
        with pytest.raises(UserError, match=r"is outside the app's folders: upload the file on the Data tab\.$"):
            paths.check_client_path(str(bad), roots)
    for bad in ("", "   ", None, 3, ["x"]):
        with pytest.raises(UserError, match="No file was given"):
            paths.check_client_path(bad, roots)
    with pytest.raises(UserError, match="is not a valid path"):
        paths.check_client_path(str(uploads / "a\0b.csv"), roots)


def test_check_client_model_and_config(tmp_path):
    uploads, runs = tmp_path / "uploads", tmp_path / "runs"
    (runs / "r1" / "merged").mkdir(parents=True)
    roots = paths.app_roots(runs, uploads)
    for name in ("SmolLM2-135M-Instruct (offline)", "tiny-test", "Qwen/Qwen2.5-0.5B-Instruct", "gpt2"):
        assert paths.check_client_model(name, roots) == name  # not a folder: the model code decides
    assert paths.check_client_model(str(runs / "r1" / "merged"), roots) == str((runs / "r1" / "merged").resolve())
    for folder in (str(tmp_path), "/etc", "~", "./models/x"):
        with pytest.raises(UserError, match="The model folder .* is outside the app's folders"):
            paths.check_client_model(folder, roots)
    config = RunConfig(data_path=str(tmp_path / "x.csv"))
    with pytest.raises(UserError, match="x.csv is outside the app's folders"):
        paths.check_config_paths(config, roots)
    config = RunConfig(data_path=str(uploads / "x.csv"), validation_path="/etc/passwd")
    with pytest.raises(UserError, match="passwd is outside the app's folders: upload it as the separate validation"):
        paths.check_config_paths(config, roots)
    config = RunConfig(data_path=str(uploads / "x.csv"))
    assert paths.check_config_paths(config, roots).data_path == str((uploads / "x.csv").resolve())


def test_batch_prompt_file_must_be_an_upload(tmp_path):
    from studio.ui.chat_tab import UPLOADED, batch_items

    gradio_uploads = tmp_path / "gradio"
    gradio_uploads.mkdir()
    prompts = gradio_uploads / "prompts.txt"
    prompts.write_text("First?\nSecond?\n")
    roots = (gradio_uploads, tmp_path / "uploads")
    assert len(batch_items(tmp_path / "runs", None, UPLOADED, str(prompts), roots)) == 2
    outside = tmp_path / "outside.txt"
    outside.write_text(f"{MARKER}?\n")
    with pytest.raises(UserError, match="outside the app's folders: upload the prompt file in the Batch comparison"):
        batch_items(tmp_path / "runs", None, UPLOADED, str(outside), roots)


# --- 3. CSV cells that a spreadsheet would run ------------------------------------------------------------------
def test_csv_cells_that_start_a_formula_are_text():
    for cell in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\t=x", "\r=x", '=HYPERLINK("http://x")'):
        assert paths.csv_cell(cell) == "'" + cell
    for cell in ("plain", " =not first", "", "'=quoted already"):
        assert paths.csv_cell(cell) == cell
    assert paths.csv_cell(-3) == -3 and paths.csv_cell(None) is None  # numbers stay numbers


def test_written_csv_is_escaped(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["=cmd|' /C calc'!A0", "Hi"], "=head": ["@x", "-1"], "n": [-1, 2]})
    path = paths.write_csv(frame, tmp_path / "out.csv")
    assert frame["prompt"].tolist() == ["=cmd|' /C calc'!A0", "Hi"]  # the caller's frame is left as it was
    rows = list(csv.reader(open(path, encoding="utf-8", newline="")))
    assert rows == [["prompt", "'=head", "n"], ["'=cmd|' /C calc'!A0", "'@x", "-1"], ["Hi", "'-1", "2"]]
    assert not any(cell.startswith(paths.FORMULA_STARTS) for row in rows[:1] + [r[:2] for r in rows[1:]]
                   for cell in row)


def test_the_batch_comparison_csv_is_escaped(tmp_path, monkeypatch):
    """The Chat tab's batch comparison writes its CSV through paths.write_csv: an answer that starts with = is
    text in the downloaded file."""
    import pandas as pd

    from studio.chat import BATCH_COLUMNS
    from studio.ui import chat_tab
    from studio.ui.common import UIContext

    class Session:
        def batch_compare(self, items, base_settings, tuned_settings, stop_event=None):
            return pd.DataFrame([{"prompt": "=1+1", "reference": "@ref", "base": "-5", "tuned": "+cmd"}],
                                columns=BATCH_COLUMNS)

    monkeypatch.setattr(chat_tab, "get_session", lambda *a: Session())
    monkeypatch.setattr(chat_tab, "batch_items", lambda *a: [([{"role": "user", "content": "=1+1"}], "@ref")])
    ctx = UIContext(runs_dir=tmp_path / "runs", uploads_dir=tmp_path / "uploads", model_choices=["tiny-test"],
                    default_model="tiny-test")
    settings = [0.0, 0.9, 4, 1.1, 0]
    *_, last = chat_tab.batch(ctx, chat_tab.NO_RUN, chat_tab.UPLOADED, "x.txt", 1, "", True, *settings, *settings)
    csv_path = last.csv.value
    csv_path = csv_path.get("path") if isinstance(csv_path, dict) else csv_path  # gradio may wrap it as file data
    rows = list(csv.reader(open(csv_path, encoding="utf-8", newline="")))
    assert rows[1] == ["'=1+1", "'@ref", "'-5", "'+cmd"]
    os.remove(csv_path)
