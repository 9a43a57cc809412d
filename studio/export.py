"""Take a run's result away: the adapter as a zip, merged full weights, or a push to the Hugging Face Hub.

The merged folder is a plain transformers model (safetensors + tokenizer + chat template):
`AutoModelForCausalLM.from_pretrained(folder)` loads it with no peft and no Studio.
Nothing here imports gradio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from . import methods
from .chat import run_adapter_dir
from .config import RunConfig
from .errors import UserError
from .events import CONFIG_FILE
from .fileio import replacing_file, replacing_folder
from .logs import ArgumentParser, tell_user

log = logging.getLogger("studio.export")

REPO_ID_PATTERN = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
OFFLINE_ADVICE = "download the adapter zip instead and upload it from a connected machine"


# --- zip ----------------------------------------------------------------------------------
def zip_adapter(run_dir: str | Path, out_zip: str | Path) -> Path:
    """Zip the adapter folder (weights, adapter_config.json, tokenizer) with the run's config.json.

    Files sit at the top of the zip, so unzipping gives a folder PeftModel.from_pretrained loads.
    """
    run_dir = Path(run_dir)
    adapter = run_adapter_dir(run_dir)
    out_zip = Path(out_zip)
    if out_zip.suffix.lower() != ".zip":
        out_zip = out_zip.with_name(out_zip.name + ".zip")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    # Weights barely compress; DEFLATE still shrinks the tokenizer files a lot.
    with replacing_file(out_zip) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(adapter.rglob("*")):
            if path.is_file() and path.name not in ("adapter_config.json", "README.md"):
                zf.write(path, path.relative_to(adapter).as_posix())
        zf.writestr("adapter_config.json", _public_adapter_config(adapter, RunConfig.load(run_dir / CONFIG_FILE)))
        zf.writestr("README.md", _model_card(RunConfig.load(run_dir / CONFIG_FILE), run_dir, merged=False))
        zf.write(run_dir / CONFIG_FILE, "studio_run_config.json")
    return out_zip


def _public_adapter_config(adapter: Path, config: RunConfig) -> str:
    """adapter_config.json naming the base by its public hub id, not the folder it was loaded from here."""
    from .model_card import public_base_id

    values = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    values["base_model_name_or_path"] = public_base_id(config.model)
    return json.dumps(values, indent=2)


# --- merged weights -----------------------------------------------------------------------
def merge_adapter(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold the adapter into the base weights and save a standalone model folder (safetensors)."""
    from . import models

    run_dir = Path(run_dir)
    adapter = run_adapter_dir(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} already exists and is not empty: pick a new folder for the merged model.")
    # Merge in full precision on CPU, or 16-bit on a GPU; never into 4-bit weights (that would round the update).
    method = methods.for_inference(None, models.cuda_available())
    if method.needs_cuda:
        from .chat import ensure_gpu_free

        ensure_gpu_free(run_dir.parent, action="export the merged model")  # a 16-bit copy beside a run: OOM
    tokenizer = models.load_tokenizer(config.model, config.trust_remote_code)
    base = models.load_base_model(config.model, method, config.trust_remote_code)
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except Exception as err:  # a mismatched adapter is a problem the user can fix
        log.exception("merge failed")
        raise UserError(f"The adapter of {run_dir.name} does not fit {config.model} ({type(err).__name__}): "
                        f"the run's base model may have changed.") from err
    try:
        with replacing_folder(out_dir) as tmp:  # an existing out_dir is empty (checked above)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)  # writes the chat template too
            (tmp / "README.md").write_text(_model_card(config, run_dir, merged=True), encoding="utf-8")
    except OSError as err:
        raise UserError(f"The merged model could not be written to {out_dir} ({err.strerror or err}): check the "
                        f"free disk space and permissions.") from err
    return out_dir


def _model_card(config: RunConfig, run_dir: Path, merged: bool) -> str:
    from .model_card import model_card

    return model_card(run_dir, "merged" if merged else "adapter")


# --- hub ----------------------------------------------------------------------------------
def hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(str(f).strip().lower() in ("1", "true", "yes", "on") for f in flags)


def hub_token(token: str | None = None, offline_fix: str = OFFLINE_ADVICE) -> str:
    """The token a push uses; one sentence when the hub is switched off here or no token is found (checked before
    anything is written or uploaded)."""
    if hub_offline():
        raise UserError(f"The Hugging Face Hub is switched off on this machine (HF_HUB_OFFLINE is set): unset it "
                        f"on a connected machine, or {offline_fix}.")
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise UserError("No Hugging Face token found: log in with `hf auth login` (or set HF_TOKEN to a token "
                        "with write access), then push again.")
    return token


def push_to_hub(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = True) -> str:
    """Upload the adapter folder to a hub repository (created private if new). Returns its URL."""
    run_dir = Path(run_dir)
    adapter = run_adapter_dir(run_dir)
    repo_id = (repo_id or "").strip()
    if not REPO_ID_PATTERN.match(repo_id) or ".." in repo_id:
        raise UserError(f"{repo_id!r} is not a hub repository id: use 'your-name/model-name'.")
    token = hub_token(token)
    from huggingface_hub import HfApi

    config = RunConfig.load(run_dir / CONFIG_FILE)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            import shutil

            folder = Path(tmp) / "adapter"
            shutil.copytree(adapter, folder)
            (folder / "adapter_config.json").write_text(_public_adapter_config(adapter, config), encoding="utf-8")
            (folder / "README.md").write_text(_model_card(config, run_dir, merged=False), encoding="utf-8")
            api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload adapter from Studio")
    except Exception as err:  # every hub failure becomes one sentence; details go to the log
        log.exception("push to %s failed", repo_id)
        raise _hub_push_error(repo_id, err) from err
    return str(url)


def _hub_push_error(repo_id: str, err: Exception) -> UserError:
    text = f"{type(err).__name__}: {err}".lower()
    if "401" in text or "403" in text or "unauthorized" in text or "forbidden" in text or "token" in text:
        return UserError(f"The hub refused the upload to {repo_id}: use a token with write access "
                         f"(`hf auth login`) and a namespace you own.")
    if isinstance(err, (ConnectionError, TimeoutError, OSError)) or any(
            word in text for word in ("connect", "resolve", "timed out", "timeout", "network", "offline")):
        return UserError(f"The Hugging Face Hub cannot be reached: check the internet connection, or "
                         f"{OFFLINE_ADVICE}.")
    return UserError(f"The upload to {repo_id} failed ({type(err).__name__}); the log has the details.")


# --- exports as processes of their own (the Share tab) -------------------------------------
# The slow targets (merging runs the base model through peft; GGUF merges, then writes; a Space may merge) run as
# `python -m studio export ... --status-file F`, so the page never waits on them and a reload finds them: F is
# RUN_DIR/exports/jobs/<target>.json, {"state": starting|running|done|failed, "started", "finished", "output",
# "message"}, written atomically by the page before the process starts and by the process after.
EXPORTS_DIR = "exports"
JOB_TARGETS = ("merged", "gguf-f16", "gguf-q8_0", "space")
JOB_LIVE = ("starting", "running")


def exports_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EXPORTS_DIR


def target_output(run_dir: str | Path, target: str) -> Path:
    """Where each target is written inside the run: exports/<run>-adapter.zip, exports/merged, exports/gguf/<run>-
    <quant>.gguf (its Modelfile beside it), exports/space."""
    run_dir = Path(run_dir)
    out = exports_dir(run_dir)
    if target == "zip":
        return out / f"{run_dir.name}-adapter.zip"
    if target == "merged":
        return out / "merged"
    if target in ("gguf-f16", "gguf-q8_0"):
        return out / "gguf" / f"{run_dir.name}-{target.removeprefix('gguf-')}.gguf"
    if target == "space":
        return out / "space"
    raise UserError(f"There is no export called {target!r}: use one of zip, {', '.join(JOB_TARGETS)}.")


def _target_args(run_dir: Path, target: str) -> list[str]:
    out = str(target_output(run_dir, target))
    if target.startswith("gguf-"):
        return ["--gguf", out, "--quant", target.removeprefix("gguf-")]
    return [f"--{target}", out]


def job_file(run_dir: str | Path, target: str) -> Path:
    return exports_dir(run_dir) / "jobs" / f"{target}.json"


def _write_job(path: Path, **state) -> None:
    from .fileio import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(state))


def export_job(run_dir: str | Path, target: str) -> dict:
    """The target's job as its status file says, {} when never started; a live-looking job whose process is gone
    (killed, machine restarted) is reported failed."""
    from .jobs import _pid_alive

    path = job_file(run_dir, target)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    if state.get("state") in JOB_LIVE and not _pid_alive(state.get("pid")) and time.time() - float(
            state.get("started") or 0) > 5.0:
        state = {**state, "state": "failed", "message": "The export process ended unexpectedly; the details are "
                                                        "in the export log. Press the button again to retry."}
    return state


def start_export_job(run_dir: str | Path, target: str) -> dict:
    """Start `python -m studio export` for one slow target in a process of its own; returns its first state.
    A target already being made is not started twice."""
    run_dir = Path(run_dir).resolve()
    if target not in JOB_TARGETS:
        raise UserError(f"There is no export called {target!r}: use one of {', '.join(JOB_TARGETS)}.")
    run_adapter_dir(run_dir)  # one sentence now when the run has no adapter, not a failed job later
    if export_job(run_dir, target).get("state") in JOB_LIVE:
        raise UserError(f"The {target} export of {run_dir.name} is already being made: wait for it to finish.")
    path = job_file(run_dir, target)
    _write_job(path, state="starting", started=time.time())
    cmd = [sys.executable, "-m", "studio", "export", str(run_dir), *_target_args(run_dir, target),
           "--status-file", str(path)]
    with open(path.with_suffix(".out"), "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Reaped by a thread of its own: the server may run for days, and an exited child must not stay a zombie.
    threading.Thread(target=proc.wait, name=f"reap-export-{proc.pid}", daemon=True).start()
    return {"state": "starting", "pid": proc.pid, "started": time.time()}


# --- CLI ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m studio export",
                            description="Take the result of a finished or stopped run away: the adapter as a zip, "
                                        "merged full weights, one GGUF file for llama.cpp and Ollama, a Hugging Face "
                                        "Space, or a push to the Hugging Face Hub. Each carries a model card.")
    parser.add_argument("run_dir", help="the run folder, e.g. runs/20250101-120000-support")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--zip", metavar="OUT.zip", help="write the adapter (and the run's settings) to this zip file")
    what.add_argument("--merged", metavar="OUT_DIR",
                      help="save full weights with the adapter merged in (safetensors, tokenizer, chat template) "
                           "to this new folder; plain transformers loads it")
    what.add_argument("--gguf", metavar="OUT.gguf",
                      help="one GGUF file (adapter merged in, tokenizer and chat template inside) for llama.cpp, "
                           "Ollama and LM Studio, with an Ollama Modelfile beside it (OUT.Modelfile)")
    what.add_argument("--space", metavar="OUT_DIR",
                      help="a Hugging Face Space folder (app.py, requirements, README); with --push, upload it")
    parser.add_argument("--push", metavar="REPO_ID",
                        help="alone: upload the adapter to this Hugging Face Hub repository; with --space: upload "
                             "the Space folder as this Space (e.g. your-name/clinic-demo). Needs `hf auth login`")
    parser.add_argument("--space-push", metavar="REPO_ID", default=None, help="the same as --space ... --push")
    parser.add_argument("--quant", default="f16", choices=("f16", "q8_0"),
                        help="with --gguf: 16-bit weights (f16, default) or 8-bit (q8_0: about half the size)")
    parser.add_argument("--public", action="store_true", help="with --push: make a new repository public "
                        "(default: private)")
    parser.add_argument("--status-file", metavar="FILE", default=None,
                        help="write the export's state (running, done, failed) to this JSON file as it goes; the "
                             "Share tab reads it")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.space_push and args.push and args.space_push != args.push:
        parser.error("--push and --space-push name different repositories: give one.")
    if args.space_push and not args.space:
        parser.error("--space-push goes with --space OUT_DIR.")
    push = args.push or args.space_push
    if not (args.zip or args.merged or args.gguf or args.space or push):
        parser.error("say what to export: --zip, --merged, --gguf, --space or --push.")
    if push and (args.zip or args.merged or args.gguf):
        parser.error("--push goes alone (the adapter) or with --space (the Space folder).")
    from .chat import _quiet_libraries

    _quiet_libraries()
    status = Path(args.status_file) if args.status_file else None
    started = time.time()
    if status is not None:
        _write_job(status, state="running", pid=os.getpid(), started=started)
    try:
        out = _export(args, push)
    except Exception as err:
        if status is not None:
            message = str(err) if isinstance(err, UserError) else f"The export failed ({type(err).__name__}); the " \
                                                                   f"details are in the export log."
            _write_job(status, state="failed", pid=os.getpid(), started=started, finished=time.time(),
                       message=message)
        if not isinstance(err, UserError):
            raise
        tell_user(f"Error: {err}")
        return 1
    if status is not None:
        _write_job(status, state="done", pid=os.getpid(), started=started, finished=time.time(), output=str(out))
    return 0


def _export(args, push: str | None) -> Path | str:
    """Do what the arguments ask, printing one line per result; returns the file, folder or URL made."""
    if args.zip:
        out = zip_adapter(args.run_dir, args.zip)
        print(f"Adapter zip written to {out}")
    elif args.merged:
        out = merge_adapter(args.run_dir, args.merged)
        print(f"Merged model saved to {out}")
    elif args.gguf:
        from .gguf_export import export_gguf, ollama_lines

        out = export_gguf(args.run_dir, args.gguf, args.quant)
        create, run = ollama_lines(out)
        print(f"GGUF written to {out} ({out.stat().st_size / 1e6:.0f} MB); in that folder: `{create}`, then `{run}`")
    elif args.space:
        from .space_export import check_space_id, export_space, is_space_folder, push_space

        if push:  # offline, no token or a bad id: one sentence before anything is written
            check_space_id(push)
            hub_token(offline_fix="push the Space folder from a connected machine")
        if push and is_space_folder(args.space):
            out = Path(args.space)  # made before (the Share tab's folder): pushed as it is
            print(f"Pushing the Space folder {out}")
        else:
            out = export_space(args.run_dir, args.space)
            print(f"Space written to {out}; `python app.py` there runs it locally")
        if push:
            out = push_space(out, push, private=not args.public)
            print(f"Space pushed to {out}")
    else:
        out = push_to_hub(args.run_dir, push, private=not args.public)
        print(f"Adapter pushed to {out}")
    return out

if __name__ == "__main__":
    sys.exit(main())
