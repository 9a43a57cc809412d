"""Tab 6, Share: take a finished run's model out of Studio. One button per target, what each made (path, size) and
how to use it. Every action has a CLI twin, `python -m studio export` (and `python -m studio serve` for the endpoint
the tab describes).

Everything is written into the run's own folder, RUN_DIR/exports (studio.export.target_output): the run id from the
page is checked on disk (sessions.run_dir_of), and nothing else from the client names a path. The adapter zip takes
a second and is made here; merged weights, GGUF and the Space run as `python -m studio export` processes of their
own (studio.export.start_export_job) with a status file the tab polls, so the page never waits on them and a reload
finds them where they were.

Results name their run, and the zip and the status line go when another run is picked: a zip under a newly selected
run would be read as that run's.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import Context

from .. import jobs
from ..errors import UserError
from ..export import JOB_LIVE, export_job, start_export_job, target_output
from .common import UIContext, bind, error_markdown, keep, slots
from .sessions import NO_RUN, run_dir_of

POLL_S = 2.0  # how often the page looks at a running export's status file


@dataclass(frozen=True)
class Target:
    """One export the tab offers: its id (studio.export.target_output), button, and plain words for what it is."""

    id: str
    button: str
    what: str


TARGETS = (
    Target("zip", "Adapter zip",
           "**Adapter**: only what training changed, a small file (a few MB). It runs on top of the model you "
           "started from, for example with the `peft` library."),
    Target("merged", "Merged weights",
           "**Merged**: the model you started from with the adapter folded in, one full model folder that plain "
           "`transformers` loads."),
    Target("gguf-f16", "GGUF (f16)",
           "**GGUF**: one file that llama.cpp, Ollama and LM Studio run on a laptop. f16 answers exactly as here."),
    Target("gguf-q8_0", "GGUF (q8_0, smaller)",
           "The same GGUF at about half the size (8-bit numbers), with nearly the same answers."),
    Target("space", "Hugging Face Space",
           "**Space**: a small chat web page, ready to put on huggingface.co so others can try the model without "
           "this computer."),
)
BY_ID = {t.id: t for t in TARGETS}


@dataclass
class ExportView:
    """The zip to download and the line under the buttons; both go when another run is picked."""

    zip_file: Any = None
    status: str = ""


@dataclass
class ResultsView:
    """What the run's exports folder holds (and what is being made), and the poll that runs while something is."""

    results: Any = keep()
    timer: Any = keep()


# --- helpers -----------------------------------------------------------------------------------------------------
def _need_run(ctx: UIContext, run_id: str | None) -> Path:
    run_dir = run_dir_of(ctx.runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a finished run first: sharing needs its adapter.")
    return run_dir


def _shown(path: Path, ctx: UIContext) -> str:
    """A path as the page shows it: relative to the runs folder's parent when it lies there (no home folder)."""
    try:
        return path.resolve().relative_to(ctx.runs_dir.resolve().parent).as_posix()
    except ValueError:
        return path.name


def _size(path: Path) -> str:
    total = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 2**20:,.1f} MB" if total < 2**30 else f"{total / 2**30:,.2f} GB"


def _made(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


# --- how to use each result --------------------------------------------------------------------------------------
def _howto(ctx: UIContext, run_dir: Path, target: str, out: Path) -> str:
    shown = _shown(out, ctx)
    if target == "zip":
        from ..config import RunConfig
        from ..events import CONFIG_FILE
        from ..model_card import public_base_id

        base = public_base_id(RunConfig.load(run_dir / CONFIG_FILE).model)
        where = f"downloads {base} once" if base else "the base model must be where it was for training"
        return (f"Unzip it into a folder, then in Python:\n```python\nfrom peft import AutoPeftModelForCausalLM\n"
                f"model = AutoPeftModelForCausalLM.from_pretrained(\"FOLDER\")  # {where}\n```")
    if target == "merged":
        return (f"In Python:\n```python\nfrom transformers import AutoModelForCausalLM\n"
                f"model = AutoModelForCausalLM.from_pretrained(\"{shown}\")\n```")
    if target.startswith("gguf-"):
        from ..gguf_export import ollama_lines

        create, run = ollama_lines(out)
        return (f"To chat with it in [Ollama](https://ollama.com), open a terminal and run:\n```\n"
                f"cd {shlex.quote(_shown(out.parent, ctx))}\n{create}\n{run}\n```\n"
                f"llama.cpp and LM Studio open the .gguf file directly.")
    return (f"To try it on this computer:\n```\ncd {shlex.quote(shown)}\npip install -r requirements.txt\n"
            f"python app.py\n```\nthen open http://127.0.0.1:7860. To keep it online without this computer, upload "
            f"it as a Gradio Space (the **Push** box below does it), and it lives at "
            f"`https://huggingface.co/spaces/your-name/space-name`:\n```\npython -m studio export "
            f"{shlex.quote(_shown(run_dir, ctx))} --space {shlex.quote(shown)} --push your-name/space-name\n```")


def describe_exports(ctx: UIContext, run_id: str | None) -> tuple[str, bool]:
    """(markdown of what the run's exports folder holds and what is being made, whether anything is being made)."""
    try:
        run_dir = _need_run(ctx, run_id)
    except Exception as err:  # noqa: BLE001 - one sentence
        return (error_markdown(err) if run_id not in (None, "", NO_RUN) else
                "Pick a finished run above: what you make from it is listed here, with how to use it."), False
    parts, live = [], False
    for target in TARGETS:
        job = export_job(run_dir, target.id) if target.id != "zip" else {}
        state = job.get("state")
        out = target_output(run_dir, target.id)
        if state in JOB_LIVE:
            live = True
            parts.append(f"**{target.button}**: being made ({time.time() - float(job.get('started') or 0):.0f} s "
                         f"so far; this page updates by itself, and you may leave it).")
        elif state == "failed":
            parts.append(f"**{target.button}**: failed. {job.get('message', '')}")
        elif _made(out):
            parts.append(f"**{target.button}**: `{_shown(out, ctx)}` ({_size(out)}).\n\n" +
                         _howto(ctx, run_dir, target.id, out))
    if not parts:
        return f"Nothing made from run **{run_dir.name}** yet: press a button above.", False
    return f"### Made from run {run_dir.name}\n\n" + "\n\n---\n\n".join(parts), live


def show_results(ctx: UIContext, run_id: str | None) -> ResultsView:
    """The list of results, and the poll switched on while an export is being made."""
    text, live = describe_exports(ctx, run_id)
    return ResultsView(text, gr.Timer(active=live))


# --- the buttons -------------------------------------------------------------------------------------------------
def make_zip(ctx: UIContext, run_id: str | None) -> ExportView:
    """The adapter zip (a second's work, made here) in RUN_DIR/exports, offered for download."""
    from ..export import zip_adapter

    try:
        run_dir = _need_run(ctx, run_id)
        path = zip_adapter(run_dir, target_output(run_dir, "zip"))
        # The download box gets a copy in the temp folder: gradio serves files from there, and nothing else of the
        # runs folder needs to become downloadable.
        copy = Path(tempfile.mkdtemp(prefix="studio-export-")) / path.name
        shutil.copyfile(path, copy)
    except Exception as err:  # noqa: BLE001 - one sentence in the status line
        return ExportView(None, error_markdown(err))
    return ExportView(copy.as_posix(), f"Adapter zip of run **{run_dir.name}** ready: download it above.")


def start(ctx: UIContext, target: str, run_id: str | None) -> str:
    """Start a slow export (merged, GGUF, Space) in a process of its own; the results list follows it."""
    try:
        run_dir = _need_run(ctx, run_id)
        if target not in BY_ID or target == "zip":
            raise UserError(f"There is no export called {target!r}.")
        out = target_output(run_dir, target)
        if target in ("merged", "space") and _made(out) and export_job(run_dir, target).get("state") not in JOB_LIVE:
            return f"The {BY_ID[target].button} of run **{run_dir.name}** is already made: see below."
        start_export_job(run_dir, target)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return (f"Started the {BY_ID[target].button} of run **{run_dir.name}** in the background: it appears in the "
            f"list below when ready.")


def merge(ctx: UIContext, run_id: str | None) -> str:
    """The /export_merged endpoint: start merging in the background."""
    return start(ctx, "merged", run_id)


def hub_note() -> str:
    """Empty when a push can work here (a token and the hub not switched off), else the one sentence why not."""
    from ..export import hub_offline, hub_token

    try:
        hub_token()
    except UserError:
        if hub_offline():
            return ("**Hugging Face Hub:** this machine is set to work offline (HF_HUB_OFFLINE), so nothing can be "
                    "pushed from here; copy the files above to a connected computer and upload them there.")
        return ("**Hugging Face Hub:** to push from here, log in first with `hf auth login` in a terminal (or set "
                "HF_TOKEN to a token with write access), then reload this page.")
    return ""


def hub_controls() -> tuple[gr.Row, str]:
    note = hub_note()
    return gr.Row(visible=not note), note


def push(ctx: UIContext, run_id: str | None, repo: str) -> str:
    """Upload the adapter to a model repository on the hub."""
    from ..export import push_to_hub

    try:
        run_dir = _need_run(ctx, run_id)
        return f"Adapter of run **{run_dir.name}** pushed to {push_to_hub(run_dir, repo)}"
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)


def push_space(ctx: UIContext, run_id: str | None, repo: str) -> str:
    """Upload the run's Space folder (made with the Space button) as a Space on the hub."""
    from ..space_export import push_space as upload

    try:
        run_dir = _need_run(ctx, run_id)
        folder = target_output(run_dir, "space")
        if not _made(folder):
            raise UserError("Make the Hugging Face Space folder first (the button above), then push it.")
        return f"Space of run **{run_dir.name}** is online at {upload(folder, repo)}"
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)


def serve_howto(ctx: UIContext, run_id: str | None) -> str:
    """How to put the run behind an OpenAI-compatible endpoint (a command to run; nothing is started here)."""
    try:
        run_dir = _need_run(ctx, run_id)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    from ..serve import DEFAULT_PORT

    body = ('{"model": "%s", "messages": [{"role": "user", "content": "Hello!"}]}' % run_dir.name)
    return (f"### Use it from your own programs\nStudio can answer the way ChatGPT's API does (an \"OpenAI-compatible "
            f"endpoint\"). Run in a terminal\n```\npython -m studio serve {shlex.quote(_shown(run_dir, ctx))}\n```\n"
            f"then, from another terminal:\n```\ncurl http://127.0.0.1:{DEFAULT_PORT}/v1/chat/completions \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}\n```\nAny OpenAI client works with "
            f"base URL "
            f"`http://127.0.0.1:{DEFAULT_PORT}/v1`. To open it to other machines add `--host 0.0.0.0 --api-key "
            f"SECRET` (the key is then required).")


def serve_howto_or_blank(ctx: UIContext, run_id: str | None) -> str:
    """The endpoint's how-to under the picked run; nothing while no run is picked."""
    return serve_howto(ctx, run_id) if run_id and run_id != NO_RUN else ""


def zip_box(file) -> gr.File:
    """The download box shows only while it holds a zip: empty, it looks like a place to drop a file."""
    return gr.File(visible=bool(file))


def forget() -> ExportView:
    """Another run was picked: the zip and the status line were the previous run's."""
    return ExportView()


# --- the run picker ----------------------------------------------------------------------------------------------
def run_list(ctx: UIContext, current: str | None) -> gr.Dropdown:
    """Finished or stopped runs (they have an adapter), newest first; the choice stays when it still exists, else
    the newest run is picked."""
    runs = jobs.finished_runs(ctx.runs_dir)
    ids = [s.run_id for s in runs]
    value = current if current in ids else (ids[0] if ids else None)
    return gr.Dropdown(choices=[(f"{s.run_id} ({s.status}, {s.model})", s.run_id) for s in runs], value=value)


def follow_chat_run(ctx: UIContext, chat_run: str | None) -> gr.Dropdown:
    """The run picked in the Chat tab becomes the one to share (another can still be picked here)."""
    if not chat_run or chat_run == NO_RUN:
        return gr.skip()
    return run_list(ctx, chat_run)


# --- the tab -----------------------------------------------------------------------------------------------------
def build_share_tab(ctx: UIContext, tab: gr.Tab | None = None) -> None:
    """The Share tab; `tab` (its gr.Tab) refreshes the run list when opened. Follows the Chat tab's run when one is
    built before it (ctx.chat)."""
    gr.Markdown("Take your fine-tuned model out of Studio: pick a run, then press the button for how you want to "
                "use it. Each writes into the run's own folder (`exports`), and the list below says what was made "
                "and how to use it.")
    with gr.Row():
        # Filled when the page loads and the tab opens (no run names before a login). An API client may send any
        # run id from /list_runs: the handlers check it on disk (sessions.run_dir_of).
        run_select = gr.Dropdown([], value=None, label="Run", scale=4, elem_id="share-run", allow_custom_value=True,
                                 info="finished or stopped runs (they have a saved adapter)")
        refresh = gr.Button("Refresh runs", scale=1, size="sm", elem_id="share-refresh")
    buttons = {}
    for target in TARGETS:
        with gr.Row(equal_height=True):
            buttons[target.id] = gr.Button(target.button, scale=1, min_width=200, elem_id=f"share-{target.id}")
            gr.Markdown(target.what, elem_classes="share-what")
    zip_file = gr.File(label="Adapter zip", interactive=False, visible=False, elem_id="export-file")
    status = gr.Markdown(elem_id="export-status")
    with gr.Row(visible=False) as hub_row:
        repo_id = gr.Textbox(label="Hugging Face repository", placeholder="your-name/model-name", scale=3)
        push_btn = gr.Button("Push adapter to the Hub", scale=1)
        push_space_btn = gr.Button("Push Space to the Hub", scale=1)
    hub_md = gr.Markdown(elem_id="share-hub")
    results = ResultsView(gr.Markdown(elem_id="share-results"), gr.Timer(POLL_S, active=False))
    serve_md = gr.Markdown(elem_id="share-serve")

    view = ExportView(zip_file, status)
    shown = bind(show_results, ctx)
    buttons["zip"].click(bind(make_zip, ctx), run_select, slots(view), api_name="export_zip").then(
        zip_box, zip_file, zip_file, api_visibility="private").then(
        shown, run_select, slots(results), api_visibility="private")
    for target in TARGETS[1:]:
        event = (buttons[target.id].click(bind(merge, ctx), run_select, status, api_name="export_merged")
                 if target.id == "merged" else
                 buttons[target.id].click(bind(start, ctx, target.id), run_select, status, api_visibility="private"))
        event.then(shown, run_select, slots(results), api_visibility="private")
    push_btn.click(bind(push, ctx), [run_select, repo_id], status, api_name="push_to_hub")
    push_space_btn.click(bind(push_space, ctx), [run_select, repo_id], status, api_visibility="private")
    results.timer.tick(shown, run_select, slots(results), show_progress="hidden", api_visibility="private")
    run_select.change(bind(forget), None, slots(view), api_visibility="private", queue=False).then(
        zip_box, zip_file, zip_file, api_visibility="private", queue=False)
    run_select.change(shown, run_select, slots(results), api_visibility="private")
    run_select.change(bind(serve_howto_or_blank, ctx), run_select, serve_md, api_visibility="private")
    refresh.click(bind(run_list, ctx), run_select, run_select, api_visibility="private")
    listing = bind(run_list, ctx)
    if tab is not None:
        tab.select(listing, run_select, run_select, api_visibility="private")
    page = Context.root_block
    page.load(listing, run_select, run_select, api_visibility="private")
    page.load(hub_controls, None, [hub_row, hub_md], api_visibility="private")
    if ctx.chat is not None:  # picking a run to chat with makes it the one to share
        chat_run = ctx.chat.run_select
        chat_run.change(bind(follow_chat_run, ctx), chat_run, run_select, api_visibility="private")
        chat_run.change(bind(forget), None, slots(view), api_visibility="private", queue=False).then(
            zip_box, zip_file, zip_file, api_visibility="private", queue=False)


build_export_tab = build_share_tab  # the name it had while it sat under the Chat tab
