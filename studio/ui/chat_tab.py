"""Tab 5: the same prompt to the base and the fine-tuned model, side by side, streamed; batch comparison over
held-out prompts with loss and perplexity; export (adapter zip, merged weights, hub).

The model lives in this server process, loaded once per (model, run) and reused by every browser tab
(studio.chat.ChatSession). Every action here has a CLI twin: `python -m studio chat` and `... export`.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import jobs, models, paths
from ..chat import (
    BASE_LABEL,
    BATCH_COLUMNS,
    TUNED_LABEL,
    ChatSession,
    GenerationSettings,
    ensure_gpu_free,
    loss_table,
    prompt_and_reference,
    read_prompt_list,
    training_examples,
    validation_examples,
)
from ..config import RunConfig
from ..errors import UserError
from ..events import ADAPTER_DIR, CONFIG_FILE, read_events, replay
from .common import UIContext, upload_roots, user_message

NO_RUN = "(no run: base model only)"
MAX_SESSIONS = 1  # models kept loaded in the server; one keeps memory flat when switching runs
SOURCES = ("Validation rows of the run", "Training rows of the run (seen in training)", "Uploaded file")
NO_TUNED = "*(No run selected: pick a finished run above to see the fine-tuned answer here.)*"

_sessions: OrderedDict[tuple, ChatSession] = OrderedDict()
_load_lock = threading.Lock()
_stops: dict[str, threading.Event] = {}  # browser session -> its stop flag


# --- sessions ---------------------------------------------------------------------------------
def _run_dir(runs_dir: Path, run_id: str | None) -> Path | None:
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
    run_dir = _run_dir(runs_dir, run_id)
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
    """Drop the loaded chat models when they sit on the GPU: a run about to start needs that memory (a 16-bit 7B
    chat model holds about 15 GB). On a CPU they stay: the run and the chat share RAM well enough."""
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


def stop_event_for(request: gr.Request | None) -> threading.Event:
    """A fresh stop flag for this browser session's next generation."""
    key = getattr(request, "session_hash", None) or "default"
    event = threading.Event()
    _stops[key] = event
    return event


def stop_session(request: gr.Request | None) -> None:
    key = getattr(request, "session_hash", None) or "default"
    if key in _stops:
        _stops[key].set()


def clear_chat(request: gr.Request = None):
    """Stop this browser session's answers and empty both columns and the message box."""
    stop_session(request)
    return [], [], ""


# --- conversation helpers ---------------------------------------------------------------------
def text_of(content) -> str:
    """A chatbot message's content as plain text (Gradio 6 passes a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return "".join(text_of(part) for part in content)
    return "" if content is None else str(content)


def normalise_history(history) -> list[dict]:
    return [{"role": m.get("role", "user"), "content": text_of(m.get("content"))} for m in (history or [])
            if isinstance(m, dict)]


def settings_from(values, system_prompt: str) -> GenerationSettings:
    temperature, top_p, max_new_tokens, repetition_penalty, seed = values
    return GenerationSettings(max_new_tokens=max_new_tokens or 1, temperature=temperature or 0.0,
                              top_p=top_p or 1.0, repetition_penalty=repetition_penalty or 1.0,
                              seed=seed or 0, system_prompt=system_prompt or "")


def chat_turn(session: ChatSession, message: str, base_history, tuned_history, base_settings: GenerationSettings,
              tuned_settings: GenerationSettings, stop: threading.Event | None):
    """Yield (base history, tuned history) as both answers stream in: base first, then fine-tuned."""
    message = (message or "").strip()
    if not message:
        raise UserError("Type a message first.")
    base = normalise_history(base_history) + [{"role": "user", "content": message}]
    tuned = normalise_history(tuned_history) + [{"role": "user", "content": message}]
    base.append({"role": "assistant", "content": ""})
    tuned.append({"role": "assistant", "content": "" if session.has_adapter else NO_TUNED})
    yield base, tuned
    for text in session.stream(base[:-1], base_settings, use_adapter=False, stop_event=stop):
        base[-1]["content"] = text
        yield base, tuned
    if session.has_adapter:
        # The tuned column's own earlier answers are its context, not the base model's.
        context = [m for m in tuned[:-1] if m["content"] != NO_TUNED]
        for text in session.stream(context, tuned_settings, use_adapter=True, stop_event=stop):
            tuned[-1]["content"] = text
            yield base, tuned


def run_choices(runs_dir: Path) -> list[tuple[str, str]]:
    runs = jobs.finished_runs(Path(runs_dir))
    return [(NO_RUN, NO_RUN)] + [(f"{s.run_id} ({s.status}, {s.model})", s.run_id) for s in runs]


def describe(runs_dir: Path, run_id: str | None, default_model: str) -> str:
    run_dir = _run_dir(runs_dir, run_id) if run_id and run_id != NO_RUN else None
    if run_dir is None:
        return f"Chatting with the base model **{default_model}** alone. Pick a finished run to compare."
    s = jobs.summarize(run_dir)
    before_after = replay(read_events(run_dir)).validation_before_after  # step 0 is the base model
    loss = ""
    if before_after:
        loss = f", validation loss {before_after[0]:.3f} for the base model and {before_after[1]:.3f} fine-tuned"
    elif s.best_eval_loss is not None:
        loss = f", best validation loss {s.best_eval_loss:.3f}"
    return f"Run **{s.run_id}**: {s.model} + LoRA adapter, {s.status} at step {s.step}{loss}."


# --- the tab ----------------------------------------------------------------------------------
def _settings_column(title: str, visible: bool = True):
    defaults = GenerationSettings()
    # On a CPU two answers of 256 tokens take half a minute or more; 128 keeps the first comparison quick.
    default_max_new = defaults.max_new_tokens if models.cuda_available() else min(defaults.max_new_tokens, 128)
    with gr.Column(visible=visible) as column:
        gr.Markdown(f"**{title}**")
        temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature",
                                info="0 = always the most likely token (repeatable); higher = more varied")
        top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p",
                          info="with temperature > 0: sample only from the most likely tokens adding up to this")
        max_new = gr.Slider(1, 2048, value=default_max_new, step=1, label="Max new tokens",
                            info="longest answer, in tokens (about 3/4 of a word each)")
        repetition = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty",
                               info="above 1 discourages repeating the same words")
        seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label="Seed",
                         info="the same seed and settings give the same sampled answer")
    return column, [temperature, top_p, max_new, repetition, seed]


def build_chat_tab(ctx: UIContext) -> None:
    runs_dir, default_model = Path(ctx.runs_dir), ctx.default_model
    gr.Markdown("Send the same prompt to the model you started from and to your fine-tuned version. "
                "Answers stream in: base first, then fine-tuned.")
    with gr.Row():
        # Built with no run in it: the page and its API description are served before a login and must not name
        # runs; the page's load event fills the list. Any finished run on disk is a valid value, for the page and
        # for an API client that got its id from /list_runs: the handlers check the run on disk when called.
        run_select = gr.Dropdown([(NO_RUN, NO_RUN)], value=NO_RUN, label="Run", scale=4, elem_id="chat-run",
                                 info="finished or stopped runs (they have a saved adapter)", allow_custom_value=True)
        refresh = gr.Button("Refresh runs", scale=1, size="sm", elem_id="chat-refresh")
    run_info = gr.Markdown(describe(runs_dir, None, default_model), elem_id="chat-run-info")
    with gr.Row(equal_height=True):
        base_bot = gr.Chatbot(label=f"{BASE_LABEL} model", height=420, buttons=["copy"], elem_id="chat-base")
        tuned_bot = gr.Chatbot(label=TUNED_LABEL, height=420, buttons=["copy"], elem_id="chat-tuned")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask both models something, then press Enter", show_label=False, scale=5,
                             lines=1, max_lines=8, elem_id="chat-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    with gr.Accordion("Generation settings", open=False):
        # value="": an API client may leave it out (client.predict(run_id, message, api_name="/chat")).
        system = gr.Textbox(value="", label="System prompt", lines=2,
                            placeholder="Optional: instructions sent before the conversation to both models (for "
                                        "example the one used in your training data)")
        same = gr.Checkbox(value=True, label="Same settings for both",
                           info="untick to give the fine-tuned model its own settings")
        with gr.Row():
            _, base_values = _settings_column("Both models")
            tuned_column, tuned_values = _settings_column(TUNED_LABEL, visible=False)
    same.change(lambda s: gr.Column(visible=not s), same, tuned_column, api_visibility="private")

    with gr.Accordion("Batch comparison", open=False):
        gr.Markdown("Run a list of prompts through both models and compare the answers with the reference "
                    "answers; measure the validation loss and perplexity of both.")
        with gr.Row():
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Prompts", scale=3)
            upload = gr.File(label="Prompt file (TXT: one per line; or CSV/JSON/JSONL)", scale=2, visible=False,
                             file_types=[".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".xlsx"])
            limit = gr.Number(value=10, precision=0, minimum=1, maximum=500, label="At most this many prompts",
                              scale=1)
        source.change(lambda chosen: gr.File(visible=chosen == SOURCES[2]), source, upload,
                      api_visibility="private")  # the file box only when a file is the source
        with gr.Row():
            batch_btn = gr.Button("Run comparison", variant="primary", elem_id="batch-run")
            loss_btn = gr.Button("Measure validation loss", elem_id="batch-loss")
        batch_status = gr.Markdown(elem_id="batch-status")
        batch_table = gr.Dataframe(headers=BATCH_COLUMNS, wrap=True, interactive=False, label="Answers", max_height=600,
                                   column_widths=["22%", "18%", "30%", "30%"],
                                   elem_id="batch-table")
        batch_csv = gr.DownloadButton("Download CSV", visible=False, elem_id="batch-csv")
        losses = gr.Dataframe(headers=["model", "loss", "perplexity"], interactive=False,
                              label="Validation loss (lower is better)", elem_id="batch-losses")

    with gr.Accordion("Export", open=False):
        gr.Markdown("Take the fine-tuned model away: the adapter alone (small; load it with peft on top of the "
                    "base model), or full weights with the adapter merged in (loads with plain transformers).")
        with gr.Row():
            zip_btn = gr.Button("Make adapter zip", elem_id="export-zip")
            merge_btn = gr.Button("Save merged weights", elem_id="export-merged")
        zip_file = gr.File(label="Adapter zip", interactive=False)
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repository", placeholder="your-name/model-name", scale=3)
            push_btn = gr.Button("Push adapter to the Hub", scale=1)
        export_status = gr.Markdown(elem_id="export-status")

    # --- callbacks ------------------------------------------------------------------------
    def refresh_runs(current, follow_newest_since=False, seen=None):
        """The run list again. The choice stays when it still exists; a gone or missing one becomes the newest run.
        With follow_newest_since, a run newer than `seen` (what this page last offered) is picked instead: fresh
        from the Train tab ("open the Chat tab"), the run just trained is the one to try."""
        choices = run_choices(runs_dir)
        ids = [v for _, v in choices if v != NO_RUN]  # newest first
        newest = ids[0] if ids else None
        if follow_newest_since and newest and newest != seen:
            current = newest
        value = current if current == NO_RUN or current in ids else (newest or NO_RUN)
        return gr.Dropdown(choices=choices, value=value), newest

    def list_runs() -> list[dict]:
        """Finished or stopped runs that can be chatted with: id, status, base model, steps, best loss."""
        return [{"run_id": s.run_id, "status": s.status, "model": s.model, "step": s.step,
                 "best_eval_loss": s.best_eval_loss} for s in jobs.finished_runs(runs_dir)]

    def select_run(run_id):
        try:
            text = describe(runs_dir, run_id, default_model)
            get_session(runs_dir, run_id, default_model)  # load now, so the first answer is quick
            return text
        except Exception as err:  # noqa: BLE001 - shown as one sentence
            return f"**Error:** {user_message(err)}"

    def chat(run_id, text, base_history, tuned_history, system_prompt, same_settings, *values,
             request: gr.Request = None):
        try:
            base_settings = settings_from(values[:5], system_prompt)
            tuned_settings = base_settings if same_settings else settings_from(values[5:], system_prompt)
            session = get_session(runs_dir, run_id, default_model)
            stop_flag = stop_event_for(request)
            for base, tuned in chat_turn(session, text, base_history, tuned_history, base_settings,
                                         tuned_settings, stop_flag):
                yield base, tuned, ""
        except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
            raise gr.Error(user_message(err), print_exception=False) from None

    def batch(run_id, source_name, file, max_rows, system_prompt, same_settings, *values,
              request: gr.Request = None):
        try:
            base_settings = settings_from(values[:5], system_prompt)
            tuned_settings = base_settings if same_settings else settings_from(values[5:], system_prompt)
            items = _batch_items(runs_dir, run_id, source_name, file, upload_roots(ctx))[: max(1, int(max_rows or 10))]
            session = get_session(runs_dir, run_id, default_model)
            stop_flag = stop_event_for(request)
            rows = []
            started = time.time()
            yield (f"Answering {len(items)} prompts with both models...", pd.DataFrame(columns=BATCH_COLUMNS),
                   gr.DownloadButton(visible=False))
            for i, item in enumerate(items, 1):
                if stop_flag.is_set():
                    break
                frame = session.batch_compare([item], base_settings, tuned_settings, stop_event=stop_flag)
                rows.append(frame.iloc[0].to_dict())
                table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
                yield (f"{i} of {len(items)} prompts answered ({time.time() - started:.0f} s).", table,
                       gr.DownloadButton(visible=False))
            table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
            folder = Path(tempfile.mkdtemp(prefix="studio-batch-"))
            csv_path = folder / f"comparison-{run_id if run_id and run_id != NO_RUN else 'base'}.csv"
            paths.write_csv(table, csv_path)  # a cell starting with = + - @ is text, not a formula, in a spreadsheet
            done = "Stopped" if stop_flag.is_set() else "Done"
            yield (f"{done}: {len(rows)} prompts in {time.time() - started:.0f} s.", table,
                   gr.DownloadButton(value=str(csv_path), visible=True))
        except Exception as err:  # noqa: BLE001
            raise gr.Error(user_message(err), print_exception=False) from None

    def measure_loss(run_id):
        try:
            run_dir = _run_dir(runs_dir, run_id)
            if run_dir is None:
                raise UserError("Pick a run first: the validation loss compares its base and fine-tuned models.")
            examples = validation_examples(run_dir)
            if not examples:
                raise UserError(f"Run {run_id} kept no validation rows (validation fraction 0): train with a "
                                f"validation fraction above 0 to measure it.")
            config = RunConfig.load(run_dir / CONFIG_FILE)
            session = get_session(runs_dir, run_id, default_model)
            return loss_table(session.eval_loss(examples, config.max_seq_length, config.train_on_answers_only))
        except Exception as err:  # noqa: BLE001
            raise gr.Error(user_message(err), print_exception=False) from None

    def make_zip(run_id):
        from ..export import zip_adapter

        try:
            run_dir = _need_run(runs_dir, run_id)
            folder = Path(tempfile.mkdtemp(prefix="studio-export-"))
            return zip_adapter(run_dir, folder / f"{run_dir.name}-adapter.zip").as_posix(), \
                "Adapter zip ready: download it above."
        except Exception as err:  # noqa: BLE001
            return None, f"**Error:** {user_message(err)}"

    def merge(run_id):
        from ..export import merge_adapter

        try:
            run_dir = _need_run(runs_dir, run_id)
            target = run_dir / "merged"
            if (target / "config.json").exists():
                return f"Merged weights are already saved in `{target}`."
            merge_adapter(run_dir, target)
            return f"Merged weights saved in `{target}` (safetensors, tokenizer and chat template)."
        except Exception as err:  # noqa: BLE001
            return f"**Error:** {user_message(err)}"

    def push(run_id, repo):
        from ..export import push_to_hub

        try:
            return f"Adapter pushed to {push_to_hub(_need_run(runs_dir, run_id), repo)}"
        except Exception as err:  # noqa: BLE001
            return f"**Error:** {user_message(err)}"

    # --- wiring ---------------------------------------------------------------------------
    refresh.click(lambda current: refresh_runs(current)[0], run_select, run_select, api_name="refresh_runs")
    gr.api(list_runs, api_name="list_runs")
    run_select.change(select_run, run_select, run_info, api_visibility="private")
    chat_inputs = [run_select, message, base_bot, tuned_bot, system, same, *base_values, *tuned_values]
    chat_outputs = [base_bot, tuned_bot, message]
    send.click(chat, chat_inputs, chat_outputs, api_name="chat")
    message.submit(chat, chat_inputs, chat_outputs, api_visibility="private")
    stop.click(stop_session, None, None, api_name="stop", queue=False)
    clear.click(clear_chat, None, [base_bot, tuned_bot, message], api_name="clear", queue=False)
    for bot in (base_bot, tuned_bot):  # a column's own trash icon clears both: the two answer the same turns
        bot.clear(clear_chat, None, [base_bot, tuned_bot, message], api_visibility="private", queue=False)
    batch_btn.click(batch, [run_select, source, upload, limit, system, same, *base_values, *tuned_values],
                    [batch_status, batch_table, batch_csv], api_name="batch_compare")
    loss_btn.click(measure_loss, run_select, losses, api_name="validation_loss")
    zip_btn.click(make_zip, run_select, [zip_file, export_status], api_name="export_zip")
    merge_btn.click(merge, run_select, export_status, api_name="export_merged")
    push_btn.click(push, [run_select, repo_id], export_status, api_name="push_to_hub")
    ctx.extra["chat_run_select"] = run_select  # another tab can preselect a run here
    ctx.extra.setdefault("before_start", []).append(release_gpu_sessions)
    # Finished runs appear when the tab is opened (and on page load), not only on refresh.
    from gradio.context import Context

    newest_seen = gr.State(None)  # the newest finished run this page has offered so far

    def follow_newest(current, seen):
        """Opening the tab: a run that finished since this page last looked is the one to try; otherwise the
        selection stays (the user may have picked an older run on purpose)."""
        return refresh_runs(current, follow_newest_since=True, seen=seen)

    if isinstance(Context.block, gr.Tab):
        Context.block.select(follow_newest, [run_select, newest_seen], [run_select, newest_seen],
                             api_visibility="private")
    if Context.root_block is not None:
        Context.root_block.load(follow_newest, [run_select, newest_seen], [run_select, newest_seen],
                                api_visibility="private")


def _need_run(runs_dir: Path, run_id: str | None) -> Path:
    run_dir = _run_dir(runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a finished run first: export needs its adapter.")
    return run_dir


def _batch_items(runs_dir: Path, run_id: str | None, source_name: str, file,
                 roots: tuple[Path, ...]) -> list[tuple[list[dict], str]]:
    """(conversation, reference answer) pairs from the chosen source. An uploaded prompt file must lie in `roots`
    (gradio's upload folder or the app's folders)."""
    if source_name == SOURCES[2]:
        path = getattr(file, "name", None) or file
        if not path:
            raise UserError("Upload a prompt file first (TXT with one prompt per line, or a data file).")
        return read_prompt_list(paths.check_client_path(path, roots, fix="upload the prompt file in the Batch "
                                                                           "comparison box"))
    run_dir = _run_dir(runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a run first, or choose 'Uploaded file' to compare prompts of your own.")
    examples = validation_examples(run_dir) if source_name == SOURCES[0] else training_examples(run_dir)
    if not examples:
        raise UserError(f"Run {run_id} kept no validation rows: choose the training rows or upload a prompt file.")
    items = [prompt_and_reference(ex) for ex in examples]
    return [(m, ref) for m, ref in items if m and m[-1].get("role") == "user"]
