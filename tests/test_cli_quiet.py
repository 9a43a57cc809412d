"""Every command prints only our own sentences on stderr: third-party warnings, progress bars and the
tracebacks of expected offline failures go to the command's log file, never to the person's terminal.

Each command runs as a real `python -m studio ...` process, as a person starts it, with the log folder of this
test; a line on stderr that is not one of ours ("Error: ...") fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from studio.config import TINY_TEST_MODEL, RunConfig

from .conftest import studio_cmd, write_messages_jsonl


def _env(log_dir: Path) -> dict:
    # As on a machine without a network: the hub refuses every connection (nothing listens on port 9), so a hub
    # model's check fails after the hub client has logged its retries and tracebacks.
    return {**os.environ, "STUDIO_LOG_DIR": str(log_dir), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
            "STUDIO_TEST_MODELS": "1"}


def _run(log_dir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(studio_cmd(*args), capture_output=True, text=True, timeout=timeout, env=_env(log_dir),
                          check=False)


def _only_our_error(stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ")


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, logs) -> Path:
    """One run trained by `python -m studio train`, checked for a silent stderr on the way."""
    folder = tmp_path_factory.mktemp("quiet")
    data = write_messages_jsonl(folder / "train.jsonl", 20)
    config = folder / "config.json"
    RunConfig(model=TINY_TEST_MODEL, data_path=str(data), max_steps=2, eval_every=0, batch_size=4,
              max_seq_length=64, validation_fraction=0.2).save(config)
    out = _run(logs, "train", str(config), "--runs-dir", str(folder / "runs"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    return Path(out.stdout.strip())


def test_train_keeps_stderr_for_our_sentences_and_logs_the_rest_in_the_run(trained, logs, tmp_path):
    # What libraries printed while training is in the run's own log, beside the studio's lines.
    worker_log = (trained / "worker.log").read_text()
    assert "studio.train" in worker_log
    out = _run(logs, "train", str(tmp_path / "missing.json"), "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 1 and _only_our_error(out.stderr), out.stderr


def test_data_is_quiet_and_a_file_without_usable_rows_exits_1(logs, tmp_path):
    good = write_messages_jsonl(tmp_path / "good.jsonl", 6)
    out = _run(logs, "data", str(good), "--model", TINY_TEST_MODEL)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    numbers = tmp_path / "numbers.json"
    numbers.write_text(json.dumps([1, 2, 3]))
    out = _run(logs, "data", str(numbers), "--model", TINY_TEST_MODEL)
    assert out.returncode == 1 and _only_our_error(out.stderr), out.stderr
    assert "not examples" in out.stderr
    # A table whose columns are not recognised: one sentence naming the flags, and the fix it names works.
    odd = tmp_path / "odd.csv"
    odd.write_text("Customer says,We say\nHi,Hello there\nBye,Goodbye now\n")
    out = _run(logs, "data", str(odd), "--model", TINY_TEST_MODEL)
    assert out.returncode == 1 and _only_our_error(out.stderr), out.stderr
    assert "--prompt-column" in out.stderr and "Customer says" in out.stderr
    out = _run(logs, "data", str(odd), "--model", TINY_TEST_MODEL, "--prompt-column", "Customer says",
               "--response-column", "We say", "--json")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert json.loads(out.stdout)["n_usable"] == 2


def test_chat_and_export_are_quiet(trained, logs, tmp_path):
    out = _run(logs, "chat", str(trained), "--prompt", "Hi", "--max-new-tokens", "4")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("Base:")
    out = _run(logs, "export", str(trained), "--zip", str(tmp_path / "adapter.zip"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    import zipfile

    names = zipfile.ZipFile(tmp_path / "adapter.zip").namelist()
    assert "README.md" in names and "adapter_config.json" in names  # the model card travels with the adapter
    out = _run(logs, "export", str(trained), "--gguf", str(tmp_path / "g" / "model.gguf"), "--quant", "q8_0")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "ollama create model -f model.Modelfile" in out.stdout and (tmp_path / "g" / "model.Modelfile").is_file()
    out = _run(logs, "export", str(trained), "--space", str(tmp_path / "space"))
    assert out.returncode == 0 and out.stderr == "" and (tmp_path / "space" / "app.py").is_file(), out.stderr
    out = _run(logs, "export", str(tmp_path / "missing"), "--zip", str(tmp_path / "b.zip"))
    assert out.returncode == 1 and _only_our_error(out.stderr), out.stderr


def test_usage_errors_and_unknown_commands_still_reach_the_person(logs):
    out = _run(logs, "train", "--no-such-flag")
    assert out.returncode == 2 and "usage: python -m studio train" in out.stderr
    out = _run(logs, "fly")
    assert out.returncode == 2 and out.stderr.startswith("Error: unknown command 'fly'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(logs: Path, *args: str, ready: str) -> subprocess.Popen:
    proc = subprocess.Popen(studio_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(logs))
    started = time.time()
    while time.time() - started < 90:
        line = proc.stdout.readline()
        if ready in line:
            return proc
        if not line and proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
    proc.kill()
    raise AssertionError(f"no {ready!r} line within 90 s")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    return err


def test_ui_logs_the_offline_hub_check_instead_of_printing_it(logs, tmp_path):
    port = _free_port()
    proc = _serve(logs, "ui", "--port", str(port), "--runs-dir", str(tmp_path / "runs"), ready="Studio is running")
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        config = client.get("/config").json()
        components = {c["id"]: c for c in config["components"]}
        check = next(d for d in config["dependencies"]
                     if any(components[t[0]]["props"].get("value") == "Check model" for t in d["targets"]))
        # The model check of a hub model with no network: transformers raises deep inside the hub client, which
        # once put about 440 lines of tracebacks on the server's stderr.
        answer = client.post("/gradio_api/run/predict",
                             json={"fn_index": check["id"], "data": ["someone/not-a-real-model", False]}).text
        assert "not-a-real-model" in answer
    finally:
        err = _stop(proc)
    assert err == "", err[-3000:]
    assert (logs / "ui.log").is_file()


def test_demo_is_quiet(trained, logs):
    port = _free_port()
    proc = _serve(logs, "demo", str(trained), "--port", str(port), ready="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        err = _stop(proc)
    assert err == "", err[-3000:]
