"""Export: take a run's fine-tuned model away (adapter zip, merged weights, GGUF for llama.cpp / Ollama, a Hugging
Face Space folder, the hub). Shown under the Chat tab for now, on the run picked there; every action has a CLI twin,
`python -m studio export` (and `python -m studio serve` for the endpoint the section describes).

GGUF and Space go into the run's own folder (RUN_DIR/exports/...): the run id from the page is checked on disk
(sessions.run_dir_of), and nothing else from the client names a path.

Every result names its run, and goes when another run is picked: a zip under a newly selected run would be the old
run's.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import UserError
from .common import UIContext, bind, error_markdown
from .sessions import NO_RUN, run_dir_of


@dataclass
class ExportView:
    zip_file: object = None  # the adapter zip to download
    status: str = ""


def _need_run(ctx: UIContext, run_id: str | None) -> Path:
    run_dir = run_dir_of(ctx.runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a finished run first: export needs its adapter.")
    return run_dir


def make_zip(ctx: UIContext, run_id: str | None) -> ExportView:
    from ..export import zip_adapter

    try:
        run_dir = _need_run(ctx, run_id)
        folder = Path(tempfile.mkdtemp(prefix="studio-export-"))
        path = zip_adapter(run_dir, folder / f"{run_dir.name}-adapter.zip")
    except Exception as err:  # noqa: BLE001 - one sentence in the status line
        return ExportView(None, error_markdown(err))
    return ExportView(path.as_posix(), f"Adapter zip of run **{run_dir.name}** ready: download it above.")


def merge(ctx: UIContext, run_id: str | None) -> str:
    from ..export import merge_adapter

    try:
        run_dir = _need_run(ctx, run_id)
        target = run_dir / "merged"
        if (target / "config.json").exists():
            return f"Merged weights of run **{run_dir.name}** are already saved in `{_shown(target, ctx)}`."
        merge_adapter(run_dir, target)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return (f"Merged weights of run **{run_dir.name}** saved in `{_shown(target, ctx)}` (safetensors, tokenizer and "
            f"chat template).")


def push(ctx: UIContext, run_id: str | None, repo: str) -> str:
    from ..export import push_to_hub

    try:
        run_dir = _need_run(ctx, run_id)
        return f"Adapter of run **{run_dir.name}** pushed to {push_to_hub(run_dir, repo)}"
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)


GGUF_QUANTS = [("f16 (same answers as the merged model)", "f16"), ("q8_0 (half the size, nearly the same)", "q8_0")]


def exports_dir(run_dir: Path) -> Path:
    return run_dir / "exports"


def _shown(path: Path, ctx: UIContext) -> str:
    """A path as the page shows it: relative to the runs folder's parent when it lies there (no home folder)."""
    try:
        return path.resolve().relative_to(ctx.runs_dir.resolve().parent).as_posix()
    except ValueError:
        return path.name


def make_gguf(ctx: UIContext, run_id: str | None, quant: str = "f16") -> str:
    """One GGUF file (+ an Ollama Modelfile) in RUN_DIR/exports/gguf, and how to use it."""
    from ..gguf_export import QUANTS, export_gguf

    try:
        run_dir = _need_run(ctx, run_id)
        if quant not in QUANTS:  # the radio offers only these; an API client may send anything
            raise UserError(f"The GGUF type must be one of {', '.join(QUANTS)}.")
        out = export_gguf(run_dir, exports_dir(run_dir) / "gguf" / f"{run_dir.name}-{quant}.gguf", quant)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    name = shlex.quote(run_dir.name.lower())
    size = out.stat().st_size / 2**20
    return (f"GGUF of run **{run_dir.name}** ready ({size:,.0f} MB): `{_shown(out, ctx)}`, with an Ollama "
            f"`Modelfile` beside it.\n\nTo chat with it in Ollama, open a terminal in that folder and run:\n"
            f"```\nollama create {name} -f Modelfile\nollama run {name}\n```\n"
            f"llama.cpp and LM Studio open the .gguf file directly.")


def make_space(ctx: UIContext, run_id: str | None) -> str:
    """A Hugging Face Space folder in RUN_DIR/exports/space, and how to try it and put it online."""
    from ..space_export import export_space

    try:
        run_dir = _need_run(ctx, run_id)
        out = exports_dir(run_dir) / "space"
        if out.exists() and any(out.iterdir()):
            return (f"The Space folder of run **{run_dir.name}** is already there: `{_shown(out, ctx)}`.\n\n"
                    + _space_howto())
        export_space(run_dir, out)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return (f"Space folder of run **{run_dir.name}** ready: `{_shown(out, ctx)}` (app.py, requirements.txt, a "
            f"README with the model card, and the model).\n\n" + _space_howto())


def _space_howto() -> str:
    return ("To try it on this machine, open a terminal in that folder and run `pip install -r requirements.txt` "
            "then `python app.py`. To keep it online without this machine, create a Gradio Space on "
            "huggingface.co and upload the folder's files (or `python -m studio export RUN_DIR --space FOLDER "
            "--push your-name/space-name`).")


def serve_howto(ctx: UIContext, run_id: str | None) -> str:
    """How to put the run behind an OpenAI-compatible endpoint (a command to run; nothing is started here)."""
    try:
        run_dir = _need_run(ctx, run_id)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    from ..serve import DEFAULT_PORT

    body = ('{"model": "%s", "messages": [{"role": "user", "content": "Hello!"}]}' % run_dir.name)
    return (f"To let other programs talk to run **{run_dir.name}** the way they talk to OpenAI, run in a terminal:"
            f"\n```\npython -m studio serve {shlex.quote(_shown(run_dir, ctx))}\n```\nthen, from another terminal:"
            f"\n```\ncurl http://127.0.0.1:{DEFAULT_PORT}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}\n```\nAny OpenAI client works with base URL "
            f"`http://127.0.0.1:{DEFAULT_PORT}/v1`. To open it to other machines add `--host 0.0.0.0 --api-key "
            f"SECRET` (the key is then required).")


def forget() -> ExportView:
    """Another run was picked: the results shown were the previous run's."""
    return ExportView()


def build_export_tab(ctx: UIContext) -> None:
    """The Export accordion, acting on the run picked in the Chat tab (ctx.chat)."""
    run_select = ctx.chat.run_select
    with gr.Accordion("Export", open=False):
        gr.Markdown("Take the fine-tuned model away: the adapter alone (small; load it with peft on top of the "
                    "base model), or full weights with the adapter merged in (loads with plain transformers).")
        with gr.Row():
            zip_btn = gr.Button("Make adapter zip", elem_id="export-zip")
            merge_btn = gr.Button("Save merged weights", elem_id="export-merged")
        zip_file = gr.File(label="Adapter zip", interactive=False, elem_id="export-file")
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repository", placeholder="your-name/model-name", scale=3)
            push_btn = gr.Button("Push adapter to the Hub", scale=1)
        gr.Markdown("**Run it elsewhere:** one file for llama.cpp, Ollama or LM Studio (GGUF), or a ready folder "
                    "for a Hugging Face Space, a demo page that stays online without this machine.")
        with gr.Row():
            quant = gr.Radio(GGUF_QUANTS, value="f16", label="GGUF type", elem_id="export-gguf-quant", scale=2)
            gguf_btn = gr.Button("GGUF for llama.cpp / Ollama", elem_id="export-gguf", scale=1)
            space_btn = gr.Button("Hugging Face Space folder", elem_id="export-space", scale=1)
        status = gr.Markdown(elem_id="export-status")
        serve_md = gr.Markdown(elem_id="export-serve")
    view = ExportView(zip_file, status)
    zip_btn.click(bind(make_zip, ctx), run_select, [view.zip_file, view.status], api_name="export_zip")
    merge_btn.click(bind(merge, ctx), run_select, status, api_name="export_merged")
    push_btn.click(bind(push, ctx), [run_select, repo_id], status, api_name="push_to_hub")
    gguf_btn.click(bind(make_gguf, ctx), [run_select, quant], status, api_visibility="private")
    space_btn.click(bind(make_space, ctx), run_select, status, api_visibility="private")
    run_select.change(bind(forget), None, [view.zip_file, view.status], api_visibility="private")
    run_select.change(bind(serve_howto_or_blank, ctx), run_select, serve_md, api_visibility="private")


def serve_howto_or_blank(ctx: UIContext, run_id: str | None) -> str:
    """The endpoint's how-to under the picked run; nothing while no run is picked."""
    return serve_howto(ctx, run_id) if run_id and run_id != NO_RUN else ""
