"""Export: take a run's fine-tuned model away (adapter zip, merged weights, the hub). Shown under the Chat tab for
now, on the run picked there; every action has a CLI twin, `python -m studio export`.

Every result names its run, and goes when another run is picked: a zip under a newly selected run would be the old
run's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import UserError
from .common import UIContext, bind, error_markdown
from .sessions import run_dir_of


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
            return f"Merged weights of run **{run_dir.name}** are already saved in `{target}`."
        merge_adapter(run_dir, target)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return f"Merged weights of run **{run_dir.name}** saved in `{target}` (safetensors, tokenizer and chat template)."


def push(ctx: UIContext, run_id: str | None, repo: str) -> str:
    from ..export import push_to_hub

    try:
        run_dir = _need_run(ctx, run_id)
        return f"Adapter of run **{run_dir.name}** pushed to {push_to_hub(run_dir, repo)}"
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)


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
        status = gr.Markdown(elem_id="export-status")
    view = ExportView(zip_file, status)
    zip_btn.click(bind(make_zip, ctx), run_select, [view.zip_file, view.status], api_name="export_zip")
    merge_btn.click(bind(merge, ctx), run_select, status, api_name="export_merged")
    push_btn.click(bind(push, ctx), [run_select, repo_id], status, api_name="push_to_hub")
    run_select.change(bind(forget), None, [view.zip_file, view.status], api_visibility="private")
