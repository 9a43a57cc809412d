"""A run as a Hugging Face Space: a demo that outlives a 72-hour share link and needs no machine of ours.

`studio export RUN_DIR --space OUT_DIR` writes a folder that is a complete Gradio Space:
- app.py: the chat, side by side with the base model when the adapter ships (the base is downloaded by its hub
  id), tuned-only when merged weights ship (a base that is not on the hub cannot be downloaded there);
- requirements.txt with the versions this studio trained with;
- README.md: the Space header (sdk, app_file) followed by the model card;
- adapter/ (adapter_config.json naming the public base id) or model/ (merged safetensors and tokenizer).
It runs locally with `python app.py` (GRADIO_SERVER_PORT is honoured, as on the hub), and `--push org/name` uploads
it as a Space. app.py imports nothing of Studio's: it must run where Studio is not installed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .events import CONFIG_FILE

log = logging.getLogger("studio.space_export")

APP = '''"""Chat with a model fine-tuned in Studio. Runs as a Hugging Face Space, or locally with `python app.py`."""

import contextlib
from pathlib import Path
from threading import Lock

import gradio as gr
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
TITLE = {title!r}
BASE_ID = {base_id!r}  # the hub id of the base model, when the adapter ships instead of merged weights
MAX_NEW_TOKENS = 256
REPETITION_PENALTY = 1.1

if (HERE / "model").is_dir():  # merged weights: the fine-tuned model alone
    tokenizer = AutoTokenizer.from_pretrained(HERE / "model")
    model = AutoModelForCausalLM.from_pretrained(HERE / "model", dtype=torch.float32)
    SIDE_BY_SIDE = False
else:  # the adapter on top of the base: "Base" answers run with the adapter switched off
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(BASE_ID)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE_ID, dtype=torch.float32),
                                      HERE / "adapter")
    SIDE_BY_SIDE = True
model.eval()
lock = Lock()  # one answer at a time: the adapter switch is global to the model


def answer(history, use_adapter=True):
    ids = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with lock, torch.inference_mode():
        switch = model.disable_adapter() if SIDE_BY_SIDE and not use_adapter else contextlib.nullcontext()
        with switch:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False, repetition_penalty=REPETITION_PENALTY,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def chat(message, tuned_history, base_history):
    """One user message to the fine-tuned model (and the base); returns both updated conversations."""
    tuned_history = list(tuned_history or []) + [{{"role": "user", "content": message}}]
    tuned_history.append({{"role": "assistant", "content": answer(tuned_history)}})
    if SIDE_BY_SIDE:
        base_history = list(base_history or []) + [{{"role": "user", "content": message}}]
        base_history.append({{"role": "assistant", "content": answer(base_history, use_adapter=False)}})
    return tuned_history, base_history, ""


with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(f"# {{TITLE}}\\nFine-tuned with Studio." + (" The base model answers beside it." if SIDE_BY_SIDE
                                                            else ""))
    with gr.Row():
        tuned = gr.Chatbot(label="Fine-tuned", height=420)
        base = gr.Chatbot(label="Base model", height=420, visible=SIDE_BY_SIDE)
    box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False)
    box.submit(chat, [box, tuned, base], [tuned, base, box], api_name="chat")

if __name__ == "__main__":
    demo.launch()
'''


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def requirements(with_peft: bool) -> str:
    """The versions this studio runs, so the Space behaves as the Chat tab did."""
    names = ["torch", "transformers", "accelerate", "safetensors"] + (["peft"] if with_peft else [])
    pins = [f"{name}=={_version(name)}" if _version(name) else name for name in names]
    return "\n".join(pin.split("+")[0] for pin in pins) + "\n"  # a local build tag (+cpu) is not on PyPI


def export_space(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the Space folder; adapter + base id when the base is on the hub, merged weights otherwise."""
    from .chat import run_adapter_dir
    from .export import merge_adapter
    from .model_card import model_card, public_base_id, publish_adapter_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    adapter = run_adapter_dir(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} already exists and is not empty: pick a new folder for the Space.")
    base_id = public_base_id(config.model)
    title = config.run_name or run_dir.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        if base_id:
            shutil.copytree(adapter, tmp / "adapter")
            publish_adapter_config(tmp / "adapter", config)
        else:
            merge_adapter(run_dir, tmp / "model")
            (tmp / "model" / "README.md").unlink(missing_ok=True)  # the Space's own README is the card
        (tmp / "app.py").write_text(APP.format(title=title, base_id=base_id), encoding="utf-8")
        (tmp / "requirements.txt").write_text(requirements(with_peft=bool(base_id)), encoding="utf-8")
        header = {"title": title[:30], "emoji": "💬", "colorFrom": "indigo", "colorTo": "blue", "sdk": "gradio",
                  "sdk_version": _version("gradio"), "app_file": "app.py", "pinned": False}
        (tmp / "README.md").write_text(model_card(run_dir, "space", header=header), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    except OSError as err:
        raise UserError(f"The Space could not be written to {out_dir} ({err.strerror or err}): check the free disk "
                        f"space and permissions.") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


SPACE_OFFLINE_FIX = "push the Space folder from a connected machine"


def check_space_id(repo_id: str) -> str:
    """'org/name' as the hub accepts it, or one sentence."""
    from .export import REPO_ID_PATTERN

    repo_id = (repo_id or "").strip()
    if not REPO_ID_PATTERN.match(repo_id) or ".." in repo_id:
        raise UserError(f"{repo_id!r} is not a hub repository id: use 'your-name/space-name'.")
    return repo_id


def is_space_folder(folder: str | Path) -> bool:
    """A folder export_space wrote (app.py and the README with the Space header)."""
    folder = Path(folder)
    return (folder / "app.py").is_file() and (folder / "README.md").is_file()


def push_space(space_dir: str | Path, repo_id: str, token: str | None = None, private: bool = True) -> str:
    """Upload a Space folder written by export_space; one sentence when offline or without a token."""
    from .export import _hub_push_error, hub_token

    space_dir = Path(space_dir)
    repo_id = check_space_id(repo_id)
    token = hub_token(token, offline_fix=SPACE_OFFLINE_FIX)
    if not is_space_folder(space_dir):
        raise UserError(f"{space_dir.name} is not a Space folder (no app.py): make the Space folder first.")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(space_dir), repo_id=repo_id, repo_type="space",
                          commit_message="Space from Studio")
    except Exception as err:  # every hub failure becomes one sentence; details go to the log
        log.exception("push of the Space to %s failed", repo_id)
        raise _hub_push_error(repo_id, err) from err
    return f"https://huggingface.co/spaces/{repo_id}"
