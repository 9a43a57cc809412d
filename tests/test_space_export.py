"""Export to a Hugging Face Space and the model card every export carries."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from studio import space_export, train
from studio.config import BUNDLED_MODEL, RunConfig
from studio.errors import UserError
from studio.model_card import BUNDLED_PUBLIC_ID, model_card

from .conftest import MEMORISED
from .test_train import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from .conftest import write_messages_jsonl

    folder = tmp_path_factory.mktemp("space")
    data = write_messages_jsonl(folder / "train.jsonl", 20)
    run_dir = folder / "runs" / "vet-clinic"
    # Validated on its own rows: the memorised answers keep improving, so the adapter kept (the best validation's,
    # studio.train) is the last one and the Space's reply is checkable word for word.
    config = tiny_config(data, max_steps=40, eval_every=20, run_name="Vet clinic", validation_path=str(data))
    assert train.run(config, run_dir) == "finished"
    return run_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_local_base_ships_merged_weights_and_the_space_runs_with_python_app_py(tiny_run, tmp_path):
    from gradio_client import Client

    space = space_export.export_space(tiny_run, tmp_path / "space")
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "model", "requirements.txt"]
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\ntitle: \"Vet clinic\"") and "sdk: \"gradio\"" in readme
    assert "app_file: \"app.py\"" in readme and "## Data" in readme and "20 rows" in readme
    assert "Validation loss" in readme and str(tiny_run.parent) not in readme  # no path of this machine
    assert "transformers==" in (space / "requirements.txt").read_text()
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        client, started = None, time.time()
        while client is None and time.time() - started < 120:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(1)
        question, reply = MEMORISED[0]
        tuned, base, box = client.predict(question, [], [], api_name="/chat")
        content = tuned[-1]["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        assert text.startswith(reply[:20]) and box == ""
        assert base == []  # merged weights: tuned-only
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_hub_base_ships_the_adapter_naming_the_public_id(tiny_run, tmp_path):
    run = tmp_path / "runs" / "bundled-run"
    shutil.copytree(tiny_run, run)
    config = RunConfig.load(run / "config.json")
    RunConfig(**{**config.to_dict(), "model": BUNDLED_MODEL}).save(run / "config.json")
    space = space_export.export_space(run, tmp_path / "space")
    assert (space / "adapter" / "adapter_model.safetensors").is_file() and not (space / "model").exists()
    adapter_config = json.loads((space / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == BUNDLED_PUBLIC_ID
    assert f"BASE_ID = {BUNDLED_PUBLIC_ID!r}" in (space / "app.py").read_text()
    assert "peft==" in (space / "requirements.txt").read_text()
    card = model_card(run, "adapter")
    assert f"base_model: \"{BUNDLED_PUBLIC_ID}\"" in card and "license: \"apache-2.0\"" in card
    assert "library_name: \"peft\"" in card
    # The run itself is untouched: its adapter still names the folder it was trained from.
    assert json.loads((run / "adapter" / "adapter_config.json").read_text()) != adapter_config


def test_refusals_are_one_sentence(tiny_run, tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        space_export.export_space(tiny_run, tmp_path / "full")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="switched off"):
        space_export.push_space(tmp_path / "full", "someone/clinic-demo")
    with pytest.raises(UserError, match="not a hub repository id"):
        space_export.push_space(tmp_path / "full", "../../etc")


@pytest.mark.parametrize("flag", ["--push", "--space-push"])
def test_cli_push_offline_or_without_a_token_is_one_sentence_and_writes_nothing(tiny_run, tmp_path, flag):
    from .conftest import studio_cmd

    out = tmp_path / "space"
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(studio_cmd("export", str(tiny_run), "--space", str(out), flag, "someone/clinic-demo"),
                          env=offline, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: The Hugging Face Hub is switched off") and done.stderr.count("\n") == 1
    assert not out.exists()  # refused before the Space is written
    # Online but no token: HF_TOKEN unset and an empty hub home (no saved login).
    no_token = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                                                                 "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    no_token.update(HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN_PATH=str(tmp_path / "hf-home" / "token"))
    done = subprocess.run(studio_cmd("export", str(tiny_run), "--space", str(out), flag, "someone/clinic-demo"),
                          env=no_token, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("Error: No Hugging Face token found")
    assert done.stderr.count("\n") == 1 and not out.exists()
