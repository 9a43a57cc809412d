"""The Settings tab's "Find good settings" panel: a time-boxed search over settings (studio/tune.py), its trials
watched live, and its winner put into the form.

The search is a job like a run: `python -m studio tune` in its own process, holding the runs-folder lock. This
panel keeps no state of its own: every tick reads runs/sweeps/<id>/sweep.json and the trials' event logs, so a
reload, a second tab or a restarted server shows the same search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import tune
from ..config import RunConfig
from ..errors import UserError
from ..events import EVENTS_FILE, LIVE, read_events, replay
from .common import UIContext, client_config, error_markdown, field_label, keep, user_message
from .estimates import fmt_time

POLL_S = 2.0
BUDGET_MINUTES = (5, 480)  # what the slider offers: 5 minutes to 8 hours
RANK_CHOICES = [4, 8, 16, 32, 64]
ALPHA_CHOICES = [("alpha = rank", 1.0), ("alpha = 2 x rank", 2.0), ("alpha = 4 x rank", 4.0)]
DEFAULT_SPACE = tune.SearchSpace()
DEFAULT_STEPS = (50, 300)  # a length range to offer when the person asks to search it
# The settings a trial's params set, in the order the table shows them, with the form's words for each.
PARAM_FIELDS = ["learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "max_steps"]
STATUS_WORDS = {"running": "training now", "complete": "finished", "pruned": "stopped early by the search",
                "failed": "failed", "stopped": "stopped by you"}
SWEEP_WORDS = {"starting": "🟡 starting", "running": "🟢 searching", "stopping": "🟡 stopping",
               "finished": "✅ finished", "stopped": "⏹️ stopped", "failed": "❌ failed"}
PLOT_DTYPES = {"step": "int64", "validation loss": "float64", "trial": "object"}
TABLE_COLUMNS = ["Trial", "Learning rate", "LoRA rank", "LoRA alpha", "Dropout", "Steps trained",
                 "Best validation loss",
                 "Status", "Time"]
# One colour per trial, sent with every frame: a Gradio plot keeps the colours of the series its first frame named,
# and a trial that starts later would otherwise be drawn without one (invisible until a reload).
PALETTE = ["#4f46e5", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#65a30d",
           "#475569"]
FIRM_IMPORTANCE_TRIALS = 8  # fewer finished trials than this: the importances are said to be a rough guess
IMPORTANCE_WORDS = {"learning_rate": "learning rate", "lora_rank": "LoRA rank", "lora_alpha_ratio": "LoRA alpha",
                    "max_steps": "length (steps)", "lora_dropout": "dropout"}


# --- what the person asks for -------------------------------------------------------------------------------------
@dataclass
class SearchRequest:
    """The panel's inputs: the time to spend and what to search, each range as the person left it."""

    budget_minutes: float = 20
    lr_low: float = DEFAULT_SPACE.learning_rate[0]
    lr_high: float = DEFAULT_SPACE.learning_rate[1]
    ranks: list = tuple(DEFAULT_SPACE.lora_rank)
    alpha_ratios: list = tuple(DEFAULT_SPACE.lora_alpha_ratio)
    search_steps: bool = False
    steps_low: int = DEFAULT_STEPS[0]
    steps_high: int = DEFAULT_STEPS[1]
    search_dropout: bool = True
    dropout_low: float = DEFAULT_SPACE.lora_dropout[0]
    dropout_high: float = DEFAULT_SPACE.lora_dropout[1]

    def space(self) -> tune.SearchSpace:
        if not self.ranks:
            raise UserError("Tick at least one LoRA rank to try.")
        if not self.alpha_ratios:
            raise UserError("Tick at least one LoRA alpha to try.")
        steps = None
        if self.search_steps:
            steps = (int(self.steps_low or 0), int(self.steps_high or 0))
        dropout = None
        if self.search_dropout:
            low, high = float(self.dropout_low or 0), float(self.dropout_high or 0)
            if not 0 <= low <= high < 1:
                raise UserError("The dropout range must be two numbers from 0 to below 1, the first not above the "
                                "second (e.g. 0 and 0.1).")
            dropout = (low, high)
        return tune.SearchSpace(learning_rate=(float(self.lr_low or 0), float(self.lr_high or 0)),
                                lora_rank=tuple(sorted(int(r) for r in self.ranks)),
                                lora_alpha_ratio=tuple(sorted(float(a) for a in self.alpha_ratios)),
                                max_steps=steps, lora_dropout=dropout)

    def budget_s(self) -> float:
        minutes = float(self.budget_minutes or 0)
        if not BUDGET_MINUTES[0] <= minutes <= BUDGET_MINUTES[1]:
            raise UserError(f"Give the search between {BUDGET_MINUTES[0]} minutes and 8 hours.")
        return minutes * 60


REQUEST_FIELDS = list(SearchRequest.__dataclass_fields__)  # the order the panel's inputs are sent in


# --- what the panel draws -----------------------------------------------------------------------------------------
@dataclass
class SearchView:
    """What the panel draws for the search shown; a field left at keep() stays as it is on the page."""

    status: Any = keep()
    plot: Any = keep()
    table: Any = keep()
    importances: Any = keep()
    stop: Any = keep()
    use: Any = keep()
    seen: Any = keep()  # what this page last drew (see poll_search)


@dataclass
class StartSearchView:
    notice: Any = keep()
    seen: Any = keep()


def shown_sweep(runs_dir) -> Path | None:
    """The search a page shows: the one running, else the newest."""
    if runs_dir is None:
        return None
    active = tune.active_sweep(runs_dir)
    if active is not None:
        return active
    sweeps = tune.sweep_dirs(runs_dir)
    return sweeps[0] if sweeps else None


def _number(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def trial_table(record: dict) -> pd.DataFrame:
    rows = []
    for t in sorted(record.get("trials", []), key=lambda t: t.get("number", 0)):
        p = t.get("params") or {}
        rows.append({"Trial": t.get("number"), "Learning rate": _number(p.get("learning_rate"), ".1e"),
                     "LoRA rank": p.get("lora_rank", "-"), "LoRA alpha": p.get("lora_alpha", "-"),
                     "Dropout": _number(p.get("lora_dropout"), ".2f"),
                     "Steps trained": t.get("steps", "-") if t.get("steps") is not None else "-",
                     "Best validation loss": _number(t.get("best_val_loss"), ".4f"),
                     "Status": STATUS_WORDS.get(t.get("status"), t.get("status", "-")),
                     "Time": fmt_time(t.get("seconds")) if t.get("seconds") else "-"})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def curves_frame(runs_dir, record: dict) -> pd.DataFrame:
    """Every trial's validation losses, one series per trial (the step-0 point, the untouched model, included: all
    trials start there)."""
    frames = []
    for t in sorted(record.get("trials", []), key=lambda t: t.get("number", 0)):
        if not t.get("run_id"):
            continue
        try:
            history = replay(read_events(Path(runs_dir) / t["run_id"]))
        except (OSError, ValueError):
            continue
        frames.append(pd.DataFrame({"step": history.eval_steps, "validation loss": history.eval_loss,
                                    "trial": f"trial {t['number']}"}))
    if not frames:
        return pd.DataFrame(columns=list(PLOT_DTYPES)).astype(PLOT_DTYPES)
    return pd.concat(frames, ignore_index=True).reindex(columns=list(PLOT_DTYPES)).astype(PLOT_DTYPES)


def importance_text(record: dict) -> str:
    values = record.get("importances") or {}
    if not values:
        done = sum(1 for t in record.get("trials", []) if t.get("status") == "complete")
        if done >= 2:
            return ""
        return ("**Which setting mattered most** appears once two trials have finished.") if record else ""
    parts = [f"{IMPORTANCE_WORDS.get(k, k)} **{v:.0%}**" for k, v in sorted(values.items(), key=lambda kv: -kv[1])]
    top = IMPORTANCE_WORDS.get(max(values, key=values.get), "")
    done = sum(1 for t in record.get("trials", []) if t.get("status") == "complete")
    text = (f"**Which setting mattered most** (share of the differences in validation loss it explains): "
            f"{', '.join(parts)}. Spend your next changes on the {top}.")
    if done < FIRM_IMPORTANCE_TRIALS:
        text += f" A rough guess from only {done} finished trials: it firms up as more trials finish."
    return text


def status_text(sweep_dir: Path, record: dict) -> str:
    state = record.get("status", "unknown")
    trials = record.get("trials", [])
    done = [t for t in trials if t.get("status") in ("complete", "pruned")]
    budget = float(record.get("budget_s") or 0)
    lines = [f"**Search {sweep_dir.name}** - {SWEEP_WORDS.get(state, state)}"]
    if state in LIVE:
        spent = float(record.get("spent_s") or 0)
        running = [t for t in trials if t.get("status") == "running"]
        if record.get("started_at"):
            spent = time.time() - float(record["started_at"])
        lines.append(f"{len(done)} trials done" + (f", trial {running[0]['number']} training now" if running else "")
                     + f" · time budget {fmt_time(budget)}"
                     + (f", about {fmt_time(max(0.0, budget - spent))} left" if spent else ""))
        if state == "starting":
            lines.append("Loading the model and the data for the first trial...")
        if state == "stopping":
            lines.append("Stopping: the trial training now ends and keeps what it learned.")
    elif record.get("message"):
        lines.append(str(record["message"]))
    best = record.get("best_trial")
    if best is not None:
        lines.append(f"{'Best so far' if state in LIVE else 'Best'}: **trial {best}**. Press **Use these settings** "
                     f"to put its settings in the form above, then start training on the **Train** tab.")
    return "\n\n".join(lines)


def draw_search(runs_dir) -> SearchView:
    """Everything the panel shows, rebuilt from the sweep folder and the trials' runs."""
    idle = gr.update(interactive=False)
    sweep_dir = shown_sweep(runs_dir)
    if sweep_dir is None:
        return SearchView("No search yet.", gr.update(value=curves_frame(runs_dir, {}), visible=False),
                          gr.update(value=trial_table({}), visible=False), "", idle, idle)
    try:
        record = tune.sweep_state(sweep_dir)
        frame = curves_frame(runs_dir, record)
    except Exception as err:  # noqa: BLE001
        return SearchView(error_markdown(err), stop=idle, use=idle)
    state = record.get("status")
    colours = {f"trial {t['number']}": PALETTE[t["number"] % len(PALETTE)] for t in record.get("trials", [])}
    return SearchView(status_text(sweep_dir, record), gr.update(value=frame, visible=not frame.empty,
                                                                color_map=colours or None),
                      gr.update(value=trial_table(record), visible=bool(record.get("trials"))),
                      importance_text(record), gr.update(interactive=state in ("starting", "running")),
                      gr.update(interactive=(sweep_dir / tune.BEST_CONFIG_FILE).is_file()))


def search_key(runs_dir) -> tuple:
    """Changes whenever the search shown or one of its trials' files changes; the page redraws only then."""
    sweep_dir = shown_sweep(runs_dir)
    if sweep_dir is None:
        return (None,)
    key: tuple = (sweep_dir.name,)
    record = tune.sweep_state(sweep_dir)
    paths = [sweep_dir / tune.SWEEP_FILE] + [Path(runs_dir) / t["run_id"] / EVENTS_FILE
                                              for t in record.get("trials", []) if t.get("status") == "running"]
    for path in paths:
        try:
            stat = path.stat()
            key += (stat.st_size, stat.st_mtime_ns)
        except OSError:
            key += (None,)
    return key + (record.get("status"),)


# --- handlers -----------------------------------------------------------------------------------------------------
def start_search(ctx: UIContext, names: list[str], *values) -> StartSearchView:
    """Check the form and the search's ranges, then start the search in its own process. `values`: the panel's
    inputs (REQUEST_FIELDS), then the form's (names)."""
    request = SearchRequest(*values[:len(REQUEST_FIELDS)])
    form = list(values[len(REQUEST_FIELDS):])
    busy = shown_sweep(ctx.runs_dir)
    if busy is not None and tune.sweep_state(busy).get("status") in LIVE:
        return StartSearchView(f"The search **{busy.name}** is already running (shown below): press **Stop the "
                               f"search** before starting another.")
    try:
        space, budget_s = request.space(), request.budget_s()
        config = client_config(ctx, names, form)
        from .. import data, jobs, models
        from .sessions import release_gpu_sessions

        models.resolve_method(config)
        models.load_tokenizer(config.model, config.trust_remote_code)
        train_rows, _ = data.load_for_config(config)  # bad data: said now, before a process starts
        config.check_data_size(len(train_rows))
        tune.check_can_search(config)
        live = jobs.active_run(ctx.runs_dir)
        if live is not None:  # the machine is busy: the search waits its turn in the run queue
            from .. import run_queue

            entry = run_queue.add(ctx.runs_dir, config, kind="sweep", sweep=run_queue.sweep_fields(budget_s, space))
            position = run_queue.position(ctx.runs_dir, entry.id)
            return StartSearchView(f"Run **{live.name}** is training, so this search waits in the queue (position "
                                   f"{position}, see **Queue** in the Train tab): it starts by itself when the "
                                   f"runs before it end.")
        jobs.ensure_none_training(ctx.runs_dir)  # before the chat models are freed for nothing
        release_gpu_sessions()
        sweep_dir = tune.start_sweep(config, ctx.runs_dir, budget_s, space)
    except Exception as err:  # noqa: BLE001
        return StartSearchView(f"**Cannot start the search:** {user_message(err)}")
    return StartSearchView(f"Started the search **{sweep_dir.name}**: it trains for up to "
                           f"{fmt_time(budget_s)}. You can leave this page and come back.", None)


def stop_search(ctx: UIContext) -> str:
    sweep_dir = tune.active_sweep(ctx.runs_dir)
    if sweep_dir is None:
        return "No search is running."
    try:
        tune.stop_sweep(sweep_dir)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return f"Stopping the search {sweep_dir.name}: the trial training now ends and keeps what it learned."


def use_best(ctx: UIContext, names: list[str]) -> list:
    """The best trial's settings into the form (only the settings the search chose; the rest stays as the person
    left it), then the sentence saying what changed."""
    sweep_dir = shown_sweep(ctx.runs_dir)
    path = sweep_dir / tune.BEST_CONFIG_FILE if sweep_dir is not None else None
    if path is None or not path.is_file():
        return [gr.skip() for _ in names] + ["No trial has finished yet, so there are no best settings to use."]
    try:
        best = RunConfig.load(path)
    except Exception as err:  # noqa: BLE001
        return [gr.skip() for _ in names] + [error_markdown(err)]
    record = tune.read_sweep(sweep_dir)
    trial = next((t for t in record.get("trials", []) if t.get("number") == record.get("best_trial")), {})
    chosen = [n for n in PARAM_FIELDS if n in (trial.get("params") or {})] or PARAM_FIELDS
    updates = [gr.update(value=getattr(best, n)) if n in chosen else gr.skip() for n in names]
    said = ", ".join(f"{field_label(n)} {_said(n, getattr(best, n))}" for n in chosen if n in names)
    return updates + [f"Filled in from trial {record.get('best_trial')}: {said}. Start training on the **Train** tab."]


def _said(name: str, value) -> str:
    if name == "learning_rate":
        return format(value, ".1e")
    return format(value, "g") if isinstance(value, float) else str(value)


def poll_search(ctx: UIContext, seen) -> SearchView:
    """Redraw only when the search's files changed since this page last drew them (`seen`)."""
    key = search_key(ctx.runs_dir)
    if seen is not None and seen == list(key):
        return SearchView()
    view = draw_search(ctx.runs_dir)
    view.seen = list(key)
    return view


# --- layout -------------------------------------------------------------------------------------------------------
def build_tune_panel(ctx: UIContext, names: list[str]) -> None:
    """The panel, under the Settings tab's form; `names`: the form's fields (every tab's), in ctx.fields."""
    from .common import bind, slots

    form = ctx.form(names)
    with gr.Accordion("Find good settings for me (automatic search)", open=False, elem_id="tune-panel"):
        gr.Markdown(
            "Not sure which settings suit your data? The search trains several short runs, called **trials**, each "
            "with different settings, stops the ones that fall behind early, and keeps the settings whose "
            "**validation loss** (the error on rows held out from training; lower is better) ends lowest. It uses "
            "the model and data you picked and the length set above. Nothing else trains while it runs; you can "
            "leave the page and come back.")
        with gr.Row():
            budget = gr.Slider(*BUDGET_MINUTES, value=20, step=5, label="Time to spend (minutes)",
                               info="The search starts no trial that cannot finish in time. 5 minutes to 8 hours.",
                               elem_id="tune-budget")
        gr.Markdown("**What to try** (the ranges below suit most small models; change them if you know better)")
        with gr.Row():
            lr_low = gr.Number(value=DEFAULT_SPACE.learning_rate[0], label="Learning rate from",
                               info="Learning rate: how big a step the model takes each time it learns.",
                               elem_id="tune-lr-low")
            lr_high = gr.Number(value=DEFAULT_SPACE.learning_rate[1], label="Learning rate up to",
                                info="Tried on a log scale between the two.", elem_id="tune-lr-high")
        with gr.Row():
            ranks = gr.CheckboxGroup(RANK_CHOICES, value=list(DEFAULT_SPACE.lora_rank), label="LoRA ranks to try",
                                     info="LoRA rank: how much the add-on that learns your task can hold. Higher "
                                          "learns more, trains slower.", elem_id="tune-ranks")
            alphas = gr.CheckboxGroup(ALPHA_CHOICES, value=list(DEFAULT_SPACE.lora_alpha_ratio),
                                      label="LoRA alpha to try", info="How strongly the add-on's changes count.",
                                      elem_id="tune-alphas")
        with gr.Row():
            search_steps = gr.Checkbox(value=False, label="Also try different lengths (steps)",
                                       info="Off: every trial trains the length set above.")
            steps_low = gr.Number(value=DEFAULT_STEPS[0], label="Steps from", precision=0, minimum=1)
            steps_high = gr.Number(value=DEFAULT_STEPS[1], label="Steps up to", precision=0, minimum=1)
        with gr.Row():
            search_dropout = gr.Checkbox(value=True, label="Also try dropout",
                                         info="Dropout: switching off a share of the add-on at random while "
                                              "training, against learning rows by heart.")
            dropout_low = gr.Number(value=DEFAULT_SPACE.lora_dropout[0], label="Dropout from", minimum=0, maximum=0.9)
            dropout_high = gr.Number(value=DEFAULT_SPACE.lora_dropout[1], label="Dropout up to", minimum=0,
                                     maximum=0.9)
        with gr.Row():
            start = gr.Button("Start the search", variant="primary", elem_id="tune-start")
            stop = gr.Button("Stop the search", variant="stop", interactive=False, elem_id="tune-stop")
            use = gr.Button("Use these settings", interactive=False, elem_id="tune-use")
        notice = gr.Markdown(elem_id="tune-notice")
        status = gr.Markdown("No search yet.", elem_id="tune-status")
        plot = gr.LinePlot(x="step", y="validation loss", color="trial", height=320, visible=False,
                           title="Validation loss of each trial (lower is better)", elem_id="tune-plot")
        table = gr.Dataframe(value=trial_table({}), interactive=False, visible=False, elem_id="tune-table",
                             label="Trials")
        importances = gr.Markdown(elem_id="tune-importances")

    inputs = [budget, lr_low, lr_high, ranks, alphas, search_steps, steps_low, steps_high, search_dropout,
              dropout_low, dropout_high]
    assert len(inputs) == len(REQUEST_FIELDS)
    seen = gr.State(None)
    view = SearchView(status, plot, table, importances, stop, use, seen)
    start.click(bind(start_search, ctx, names), [*inputs, *form], slots(StartSearchView(notice, seen)),
                api_visibility="private")
    stop.click(bind(stop_search, ctx), None, notice, api_visibility="private")
    use.click(bind(use_best, ctx, names), None, [*form, notice], api_visibility="private")
    gr.Timer(POLL_S).tick(bind(poll_search, ctx), seen, slots(view), show_progress="hidden",
                          api_visibility="private")
