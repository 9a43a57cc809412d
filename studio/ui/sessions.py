"""The models this server keeps loaded for the pages (the Chat tab, the coming report card), and the stop flag of
each browser session's generation.

A model is loaded once per (base model, run, adapter version) and shared by every browser tab (studio.chat.ChatSession);
MAX_SESSIONS keeps memory flat when a user switches runs. A run about to train frees them when they sit on the GPU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from .. import jobs, models
from ..chat import ChatSession, ensure_gpu_free
from ..config import RunConfig
from ..errors import UserError
from ..events import ADAPTER_DIR, CONFIG_FILE

NO_RUN = "(no run: base model only)"  # the run choice that means the base model alone
MAX_SESSIONS = 1  # models kept loaded in the server; one keeps memory flat when switching runs

_sessions: OrderedDict[tuple, ChatSession] = OrderedDict()
_load_lock = threading.Lock()
_stops: dict[str, threading.Event] = {}  # browser session -> its stop flag


def run_dir_of(runs_dir: Path, run_id: str | None) -> Path | None:
    """The folder of a run chosen on the page or sent by an API client, checked on disk; None for the base model
    alone."""
    if not run_id or run_id == NO_RUN:
        return None
    if not isinstance(run_id, str):  # the run box takes any value an API client sends: checked here, on disk
        raise UserError("The run must be a run id from /list_runs: pick a finished run.")
    run_dir = jobs.run_path(Path(runs_dir), run_id)
    if not run_dir.is_dir():
        raise UserError(f"Run {run_id} does not exist: press Refresh runs (or call /list_runs) and pick another.")
    return run_dir


def get_session(runs_dir: Path, run_id: str | None, default_model: str) -> ChatSession:
    """The loaded session for a run (or the base model alone), loading it on first use."""
    ensure_gpu_free(runs_dir)
    run_dir = run_dir_of(runs_dir, run_id)
    if run_dir is None:
        key: tuple = (default_model, "")
    else:
        weights = run_dir / ADAPTER_DIR / "adapter_model.safetensors"
        # A resumed and finished-again run has a new adapter: the file's time is part of the key.
        key = (RunConfig.load(run_dir / CONFIG_FILE).model, run_id, weights.stat().st_mtime if weights.exists()
               else 0)
    with _load_lock:
        if key in _sessions:
            _sessions.move_to_end(key)
            return _sessions[key]
        while len(_sessions) >= MAX_SESSIONS:
            _sessions.popitem(last=False)  # freed once its last generation ends
        session = ChatSession.for_run(run_dir, check_gpu=False) if run_dir else ChatSession(default_model)
        _sessions[key] = session
        return session


def release_gpu_sessions() -> None:
    """Drop the loaded models when they sit on the GPU: a run about to start needs that memory (a 16-bit 7B chat
    model holds about 15 GB). On a CPU they stay: the run and the chat share RAM well enough."""
    if not models.cuda_available():
        return
    import gc

    import torch

    with _load_lock:
        for session in _sessions.values():
            session.stop()
        _sessions.clear()
    gc.collect()
    torch.cuda.empty_cache()


# --- stop flags: one per browser session, so Stop on one page ends only that page's answer ----------------------
def stop_event_for(request: gr.Request | None) -> threading.Event:
    """A fresh stop flag for this browser session's next generation."""
    key = getattr(request, "session_hash", None) or "default"
    event = threading.Event()
    _stops[key] = event
    return event


def stop_session(request: gr.Request = None) -> None:
    """Stop this browser session's answers."""
    key = getattr(request, "session_hash", None) or "default"
    if key in _stops:
        _stops[key].set()


def clear_chat(request: gr.Request = None):
    """Stop this browser session's answers and empty both columns and the message box."""
    stop_session(request)
    return [], [], ""
