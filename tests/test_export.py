"""Export: the adapter zip, merged weights that plain transformers loads, and a clear message when the hub
cannot be used (there is no network here)."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile

import pytest

from studio import export
from studio.chat import ChatSession, GenerationSettings
from studio.errors import UserError

from .conftest import MEMORISED, studio_cmd
from .test_chat import make_trained_run

PROMPT, ANSWER = MEMORISED[1]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    return make_trained_run(tmp_path_factory)


def test_zip_holds_a_loadable_adapter(trained_run, tmp_path):
    from peft import PeftModel

    from studio import models

    path = export.zip_adapter(trained_run, tmp_path / "out" / "adapter")  # .zip is added
    assert path.name == "adapter.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"adapter_model.safetensors", "adapter_config.json", "studio_run_config.json"} <= names
        zf.extractall(tmp_path / "unzipped")
    model = PeftModel.from_pretrained(models.load_base_model("tiny-test"), tmp_path / "unzipped")
    assert model.peft_config["default"].r == 8


def test_merged_weights_load_in_plain_transformers_with_equal_outputs(trained_run, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export.merge_adapter(trained_run, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not any("lora" in key for key in f.keys())  # noqa: SIM118 - safe_open is not iterable
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    messages = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        tokens = model.generate(**ids, max_new_tokens=16, do_sample=False, repetition_penalty=1.1,
                                pad_token_id=tokenizer.pad_token_id)
    merged_answer = tokenizer.decode(tokens[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    session = ChatSession.for_run(trained_run)
    assert merged_answer == session.generate(messages, GenerationSettings(max_new_tokens=16), use_adapter=True)
    assert merged_answer != session.generate(messages, GenerationSettings(max_new_tokens=16), use_adapter=False)
    with pytest.raises(UserError, match="not empty"):
        export.merge_adapter(trained_run, out)


def test_push_says_clearly_why_it_cannot(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        export.push_to_hub(trained_run, "someone/my-model")
    assert time.time() - started < 2
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(UserError, match="No Hugging Face token"):
        export.push_to_hub(trained_run, "someone/my-model")
    with pytest.raises(UserError, match="not a hub repository id"):
        export.push_to_hub(trained_run, "../../etc")


def test_cli_zip_and_unreachable_hub(trained_run, tmp_path):
    env = {**os.environ, "HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9: the connection is refused at once
    out = subprocess.run(studio_cmd("export", str(trained_run), "--zip", str(tmp_path / "a.zip")),
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.zip").is_file()
    started = time.time()
    out = subprocess.run(studio_cmd("export", str(trained_run), "--push", "someone/my-model"),
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: The Hugging Face Hub cannot be reached"), out.stderr
    assert "Traceback" not in out.stderr and time.time() - started < 30
    out = subprocess.run(studio_cmd("export", str(tmp_path / "missing"), "--zip", str(tmp_path / "b.zip")),
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: The run folder")
