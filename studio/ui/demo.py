"""Demo mode: `python -m studio demo RUN_DIR` serves only the chat of one finished run, for a shared link.

The page has the two chat columns (base and fine-tuned), a message box, stop and clear - nothing that
can start a job, read or upload a file, export, or change a setting. Answers use fixed settings.
A public link (--share) always needs a login: --auth USER:PASS, or a password generated and printed once.
"""

from __future__ import annotations

import secrets
import socket
import sys
import threading
from pathlib import Path

import gradio as gr

from ..chat import BASE_LABEL, TUNED_LABEL, ChatSession, GenerationSettings, run_adapter_dir
from ..errors import UserError
from ..logs import ArgumentParser, tell_user
from .chat_tab import chat_turn
from .common import guarded
from .sessions import clear_chat, stop_event_for, stop_session

DEMO_USER = "demo"
DEMO_SETTINGS = GenerationSettings(max_new_tokens=256, temperature=0.0, repetition_penalty=1.1)
DEFAULT_PORT = 7861


def resolve_auth(share: bool, auth: str | None, user: str = DEMO_USER) -> tuple[tuple[str, str] | None, str | None]:
    """(login, generated password or None), for the demo and the full app alike. A public link without --auth
    gets a fresh random password for `user`."""
    if auth:
        user, sep, password = auth.partition(":")
        if not sep or not user.strip() or not password:
            raise UserError("--auth must look like USER:PASSWORD, for example --auth guest:s3cret.")
        return (user.strip(), password), None
    if share:
        password = secrets.token_urlsafe(12)  # ~72 bits, printed once, never stored
        return (user, password), password
    return None, None


def build_demo(run_dir: str | Path, session: ChatSession | None = None,
               settings: GenerationSettings = DEMO_SETTINGS) -> gr.Blocks:
    """A page with the chat of one run and nothing else. The model loads on the first message
    (or pass a loaded session); every answer uses `settings`, which visitors cannot change."""
    run_dir = Path(run_dir)
    run_adapter_dir(run_dir)  # a clear error now, not on the first message
    state = {"session": session}
    lock = threading.Lock()

    def get_session() -> ChatSession:
        with lock:
            if state["session"] is None:
                state["session"] = ChatSession.for_run(run_dir)
            return state["session"]

    @guarded
    def chat(message: str, base_history: list, tuned_history: list, request: gr.Request = None):
        stop_flag = stop_event_for(request)
        for base, tuned in chat_turn(get_session(), message, base_history, tuned_history, settings, settings,
                                     stop_flag):
            yield base, tuned, ""

    with gr.Blocks(title=f"Chat - {run_dir.name}") as demo:
        gr.Markdown(f"# {run_dir.name}\nThe same message goes to the base model and to its fine-tuned version; "
                    f"compare the answers side by side.")
        with gr.Row(equal_height=True):
            base_bot = gr.Chatbot(label=f"{BASE_LABEL} model", height=460, buttons=["copy"])
            tuned_bot = gr.Chatbot(label=TUNED_LABEL, height=460, buttons=["copy"])
        with gr.Row():
            message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                 max_lines=8)
            send = gr.Button("Send", variant="primary", scale=1)
            stop = gr.Button("Stop", variant="stop", scale=1)
            clear_btn = gr.Button("Clear", scale=1)
        inputs, outputs = [message, base_bot, tuned_bot], [base_bot, tuned_bot, message]
        send.click(chat, inputs, outputs, api_name="chat")
        message.submit(chat, inputs, outputs, api_visibility="private")
        stop.click(stop_session, None, None, api_name="stop", queue=False)
        clear_btn.click(clear_chat, None, outputs, api_name="clear", queue=False)
        for bot in (base_bot, tuned_bot):  # a column's own trash icon clears both columns
            bot.clear(clear_chat, None, outputs, api_visibility="private", queue=False)
    return demo


def launch_demo(demo: gr.Blocks, port: int | None = None, share: bool = False,
                auth: tuple[str, str] | None = None, prevent_thread_lock: bool = False):
    """Serve the demo: only this machine (127.0.0.1) sees it unless a public share link is made.

    Uploads are refused outright (1-byte limit): the page has nothing to upload to.
    """
    demo.queue(default_concurrency_limit=1)  # one model, one answer at a time; the rest wait in line
    return demo.launch(server_name="127.0.0.1", server_port=port, share=share, auth=auth,
                       max_file_size=1, show_error=False, footer_links=[], prevent_thread_lock=prevent_thread_lock,
                       quiet=prevent_thread_lock)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studio demo",
                            description="Serve only the chat of one finished run: base and fine-tuned side by side, "
                                        "nothing else (no training, files or settings).")
    parser.add_argument("run_dir", help="a finished or stopped run folder, e.g. runs/20250101-120000-support")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true",
                        help="also make a public link; a login is then required (see --auth)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="require this login; with --share and no --auth a password is generated and printed "
                             "once")
    args = parser.parse_args(argv)
    try:
        credentials, generated = resolve_auth(args.share, args.auth)
        session = ChatSession.for_run(args.run_dir)  # load before serving: the first visitor does not wait
        demo = build_demo(args.run_dir, session)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    if generated:
        print(f"Public link requested: log in as user '{DEMO_USER}' with password {generated}", flush=True)
    launch_demo(demo, args.port, args.share, credentials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
