"""Tab 5: the same prompt to the base and the fine-tuned model, side by side, streamed; batch comparison over
held-out prompts with loss and perplexity. Export sits under it (export_tab.py).

The models live in this server process (sessions.py), loaded once per (model, run) and reused by every browser tab.
Every action here has a CLI twin: `python -m studio chat`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.context import Context

from .. import feedback, jobs, models, paths
from ..chat import (
    BASE_LABEL,
    BATCH_COLUMNS,
    TUNED_LABEL,
    ChatSession,
    GenerationSettings,
    loss_table,
    prompt_and_reference,
    read_prompt_list,
    training_examples,
    validation_examples,
)
from ..config import RunConfig
from ..errors import UserError
from ..events import CONFIG_FILE, read_events, replay
from .common import UIContext, bind, error_markdown, guarded, keep, slots, upload_roots, user_message
from .sessions import (
    NO_RUN,
    clear_chat,
    get_session,
    release_gpu_sessions,
    run_dir_of,
    stop_event_for,
    stop_session,
)

# The first source is the run's report card: its held-out rows were answered by both models when training ended,
# so the comparison (and the validation loss below it) is a view of the report, not a second measurement.
FROM_REPORT = "The run's report card (held-out rows, already answered)"
VALIDATION = "Validation rows of the run, answered now with the settings above"
TRAINING = "Training rows of the run (seen in training)"
UPLOADED = "Uploaded file"
SOURCES = (FROM_REPORT, VALIDATION, TRAINING, UPLOADED)
NO_TUNED = "*(No run selected: pick a finished run above to see the fine-tuned answer here.)*"
GENERATION_FIELDS = ("temperature", "top_p", "max_new_tokens", "repetition_penalty", "seed")  # a column's sliders


@dataclass
class ChatTab:
    """What the Chat tab lends to others: the run picked (Export acts on it), and the id of a next version just
    started from here (the app shows it in the Train tab)."""

    run_select: gr.Dropdown
    version_started: gr.State


@dataclass
class FeedbackView:
    """What a correction, a rating or "Train v2" redraws: the line about the run's corrections, the fine-tuned
    column (a correction replaces the answer it corrects), the preference-pairs download, a next version started."""

    notice: Any = keep()
    tuned: Any = keep()
    pairs: Any = keep()
    started: Any = keep()


@dataclass
class BatchView:
    """The batch comparison's outputs. Each result names its run, and all go when another run is picked."""

    status: Any = keep()
    table: Any = keep()
    csv: Any = keep()


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


def settings_pair(system_prompt: str, same_settings: bool, values) -> tuple[GenerationSettings, GenerationSettings]:
    """(base, tuned) generation settings from the two columns of sliders (GENERATION_FIELDS each, base first)."""
    n = len(GENERATION_FIELDS)

    def column(numbers) -> GenerationSettings:
        temperature, top_p, max_new_tokens, repetition_penalty, seed = numbers
        return GenerationSettings(max_new_tokens=max_new_tokens or 1, temperature=temperature or 0.0,
                                  top_p=top_p or 1.0, repetition_penalty=repetition_penalty or 1.0,
                                  seed=seed or 0, system_prompt=system_prompt or "")

    base = column(values[:n])
    return base, base if same_settings else column(values[n:2 * n])


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


# --- the run list -----------------------------------------------------------------------------
def run_choices(runs_dir: Path) -> list[tuple[str, str]]:
    runs = jobs.finished_runs(Path(runs_dir))
    return [(NO_RUN, NO_RUN)] + [(f"{s.run_id} ({s.status}, {s.model})", s.run_id) for s in runs]


def _run_list(ctx: UIContext, current, newer_than=None, follow: bool = False) -> tuple[gr.Dropdown, str | None]:
    """(the run list again, the newest run in it). The choice stays when it still exists; a gone or missing one
    becomes the newest run. With `follow`, a run newer than `newer_than` (what this page last offered) is picked."""
    choices = run_choices(ctx.runs_dir)
    ids = [v for _, v in choices if v != NO_RUN]  # newest first
    newest = ids[0] if ids else None
    if follow and newest and newest != newer_than:
        current = newest
    value = current if current == NO_RUN or current in ids else (newest or NO_RUN)
    return gr.Dropdown(choices=choices, value=value), newest


def refresh_runs(ctx: UIContext, current) -> gr.Dropdown:
    """The Refresh button: the list again, the choice kept when it still exists."""
    return _run_list(ctx, current)[0]


def follow_newest(ctx: UIContext, current, seen) -> tuple[gr.Dropdown, str | None]:
    """Opening the tab (or the page): a run that finished since this page last looked (`seen`) is the one to try,
    fresh from the Train tab; otherwise the selection stays (the user may have picked an older run on purpose)."""
    return _run_list(ctx, current, newer_than=seen, follow=True)


def list_runs(ctx: UIContext) -> list[dict]:
    """Finished or stopped runs that can be chatted with: id, status, base model, steps, best loss."""
    return [{"run_id": s.run_id, "status": s.status, "model": s.model, "step": s.step,
             "best_eval_loss": s.best_eval_loss} for s in jobs.finished_runs(ctx.runs_dir)]


def describe(runs_dir: Path, run_id: str | None, default_model: str) -> str:
    run_dir = run_dir_of(runs_dir, run_id)
    if run_dir is None:
        return f"Chatting with the base model **{default_model}** alone. Pick a finished run to compare."
    s = jobs.summarize(run_dir)
    before_after = replay(read_events(run_dir)).validation_before_after  # step 0 is the base model
    loss = ""
    if before_after:
        loss = f", validation loss {before_after[0]:.3f} for the base model and {before_after[1]:.3f} fine-tuned"
    elif s.best_eval_loss is not None:
        loss = f", best validation loss {s.best_eval_loss:.3f}"
    chain = feedback.lineage(run_dir)
    version = f" Version {len(chain)}, continuing run {chain[-2]}." if len(chain) > 1 else ""
    return f"Run **{s.run_id}**: {s.model} + LoRA adapter, {s.status} at step {s.step}{loss}.{version}"


def select_run(ctx: UIContext, run_id) -> str:
    """A run was picked: say what it is, and load it now so the first answer is quick."""
    try:
        text = describe(ctx.runs_dir, run_id, ctx.default_model)
        get_session(ctx.runs_dir, run_id, ctx.default_model)
        return text
    except Exception as err:  # noqa: BLE001 - shown as one sentence
        return error_markdown(err)


def forget_results() -> BatchView:
    """Another run was picked: the comparison shown was the previous run's."""
    return BatchView("", pd.DataFrame(columns=BATCH_COLUMNS), gr.DownloadButton(value=None, visible=False))


def empty_losses() -> pd.DataFrame:
    return pd.DataFrame(columns=["run", "model", "loss", "perplexity"])


def _run_name(run_id) -> str:
    return f"run **{run_id}**" if run_id and run_id != NO_RUN else "the base model alone"


# --- the actions ------------------------------------------------------------------------------
@guarded
def chat(ctx: UIContext, run_id, text, base_history, tuned_history, system_prompt, same_settings, *values,
         request: gr.Request = None):
    base_settings, tuned_settings = settings_pair(system_prompt, same_settings, values)
    session = get_session(ctx.runs_dir, run_id, ctx.default_model)
    stop_flag = stop_event_for(request)
    for base, tuned in chat_turn(session, text, base_history, tuned_history, base_settings, tuned_settings,
                                 stop_flag):
        yield base, tuned, ""


@guarded
def batch(ctx: UIContext, run_id, source_name, file, max_rows, system_prompt, same_settings, *values,
          request: gr.Request = None):
    """The prompts through both models, one row at a time; the status line names the run it compares."""
    if source_name == FROM_REPORT:
        yield report_view(ctx.runs_dir, run_id, int(max_rows or 10))
        return
    base_settings, tuned_settings = settings_pair(system_prompt, same_settings, values)
    items = batch_items(ctx.runs_dir, run_id, source_name, file, upload_roots(ctx))[: max(1, int(max_rows or 10))]
    session = get_session(ctx.runs_dir, run_id, ctx.default_model)
    stop_flag = stop_event_for(request)
    whose = _run_name(run_id)
    rows = []
    started = time.time()
    hidden = gr.DownloadButton(visible=False)
    yield BatchView(f"{whose.capitalize()}: answering {len(items)} prompts with both models...",
                    pd.DataFrame(columns=BATCH_COLUMNS), hidden)
    for i, item in enumerate(items, 1):
        if stop_flag.is_set():
            break
        frame = session.batch_compare([item], base_settings, tuned_settings, stop_event=stop_flag)
        rows.append(frame.iloc[0].to_dict())
        yield BatchView(f"{whose.capitalize()}: {i} of {len(items)} prompts answered "
                        f"({time.time() - started:.0f} s).", pd.DataFrame(rows, columns=BATCH_COLUMNS), hidden)
    table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    done = "stopped" if stop_flag.is_set() else "done"
    yield BatchView(f"{whose.capitalize()}, {done}: {len(rows)} prompts in {time.time() - started:.0f} s.", table,
                    csv_download(table, f"comparison-{run_id if run_id and run_id != NO_RUN else 'base'}.csv"))


def csv_download(table: pd.DataFrame, name: str) -> gr.DownloadButton:
    """The table as a CSV file of its own temporary folder, offered by the Download CSV button."""
    csv_path = Path(tempfile.mkdtemp(prefix="studio-batch-")) / name
    paths.write_csv(table, csv_path)  # a cell starting with = + - @ is text, not a formula, in a spreadsheet
    return gr.DownloadButton(value=str(csv_path), visible=True)


def report_of(runs_dir: Path, run_id) -> tuple[Path | None, dict | None]:
    from ..evaluate import read_report

    run_dir = run_dir_of(runs_dir, run_id)
    return run_dir, (read_report(run_dir) if run_dir is not None else None)


def report_view(runs_dir: Path, run_id, max_rows: int) -> BatchView:
    """The report card's answers to the held-out rows: no model runs, the figures are the report's own."""
    from ..evaluate import REPORT_HTML

    run_dir, report = report_of(runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a run first, or choose 'Uploaded file' to compare prompts of your own.")
    examples = ((report or {}).get("task") or {}).get("examples") or []
    if not examples:
        raise UserError(f"Run {run_id} has no report card answers yet: a run with validation rows writes them when "
                        f"it ends (or run `python -m studio eval runs/{run_id}`); choose 'Validation rows' to answer "
                        f"them now.")
    shown = examples[: max(1, max_rows)]
    table = pd.DataFrame([{column: e.get(column, "") for column in BATCH_COLUMNS} for e in shown],
                         columns=BATCH_COLUMNS)
    chrf = report["task"].get("chrf") or {}
    closeness = (f" Closeness to your answers (chrF, 0 to 100): base {chrf['base']:.0f}, fine-tuned "
                 f"{chrf['tuned']:.0f}." if chrf.get("base") is not None and chrf.get("tuned") is not None else "")
    return BatchView(f"{_run_name(run_id).capitalize()}, from its report card: {len(shown)} of {len(examples)} "
                     f"held-out rows, answered greedily by both models when training ended.{closeness} The whole "
                     f"report is `{run_dir.name}/{REPORT_HTML}` in the runs folder.", table,
                     csv_download(table, f"report-answers-{run_dir.name}.csv"))


@guarded
def measure_loss(ctx: UIContext, run_id) -> pd.DataFrame:
    """Validation loss and perplexity of the base and the fine-tuned model, on the run's held-out rows; the table's
    first column names the run. A run with a report card shows the report's figures (measured on the same rows
    when training ended) instead of loading the models again."""
    run_dir, report = report_of(ctx.runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a run first: the validation loss compares its base and fine-tuned models.")
    losses = ((report or {}).get("task") or {}).get("loss") or {}
    if losses.get("base") is None or losses.get("tuned") is None:
        examples = validation_examples(run_dir)
        if not examples:
            raise UserError(f"Run {run_id} kept no validation rows (validation fraction 0): train with a "
                            f"validation fraction above 0 to measure it.")
        config = RunConfig.load(run_dir / CONFIG_FILE)
        session = get_session(ctx.runs_dir, run_id, ctx.default_model)
        losses = session.eval_loss(examples, config.max_seq_length, config.train_on_answers_only)
    table = loss_table(losses)
    table.insert(0, "run", run_dir.name)
    return table


def batch_items(runs_dir: Path, run_id: str | None, source_name: str, file,
                roots: tuple[Path, ...]) -> list[tuple[list[dict], str]]:
    """(conversation, reference answer) pairs from the chosen source. An uploaded prompt file must lie in `roots`
    (gradio's upload folder or the app's folders)."""
    if source_name == UPLOADED:
        path = getattr(file, "name", None) or file
        if not path:
            raise UserError("Upload a prompt file first (TXT with one prompt per line, or a data file).")
        return read_prompt_list(paths.check_client_path(path, roots, fix="upload the prompt file in the Batch "
                                                                           "comparison box"))
    run_dir = run_dir_of(runs_dir, run_id)
    if run_dir is None:
        raise UserError("Pick a run first, or choose 'Uploaded file' to compare prompts of your own.")
    examples = validation_examples(run_dir) if source_name == VALIDATION else training_examples(run_dir)
    if not examples:
        raise UserError(f"Run {run_id} kept no validation rows: choose the training rows or upload a prompt file.")
    items = [prompt_and_reference(ex) for ex in examples]
    return [(m, ref) for m, ref in items if m and m[-1].get("role") == "user"]


# --- teaching the next version ----------------------------------------------------------------
TEACH_HINT = ("**Teach the next version.** Under each fine-tuned answer, the pencil corrects it (write the answer "
              "it should have given, then Submit) and the thumbs mark it good or bad. Corrections are kept with the "
              "run; **Train v2** continues this run's fine-tuning on its data plus your corrections, so a handful "
              "of them count.")


def feedback_view(runs_dir: Path, run_id, saved: str = "") -> FeedbackView:
    """The corrections line and the preference-pairs download of the run picked (`saved`: what was just done)."""
    hidden = gr.DownloadButton(visible=False)
    try:
        run_dir = run_dir_of(runs_dir, run_id)
        if run_dir is None:
            return FeedbackView("Pick a finished run above to correct its answers.", pairs=hidden)
        counted = feedback.counts(run_dir)
        pairs = hidden
        if counted.corrections:
            # One file per run, rewritten: looking at a run again leaves nothing more behind.
            dest = Path(tempfile.gettempdir()) / "studio-pairs" / run_dir.name / f"corrections-{run_dir.name}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            feedback.write_preference_file(run_dir, dest)
            pairs = gr.DownloadButton(value=str(dest), visible=True)
    except Exception as err:  # noqa: BLE001 - shown as one sentence
        return FeedbackView(error_markdown(err), pairs=hidden)
    return FeedbackView(" ".join(part for part in (saved, counted.sentence()) if part), pairs=pairs)


def answer_at(history, index) -> tuple[list[dict], int]:
    """(the column's messages, the position of the message an edit or a mark is about)."""
    messages = normalise_history(history)
    position = index[0] if isinstance(index, (list, tuple)) else index
    if not isinstance(position, int) or not 0 <= position < len(messages):
        raise UserError("That message is no longer in the conversation: send the question again.")
    return messages, position


def asked_before(messages: list[dict], position: int, system_prompt: str) -> list[dict]:
    """The conversation the answer at `position` replied to, with the system prompt used for it (none typed: the
    run's own, which its next version adds to every row without one)."""
    from ..chat import with_system_prompt

    return with_system_prompt([m for m in messages[:position] if m["content"] != NO_TUNED], system_prompt or "")


def correct_answer(ctx: UIContext, run_id, system_prompt, tuned_history, edit: gr.EditData) -> FeedbackView:
    """An answer of the fine-tuned column edited in place: the edit is the correction, kept in the run's
    feedback file, and stays in the column. Any other edit is undone and explained."""
    messages = normalise_history(tuned_history)
    before = text_of(edit.previous_value)
    try:
        messages, position = answer_at(tuned_history, edit.index)
        messages[position]["content"] = before  # until the correction is saved, the model's own words stay
        run_dir = run_dir_of(ctx.runs_dir, run_id)
        if run_dir is None:
            raise UserError("Pick a finished run above first: corrections teach that run's next version.")
        if messages[position]["role"] != "assistant" or before == NO_TUNED:
            raise UserError("Only the fine-tuned model's answers can be corrected here: to ask something else, send "
                            "a new message.")
        correction = text_of(edit.value)
        feedback.record(run_dir, asked_before(messages, position, system_prompt), before, correction=correction)
    except Exception as err:  # noqa: BLE001 - shown as one sentence
        view = feedback_view(ctx.runs_dir, run_id)
        return dataclasses.replace(view, notice=error_markdown(err), tuned=messages)
    messages[position]["content"] = correction.strip()
    view = feedback_view(ctx.runs_dir, run_id, saved="Correction saved.")
    return dataclasses.replace(view, tuned=messages)


def rate_answer(ctx: UIContext, run_id, system_prompt, tuned_history, mark: gr.LikeData) -> FeedbackView:
    """👍 / 👎 under a fine-tuned answer: kept in the run's feedback file (un-marking keeps the earlier mark)."""
    try:
        messages, position = answer_at(tuned_history, mark.index)
        if mark.liked is None or mark.liked == "":
            return FeedbackView()
        run_dir = run_dir_of(ctx.runs_dir, run_id)
        if run_dir is None:
            raise UserError("Pick a finished run above first: marks teach that run's next version.")
        if messages[position]["role"] != "assistant" or messages[position]["content"] == NO_TUNED:
            raise UserError("Only the fine-tuned model's answers can be marked.")
        rating = "good" if mark.liked is True or mark.liked == "Like" else "bad"
        asked = asked_before(messages, position, system_prompt)
        answer = messages[position]["content"]
        if any(m.correction == answer and m.messages == asked for m in feedback.corrections(feedback.read(run_dir))):
            raise UserError("This answer is your own correction: it is already kept as the answer to learn.")
        feedback.record(run_dir, asked, answer, rating=rating)
    except Exception as err:  # noqa: BLE001 - shown as one sentence
        return FeedbackView(error_markdown(err))
    return feedback_view(ctx.runs_dir, run_id, saved=f"Marked {rating}.")


def train_next_version(ctx: UIContext, run_id) -> FeedbackView:
    """"Train v2 with my corrections": a new run from this run's adapter, on its data plus the corrections; the
    app then shows it in the Train tab."""
    try:
        parent_dir = run_dir_of(ctx.runs_dir, run_id)
        if parent_dir is None:
            raise UserError("Pick a finished run above first: its next version continues from it.")
        live = jobs.active_run(ctx.runs_dir)
        if live is not None:  # the machine is busy: the next version waits its turn in the run queue
            from .. import run_queue

            run_queue.add(ctx.runs_dir, jobs.next_version(parent_dir))
            return FeedbackView(f"Run **{live.name}** is training, so the next version of {run_id} waits in the "
                                f"queue (see **Queue** in the Train tab); it trains on the corrections made until "
                                f"it starts.")
        release_gpu_sessions()
        run_dir = jobs.start_next_version(ctx.runs_dir, run_id)
    except Exception as err:  # noqa: BLE001 - shown as one sentence
        return FeedbackView(f"**Cannot start the next version:** {user_message(err)}")
    n = feedback.counts(parent_dir).corrections
    return FeedbackView(f"Started **{run_dir.name}** from run {run_id}'s fine-tuned model, on its data plus "
                        f"{n} correction{'s' if n != 1 else ''}: follow it in the Train tab.", started=run_dir.name)


# --- the tab ----------------------------------------------------------------------------------
def _settings_column(title: str, visible: bool = True):
    """A column of generation sliders, in the order of GENERATION_FIELDS."""
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


def build_chat_tab(ctx: UIContext, tab: gr.Tab | None = None) -> None:
    """The Chat tab; `tab` (its gr.Tab) lets opening it follow a newly finished run."""
    gr.Markdown("Send the same prompt to the model you started from and to your fine-tuned version. "
                "Answers stream in: base first, then fine-tuned.")
    with gr.Row():
        # Built with no run in it: the page and its API description are served before a login and must not name
        # runs; the page's load event fills the list. Any finished run on disk is a valid value, for the page and
        # for an API client that got its id from /list_runs: the handlers check the run on disk when called.
        run_select = gr.Dropdown([(NO_RUN, NO_RUN)], value=NO_RUN, label="Run", scale=4, elem_id="chat-run",
                                 info="finished or stopped runs (they have a saved adapter)", allow_custom_value=True)
        refresh = gr.Button("Refresh runs", scale=1, size="sm", elem_id="chat-refresh")
    run_info = gr.Markdown(describe(ctx.runs_dir, None, ctx.default_model), elem_id="chat-run-info")
    with gr.Row(equal_height=True):
        base_bot = gr.Chatbot(label=f"{BASE_LABEL} model", height=420, buttons=["copy"], elem_id="chat-base")
        # Editable in place: editing an answer is how it is corrected (correct_answer undoes any other edit).
        tuned_bot = gr.Chatbot(label=TUNED_LABEL, height=420, buttons=["copy"], elem_id="chat-tuned",
                               editable="all", feedback_options=("Like", "Dislike"))
    with gr.Row():
        message = gr.Textbox(placeholder="Ask both models something, then press Enter", show_label=False, scale=5,
                             lines=1, max_lines=8, elem_id="chat-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    gr.Markdown(TEACH_HINT, elem_id="feedback-hint")
    with gr.Row(equal_height=True):
        teach = FeedbackView(
            notice=gr.Markdown(feedback_view(ctx.runs_dir, None).notice, elem_id="feedback-note"),
            tuned=tuned_bot,
            pairs=gr.DownloadButton("Download corrections as preference pairs (for DPO or ORPO)", scale=1, size="sm",
                                    visible=False, elem_id="feedback-pairs"),
            started=gr.State(None))
        train_v2 = gr.Button("Train v2 with my corrections", elem_id="train-v2", scale=1)
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
        gr.Markdown("Compare both models on many prompts at once. The report card's answers are ready as soon as a "
                    "run ends (the same rows and figures as its report); or answer the run's rows, or a file of "
                    "your own prompts, now with the settings above. The validation loss and perplexity of both "
                    "come from the report card too, when the run has one.")
        with gr.Row():
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Prompts", scale=3)
            upload = gr.File(label="Prompt file (TXT: one per line; or CSV/JSON/JSONL)", scale=2, visible=False,
                             file_types=[".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".xlsx"])
            limit = gr.Number(value=10, precision=0, minimum=1, maximum=500, label="At most this many prompts",
                              scale=1)
        source.change(lambda chosen: gr.File(visible=chosen == UPLOADED), source, upload,
                      api_visibility="private")  # the file box only when a file is the source
        with gr.Row():
            batch_btn = gr.Button("Run comparison", variant="primary", elem_id="batch-run")
            loss_btn = gr.Button("Measure validation loss", elem_id="batch-loss")
        results = BatchView(
            status=gr.Markdown(elem_id="batch-status"),
            table=gr.Dataframe(headers=BATCH_COLUMNS, wrap=True, interactive=False, label="Answers", max_height=600,
                               column_widths=["22%", "18%", "30%", "30%"], elem_id="batch-table"),
            csv=gr.DownloadButton("Download CSV", visible=False, elem_id="batch-csv"))
        losses = gr.Dataframe(value=empty_losses(), interactive=False, elem_id="batch-losses",
                              label="Validation loss (lower is better; perplexity: about how many words the model "
                                    "hesitates between at each step)")

    refresh.click(bind(refresh_runs, ctx), run_select, run_select, api_name="refresh_runs")
    gr.api(bind(list_runs, ctx), api_name="list_runs")
    run_select.change(bind(select_run, ctx), run_select, run_info, api_visibility="private")
    run_select.change(bind(forget_results), None, slots(results), api_visibility="private", queue=False)
    run_select.change(empty_losses, None, losses, api_visibility="private", queue=False)
    run_select.change(bind(feedback_view, ctx.runs_dir), run_select, slots(teach), api_visibility="private")
    tuned_bot.edit(bind(correct_answer, ctx), [run_select, system, tuned_bot], slots(teach),
                   api_visibility="private")
    tuned_bot.like(bind(rate_answer, ctx), [run_select, system, tuned_bot], slots(teach), api_visibility="private")
    train_v2.click(bind(train_next_version, ctx), run_select, slots(teach), api_name="train_next_version")
    settings = [system, same, *base_values, *tuned_values]
    chat_inputs = [run_select, message, base_bot, tuned_bot, *settings]
    chat_outputs = [base_bot, tuned_bot, message]
    send.click(bind(chat, ctx), chat_inputs, chat_outputs, api_name="chat")
    message.submit(bind(chat, ctx), chat_inputs, chat_outputs, api_visibility="private")
    stop.click(stop_session, None, None, api_name="stop", queue=False)
    clear.click(clear_chat, None, [base_bot, tuned_bot, message], api_name="clear", queue=False)
    for bot in (base_bot, tuned_bot):  # a column's own trash icon clears both: the two answer the same turns
        bot.clear(clear_chat, None, [base_bot, tuned_bot, message], api_visibility="private", queue=False)
    batch_btn.click(bind(batch, ctx), [run_select, source, upload, limit, *settings], slots(results),
                    api_name="batch_compare")
    loss_btn.click(bind(measure_loss, ctx), run_select, losses, api_name="validation_loss")
    # Finished runs appear when the tab is opened (and on page load), not only on refresh.
    newest_seen = gr.State(None)  # the newest finished run this page has offered so far
    follow = bind(follow_newest, ctx)
    if tab is not None:
        tab.select(follow, [run_select, newest_seen], [run_select, newest_seen], api_visibility="private")
    Context.root_block.load(follow, [run_select, newest_seen], [run_select, newest_seen], api_visibility="private")
    ctx.chat = ChatTab(run_select, teach.started)
