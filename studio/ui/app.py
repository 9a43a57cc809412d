"""The six-tab app, and `python -m studio ui` to serve it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr

from ..config import BUNDLED_MODEL, TINY_TEST_MODEL
from ..errors import UserError
from ..logs import ArgumentParser, log_path, tell_user
from ..models import CATALOG
from . import data_tab
from .chat_tab import build_chat_tab
from .common import UIContext, bind, slots
from .demo import resolve_auth
from .export_tab import build_share_tab
from .model_tab import build_model_tab, catalog_table
from .settings_tab import build_settings_tab
from .train_tab import build_train_tab, open_page, run_choices

CSS = """
.progress {height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; margin: 4px 0;}
.progress > div {height: 100%; background: #4f46e5;}
footer {display: none !important;}
"""
UPLOAD_LIMIT = "200mb"


def build_app(runs_dir: Path, test_models: bool = False, uploads_dir: Path | None = None) -> gr.Blocks:
    """The six tabs, then the links between them. Only the Chat and Share tabs' named endpoints (/chat, /list_runs, ...)
    form the app's API; every other handler is registered with api_visibility="private": it is page glue with
    positional form values, and a shared link should not hand clients a way to start runs or read uploads outside
    the page."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    uploads_dir = Path(uploads_dir or runs_dir.parent / "uploads")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    choices = [BUNDLED_MODEL] + ([TINY_TEST_MODEL] if test_models else []) + [e.hub_id for e in CATALOG]
    ctx = UIContext(runs_dir=runs_dir, uploads_dir=uploads_dir, model_choices=choices,
                    default_model=TINY_TEST_MODEL if test_models else BUNDLED_MODEL)
    with gr.Blocks(title="Studio - fine-tune a language model") as app:
        gr.Markdown("# Studio\nFine-tune a language model on your own examples: pick a model, upload data, "
                    "train, chat with the result next to the model you started from, then take it with you.")
        with gr.Tabs() as tabs:
            with gr.Tab("1. Model", id="model"):
                build_model_tab(ctx)
            with gr.Tab("2. Data", id="data"):
                data_tab.build_data_tab(ctx)
            with gr.Tab("3. Settings", id="settings") as tab:
                build_settings_tab(ctx, tab)
            with gr.Tab("4. Train", id="train") as tab:
                build_train_tab(ctx, tab)
            with gr.Tab("5. Chat", id="chat") as tab:
                build_chat_tab(ctx, tab)
            with gr.Tab("6. Share", id="share") as tab:
                build_share_tab(ctx, tab)
        link_tabs(app, ctx, tabs)
        # A reload while a run trains lands on the Train tab, where that run is shown.
        app.load(bind(landing_tab, runs_dir), None, tabs, api_visibility="private")
    return app


def landing_tab(runs_dir: Path):
    """The tab a new page opens on: Train while a run is live, else the first one."""
    from .. import jobs

    return gr.Tabs(selected="train") if jobs.active_run(runs_dir) is not None else gr.skip()


def show_started_run(runs_dir: Path, run_id):
    """A run started outside the Train tab (Chat's "Train v2"): the Train tab opens on it, as after Start."""
    if not run_id:
        return gr.skip(), gr.skip()
    return gr.Tabs(selected="train"), gr.Dropdown(choices=run_choices(runs_dir), value=run_id)


def link_tabs(app: gr.Blocks, ctx: UIContext, tabs: gr.Tabs) -> None:
    """The wiring between tabs, once every tab is built: each link reads a typed attribute of the context."""
    # The Data tab's length check follows the Settings tab's max_seq_length.
    data_tab.follow_max_seq_length(ctx, ctx.fields["max_seq_length"])
    # The fit badges of the Model tab follow the method, length and batch chosen in Settings.
    sizing = ctx.form(["method", "max_seq_length", "batch_size"])
    for component in sizing:
        component.change(catalog_table, sizing, ctx.model.catalog, show_progress="hidden", api_visibility="private")
    names = list(ctx.fields)
    page = ctx.train.page
    ctx.chat.version_started.change(bind(show_started_run, ctx.runs_dir), ctx.chat.version_started,
                                    [tabs, page.run_select], api_visibility="private")
    app.load(bind(open_page, ctx), None, slots(page), api_visibility="private")
    # A reload while a run trains: the form shows that run's settings and data, not the defaults.
    data = ctx.data
    app.load(bind(settings_of_live_run, ctx.runs_dir, names), None, ctx.form(names), api_visibility="private").then(
        bind(data_tab.on_mapping, ctx), [*data.mapping, *data.looks], slots(data.view), api_visibility="private")


def settings_of_live_run(runs_dir: Path, names: list[str]) -> list:
    """The live run's RunConfig values in the order of `names`, or no change when nothing trains."""
    from .. import jobs
    from ..config import RunConfig
    from ..events import CONFIG_FILE

    run_dir = jobs.active_run(runs_dir)
    if run_dir is None:
        return [gr.skip() for _ in names]
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
    except Exception:  # noqa: BLE001 - an unreadable config leaves the form as it is
        return [gr.skip() for _ in names]
    return [getattr(config, name) for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studio ui", description="Start the Studio web app.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)),
                        help="port (default 7860)")
    parser.add_argument("--runs-dir", default=os.environ.get("STUDIO_RUNS_DIR", "runs"),
                        help="folder of runs (default: runs)")
    parser.add_argument("--share", action="store_true",
                        help="create a public link; a login is then required (see --auth)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="require this login; with --share and no --auth a password is generated and printed once")
    parser.add_argument("--test-models", action="store_true", default=bool(os.environ.get("STUDIO_TEST_MODELS")),
                        help="offer the tiny random test model (for tests and demos of the UI)")
    args = parser.parse_args(argv)
    try:
        credentials, generated = resolve_auth(args.share, args.auth, user="studio")
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    if generated:
        print(f"Public link requested: log in as user 'studio' with password {generated}", flush=True)
    app = build_app(Path(args.runs_dir), test_models=args.test_models)
    app.queue(default_concurrency_limit=4)
    # quiet: Gradio's own start-up lines tell people to edit launch() for a public link; ours name the flag.
    app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=credentials,
               max_file_size=UPLOAD_LIMIT, css=CSS, show_error=False, footer_links=[], quiet=True,
               prevent_thread_lock=True)
    print(f"Studio is running: open {app.local_url} in your browser (Ctrl+C stops it).", flush=True)
    if app.share_url:
        print(f"Public link for colleagues: {app.share_url} (they log in first).", flush=True)
    elif args.share:
        print("The public link could not be created (no internet connection?); the local address works.", flush=True)
    else:
        print("Only this machine can open it; `--share` makes a link colleagues can open, behind a login.",
              flush=True)
    if log_path() is not None:
        print(f"Warnings and details go to {log_path()}.", flush=True)
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
