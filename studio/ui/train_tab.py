"""Tab 4: start, watch, stop and resume runs; the history of every run on disk.

Nothing here holds training state: every refresh replays runs/<id>/events.jsonl, so a reload,
a second browser tab or a restarted server shows the same run, still live.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import jobs, methods, run_queue
from ..errors import UserError
from ..events import EVENTS_FILE, LIVE, STATUS_FILE, read_events, replay, smooth
from .common import UIContext, bind, client_config, error_markdown, keep, slots, user_message
from .estimates import estimate_text, fmt_time, measured_line, measured_pace
from .sessions import release_gpu_sessions

log = logging.getLogger("studio.ui")

POLL_S = 1.0
QUEUE_POLL_S = 2.0  # the queue panel, and the start of a queued run a killed worker could not hand on
TABLE_EVERY_S = 10.0
STALL_AFTER_S = 120.0  # a live run without any progress this long is said to be stalled
RESUMABLE = ("stopped", "failed")  # with a checkpoint, Resume continues these from it
START_FAILED = "**Cannot start:**"


def run_choices(runs_dir) -> list[str]:
    # Ids only: the live status is in the panel below, so a stale label can never contradict it.
    return [s.run_id for s in jobs.list_runs(runs_dir)]


def default_run(runs_dir) -> str | None:
    """The run a fresh page should show: the one training now, else the newest."""
    active = jobs.active_run(runs_dir)
    if active is not None:
        return active.name
    runs = jobs.list_runs(runs_dir)
    return runs[0].run_id if runs else None


# A Gradio plot fixes its axis types (number or category) and its colour per series from the first frame it draws;
# later frames only replace the points. So every frame, empty ones too, has numeric dtypes (an untyped empty frame
# made step and loss categorical for good) and names all three series (else lines added later had no colour and
# stayed invisible until the page was reloaded). The placeholder rows have no loss, so nothing is drawn for them.
LOSS_DTYPES = {"step": "int64", "loss": "float64", "series": "object"}
LR_DTYPES = {"step": "int64", "learning rate": "float64"}
LOSS_SERIES = ("train", "train (smoothed)", "validation")


def typed(frame: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    return frame.reindex(columns=list(dtypes)).astype(dtypes)


def loss_frame(history) -> pd.DataFrame:
    rows = [{"step": 0, "loss": float("nan"), "series": name} for name in LOSS_SERIES]
    rows += [{"step": s, "loss": v, "series": "train"} for s, v in zip(history.train_steps, history.train_loss)]
    rows += [{"step": s, "loss": v, "series": "train (smoothed)"}
             for s, v in zip(history.train_steps, smooth(history.train_loss, 0.8))]
    rows += [{"step": s, "loss": v, "series": "validation"} for s, v in zip(history.eval_steps, history.eval_loss)]
    return typed(pd.DataFrame(rows, columns=["step", "loss", "series"]), LOSS_DTYPES)


REWARD_DTYPES = {"step": "int64", "value": "float64", "series": "object"}
REWARD_SERIES = ("margin (train)", "margin (validation)", "chosen preferred (share of pairs)")


def reward_frame(history) -> pd.DataFrame:
    """A preference run's curves (DPO, ORPO): how much more likely the model finds the chosen answer than the
    rejected one (the reward margin; 0 = no preference yet), and the share of pairs where the chosen is the more
    likely (0 to 1). Placeholder rows name every series, as in loss_frame."""
    rows = [{"step": 0, "value": float("nan"), "series": name} for name in REWARD_SERIES]
    rows += [{"step": s, "value": v, "series": REWARD_SERIES[0]}
             for s, v in zip(history.reward_steps, history.reward_margin)]
    rows += [{"step": s, "value": v, "series": REWARD_SERIES[1]}
             for s, v in zip(history.eval_reward_steps, history.eval_reward_margin)]
    rows += [{"step": s, "value": v, "series": REWARD_SERIES[2]}
             for s, v in zip(history.reward_steps, history.reward_accuracy)]
    return typed(pd.DataFrame(rows, columns=["step", "value", "series"]), REWARD_DTYPES)


def reward_curve(history, total_steps: int | None = None) -> dict:
    """The preference plot's update: shown only for runs that log a reward margin."""
    if history is None or not (history.reward_steps or history.eval_reward_steps):
        return gr.update(value=reward_frame(replay([])), visible=False)
    span = [0, max(int(total_steps or 0), history.reward_steps[-1] if history.reward_steps else 0, 1)]
    return gr.update(value=reward_frame(history), x_lim=span, visible=True)


def lr_frame(history) -> pd.DataFrame:
    return typed(pd.DataFrame({"step": history.train_steps, "learning rate": history.learning_rate}), LR_DTYPES)


def stall_notice(state: str, stalled_s: float | None) -> tuple[str, str]:
    """(words for the status line, a sentence with what to do), both empty while the run makes progress.
    `stalled_s`: jobs.stalled_for, the seconds since the run last made progress (a worker stopped with SIGSTOP, or
    hung, stays "running" in its files: only the time tells)."""
    if stalled_s is None or stalled_s < STALL_AFTER_S or state not in LIVE:
        return "", ""
    minutes = int(stalled_s // 60)
    what = ("no training step has finished since. A long validation pass can take this long; if it stays like "
            "this, the training process is paused or stuck: press **Stop**, then **Resume** continues from the "
            "last checkpoint.")
    return f" · **no progress for {minutes} min**", f"**No progress for {minutes} min:** {what}"


def status_markdown(run_dir, status: dict, history, stalled_s: float | None = None) -> str:
    state = status.get("status", "unknown")
    # status.json is written at most twice a second; the event log may be a step ahead.
    step = max(int(status.get("step") or 0), history.train_steps[-1] if history.train_steps else 0)
    total = status.get("total_steps") or history.start.get("total_steps") or 0
    pct = 100.0 * step / total if total else 0.0
    badge = {"running": "🟢 running", "starting": "🟡 starting", "stopping": "🟡 stopping", "finished": "✅ finished",
             "stopped": "⏹️ stopped", "failed": "❌ failed", "pruned": "✂️ stopped early by the settings search",
             }.get(state, state)
    last = history.last_log
    pace = measured_pace(status, history)
    left = (pace.left_s if pace else None) if state in LIVE else 0
    stall_words, stall_help = stall_notice(state, stalled_s)
    lines = [f"**Run {run_dir.name}** - {badge}{stall_words}"]
    if history.start.get("parent_run"):
        n = int(history.start.get("corrections") or 0)
        lines.append(f"Next version of run {history.start['parent_run']}: continues its fine-tuning on its data plus "
                     f"{n} correction{'s' if n != 1 else ''} made in Chat.")
    if step > 0 or state in ("finished", "stopped"):  # no row of zeros before the first step
        lines += [f"<div class='progress'><div style='width:{pct:.1f}%'></div></div>",
                  f"Step **{step} / {total}** ({pct:.0f}%)"
                  f" · epoch {float(status.get('epoch') or last.get('epoch') or 0):.2f} (passes over the data)"
                  f" · elapsed {fmt_time(status.get('elapsed_s') or last.get('elapsed_s'))}"
                  f" · ETA {fmt_time(left)}",
                  f"Speed **{float(status.get('tokens_per_s') or last.get('tokens_per_s') or 0):,.0f} tokens/s** · "
                  f"memory {float(status.get('memory_gb') or last.get('memory_gb') or 0):.2f} GB · method "
                  f"{methods.LABELS.get(history.start.get('method'), history.start.get('method', '-'))}"
                  + cpu_precision_words(history.start) + processes_words(history.start)]
    if history.train_loss:
        lines.append(f"Train loss **{history.train_loss[-1]:.4f}**" + (
            f" · best validation loss **{history.best_eval_loss:.4f}**" if history.best_eval_loss is not None else ""))
    elif history.eval_loss:
        lines.append(f"Validation loss before training **{history.eval_loss[0]:.4f}**")
    if learning_rows_by_heart(history):
        lines.append("⚠️ Validation loss is rising while training loss falls: **the model is starting to learn your "
                     "rows by heart** instead of the task. Early stopping keeps the best step's adapter.")
    if stall_help:
        lines.append("\n" + stall_help)
    elif state == "running" and step == 0:
        lines.append("\nRunning the first training steps...")
    if state == "starting":
        lines.append(f"\n{status.get('message') or 'Loading the model and the data'}...")
    if state == "failed":
        message = history.error.get("message") or status.get("message") or "the run failed"
        lines.append(f"\n**The run failed:** {message}")
    elif state == "finished":
        lines.append("\nDone: the adapter is saved. Open the **Chat** tab to compare it with the base model.")
        if history.validation_before_after:
            before, after = history.validation_before_after
            change = (before - after) / before if before else 0.0
            lines.append(f"Validation loss went from **{before:.3f}** before training to **{after:.3f}** "
                         f"({abs(change):.0%} {'lower' if change >= 0 else 'higher'}): "
                         + ("the model fits your held-out examples better." if change > 0.005 else
                            "no real gain; try more steps or the Balanced preset."))
    elif state == "stopped":
        lines.append("\nStopped: the adapter and a checkpoint are saved. **Resume** continues from the checkpoint.")
    if history.end.get("stopped_early") and history.end.get("message"):
        lines.append(f"\n{history.end['message']}")
    lines += report_lines(run_dir)
    return "\n\n".join(lines)


def processes_words(start: dict) -> str:
    """With several processes (GPUs, machines): how many, and the global batch they make together."""
    processes = start.get("processes")
    if not isinstance(processes, int) or processes < 2:
        return ""
    return (f" · **{processes} processes** (one per GPU) train together: each step learns from "
            f"{start.get('global_batch', '?')} examples (batch size x gradient accumulation x processes)")


def cpu_precision_words(start: dict) -> str:
    """The CPU's number format, after the method (whose own label names its precision on a GPU): a bf16 run says
    the model it starts from is held in bf16 and why; nothing on a GPU."""
    name, reason = start.get("cpu_precision"), start.get("cpu_precision_reason") or ""
    if not name:
        return ""
    held = ("held in **bf16** on this CPU, your adapter in fp32" if name == "bf16" else
            "computed in **fp32** on this CPU")
    return f" · the model you start from {held} ({reason})"


def learning_rows_by_heart(history) -> bool:
    """The last two validations rose while the training loss fell over the same steps: overfitting is starting."""
    if len(history.eval_loss) < 3 or len(history.train_loss) < 4:
        return False
    last, before = history.eval_loss[-1], history.eval_loss[-2]
    since = history.eval_steps[-2]
    train_then = [loss for step, loss in zip(history.train_steps, history.train_loss) if step <= since][-3:]
    train_now = history.train_loss[-3:]
    if not train_then:
        return False
    return last > before * 1.01 and sum(train_now) / len(train_now) < sum(train_then) / len(train_then)


def report_lines(run_dir) -> list[str]:
    """The report card's verdict, once the worker has written it, and where the whole report is."""
    from ..evaluate import REPORT_HTML, read_report

    report = read_report(run_dir)
    if not report:
        return []
    verdict = report.get("verdict")
    text = verdict.get("text") if isinstance(verdict, dict) else verdict
    lines = [f"### Report card\n{text}"] if text else []
    lines.append(f"The whole report (answers side by side, general knowledge, parroting) is "
                 f"`{Path(run_dir).name}/{REPORT_HTML}` in the runs folder: open it in a browser or send it to a "
                 f"colleague.")
    return lines


# The report card's figures right after the status: the table is wider than the page, and what a person compares runs
# on must be in view without scrolling sideways.
HISTORY_COLUMNS = ["Run", "Status", "Task score", "vs base %", "General knowledge", "Parroting", "Try next",
                   "Best val loss", "Version", "Steps", "Model", "Data", "Method", "Duration", "Started"]
HISTORY_NUMBERS = ("Best val loss", "Task score", "vs base %")  # sorted as numbers in the page; blank when missing


def report_columns(run_dir) -> dict:
    """The report card's headline as run-history columns: numbers stay numbers so the columns sort; a run without
    a report shows blanks."""
    from ..evaluate import NEXT_STEP_WORDS, read_report

    head = (read_report(run_dir) or {}).get("headline")
    if not isinstance(head, dict):
        return {"Task score": None, "vs base %": None, "General knowledge": "", "Parroting": "", "Try next": ""}
    base, tuned = head.get("chrf_base"), head.get("chrf_tuned")
    gain = round((tuned - base) / base * 100) if isinstance(base, (int, float)) and base > 0 and \
        isinstance(tuned, (int, float)) else None
    return {"Task score": None if tuned is None else round(float(tuned), 1), "vs base %": gain,
            "General knowledge": "" if head.get("forgetting") is None else
            ("slipped" if head["forgetting"] else "kept"),
            "Parroting": "" if head.get("parroting") is None else ("yes" if head["parroting"] else "no"),
            "Try next": "ready to share" if head.get("ready") else NEXT_STEP_WORDS.get(head.get("next"), "")}


def method_words(summary: jobs.RunSummary) -> str:
    """The method's short name (its long label, a sentence, made the column the widest of the table), and the
    training goal when it is preference training."""
    method = methods.METHODS[summary.method].short if summary.method in methods.METHODS else summary.method
    goal = methods.OBJECTIVES.get(summary.objective)
    return f"{method}, {goal.short}" if goal is not None and goal.needs_preferences else method


def history_table(runs_dir) -> pd.DataFrame:
    """One row per run on disk, newest first; no rows without a runs folder (the page as built, before a login).
    Task score is the tuned model's closeness to your held-out answers (chrF, 0 to 100) from its report card."""
    rows = [{"Run": s.run_id, "Status": s.status, "Model": s.model, "Version": s.version,
             "Data": s.data + (f" + {s.corrections} correction{'s' if s.corrections != 1 else ''}"
                               if s.corrections else ""),
             "Method": method_words(s),
             "Steps": f"{s.step}/{s.total_steps}",
             "Best val loss": None if s.best_eval_loss is None else round(s.best_eval_loss, 4),
             **report_columns(s.path), "Duration": fmt_time(s.duration_s),
             "Started": time.strftime("%Y-%m-%d %H:%M", time.localtime(s.started)) if s.started else "-"}
            for s in (jobs.list_runs(runs_dir) if runs_dir is not None else [])]
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    for column in HISTORY_NUMBERS:  # pandas would turn a missing number into NaN, which the page prints as "NaN"
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def compare_runs(runs_dir, run_ids: list[str]):
    """(loss curves of the runs, the settings that differ between them)."""
    if not run_ids:
        return typed(pd.DataFrame(), LOSS_DTYPES), pd.DataFrame()
    frames, dirs = [], []
    for run_id in run_ids:
        run_dir = jobs.run_path(runs_dir, run_id)
        dirs.append(run_dir)
        h = replay(read_events(run_dir))
        frames.append(pd.DataFrame({"step": h.train_steps, "loss": smooth(h.train_loss, 0.8),
                                    "series": f"{run_id} train"}))
        frames.append(pd.DataFrame({"step": h.eval_steps, "loss": h.eval_loss, "series": f"{run_id} validation"}))
    diffs = jobs.config_differences(dirs)
    table = pd.DataFrame([{"Setting": k, **{rid: str(v) for rid, v in zip(run_ids, values)}}
                          for k, values in diffs.items()])
    return typed(pd.concat(frames, ignore_index=True), LOSS_DTYPES), table


def files_key(runs_dir, run_id: str | None) -> tuple:
    """Changes whenever the run's events or status change (size and modification time of both files), and each
    minute a live run makes no progress (so the status line counts the minutes); the last element is the run's
    status word (None without a run)."""
    if not run_id:
        return (None,)
    try:
        run_dir = jobs.run_path(runs_dir, run_id)
    except Exception:  # noqa: BLE001 - a bad id is drawn (as an error) by refresh
        return (run_id, None)
    key: tuple = (run_id,)
    for name in (EVENTS_FILE, STATUS_FILE):
        try:
            stat = (run_dir / name).stat()
            key += (stat.st_size, stat.st_mtime_ns)
        except OSError:
            key += (None,)
    # A worker killed without a word changes no file: its death shows in run_state, so the status word is part of
    # the key, and its last element.
    try:
        status = jobs.run_state(run_dir)
    except Exception:  # noqa: BLE001 - a run deleted meanwhile: refresh says so
        return key + (None, None)
    stalled = jobs.stalled_for(run_dir, status) or 0.0
    return key + (int(stalled // 60) if stalled >= STALL_AFTER_S else 0, status.get("status"))


@dataclass
class RunView:
    """What the Train tab draws for the run shown; a field left at KEEP stays as it is on the page."""

    status: Any = keep()
    loss_plot: Any = keep()
    lr_plot: Any = keep()
    log: Any = keep()  # the worker log's last lines, shown only after a crash
    stop: Any = keep()  # the Stop and Resume buttons: interactive only when the run can be stopped / resumed
    resume: Any = keep()
    estimate: Any = keep()  # the estimate beside Start: the speed measured so far, once the run has steps
    table: Any = keep()  # the run history
    seen: Any = keep()  # what this page last drew (see poll)
    reward_plot: Any = keep()  # preference runs only: the reward margin and accuracy (reward_curve)


@dataclass
class StartView:
    notice: Any = keep()
    run_select: Any = keep()


@dataclass
class DeleteView:
    notice: Any = keep()
    run_select: Any = keep()
    table: Any = keep()
    confirm: Any = keep()


@dataclass
class PageView:
    """A new page (or a reload): the run list, the history and the runs to compare."""

    run_select: Any = keep()
    table: Any = keep()
    compare_select: Any = keep()


@dataclass
class TrainTab:
    """What the Train tab lends to the app's wiring."""

    page: PageView  # of components: filled on page load


def curves(history, total_steps: int | None = None) -> tuple[dict, dict]:
    """(loss plot, learning-rate plot) updates. The step axis spans the whole run, so the curves fill it as the run
    goes; without a run both are hidden (an empty plot's axis is one point labelled 0.000000)."""
    if total_steps is None:
        return (gr.update(value=loss_frame(replay([])), visible=False),
                gr.update(value=typed(pd.DataFrame(), LR_DTYPES), visible=False))
    span = [0, max(int(total_steps), history.train_steps[-1] if history.train_steps else 0, 1)]
    return (gr.update(value=loss_frame(history), x_lim=span, visible=True),
            gr.update(value=lr_frame(history), x_lim=span, visible=True))


def draw_run(runs_dir, run_id: str | None) -> RunView:
    """Everything the live view shows, rebuilt from the run's files."""
    idle = gr.update(interactive=False)
    if not run_id:
        return RunView("No run yet. Pick a model, data and settings, then press **Start training**.",
                       *curves(None), gr.update(value="", visible=False), idle, idle, reward_plot=reward_curve(None))
    try:
        run_dir = jobs.run_path(runs_dir, run_id)
        status = jobs.run_state(run_dir)
        history = replay(read_events(run_dir))
    except Exception as err:  # noqa: BLE001
        return RunView(error_markdown(err), *curves(None), gr.update(visible=False), idle, idle,
                       reward_plot=reward_curve(None))
    state = status.get("status")
    # The worker log helps with a crash; a failure already told in one sentence (a bad model id, bad data) is
    # not a crash, and its traceback would only bury the sentence.
    failed = state == "failed" and history.error.get("kind") != "user"
    log = history.error.get("log_tail") or jobs.log_tail(run_dir) if failed else ""
    pace = measured_pace(status, history)
    total = status.get("total_steps") or history.start.get("total_steps") or 0
    return RunView(status_markdown(run_dir, status, history, jobs.stalled_for(run_dir, status)),
                   *curves(history, total), gr.update(value=log, visible=failed),
                   stop=gr.update(interactive=state in LIVE),
                   resume=gr.update(interactive=state in RESUMABLE and bool(history.checkpoints)),
                   estimate=measured_line(run_dir.name, pace) if pace and state in LIVE else gr.skip(),
                   reward_plot=reward_curve(history, total))


def start_training(ctx: UIContext, names: list[str], *values) -> StartView:
    """Check everything a run needs, then start it in its own process; while another trains, queue it instead."""
    live = jobs.active_run(ctx.runs_dir)
    try:
        config = client_config(ctx, names, list(values))  # data and model folder inside the app's folders
        if live is not None and _same_settings(live, config):
            # A second press while training: the first one worked, say so rather than queue the same run twice.
            return StartView(f"Run **{live.name}** is training with these settings (shown below).",
                             gr.update(value=live.name))
        from .. import data, models

        models.resolve_method(config)  # QLoRA without CUDA: one clear sentence now, not later
        models.load_tokenizer(config.model, config.trust_remote_code)  # unknown id, offline: said now
        train_rows, _ = data.load_for_config(config)  # bad data: said now, before a process starts
        config.check_data_size(len(train_rows))
        if live is not None:
            entry = run_queue.add(ctx.runs_dir, config)
            position = run_queue.position(ctx.runs_dir, entry.id)
            return StartView(f"Run **{live.name}** is training, so this run waits in the queue (position "
                             f"{position}): it starts by itself when the runs before it end. See **Queue** below.")
        jobs.ensure_none_training(ctx.runs_dir)  # before the chat models are freed for nothing
        release_gpu_sessions()
        run_dir = jobs.start_run(config, ctx.runs_dir)
    except Exception as err:  # noqa: BLE001
        return StartView(f"{START_FAILED} {user_message(err)}")
    return StartView(f"Started run **{run_dir.name}**.",
                     gr.update(choices=run_choices(ctx.runs_dir), value=run_dir.name))


def _same_settings(run_dir: Path, config) -> bool:
    from ..config import RunConfig
    from ..events import CONFIG_FILE

    try:
        return not RunConfig.load(run_dir / CONFIG_FILE).diff(config)
    except Exception:  # noqa: BLE001 - an unreadable config is not the same settings
        return False


# --- the queue --------------------------------------------------------------------------------
QUEUE_COLUMNS = ["position", "id", "kind", "name", "model", "data", "added"]  # run_queue.describe's keys
QUEUE_HEADERS = ["#", "Id", "What", "Name", "Model", "Data", "Added"]


@dataclass
class QueueView:
    """The queue panel, and the Start button whose words follow whether something trains."""

    note: Any = keep()
    table: Any = keep()
    pick: Any = keep()
    start: Any = keep()
    seen: Any = keep()  # what this page last drew (see poll_queue)
    follow: Any = keep()  # the run shown: moves on to a queued run that starts after the one shown


def queue_key(runs_dir: Path) -> tuple:
    """Changes whenever the queue panel would: the queue file, and what trains."""
    try:
        stamp = run_queue.queue_file(runs_dir).stat().st_mtime_ns
    except OSError:
        stamp = None
    live = jobs.active_run(runs_dir)
    return stamp, live.name if live is not None else None


def draw_queue(runs_dir: Path) -> QueueView:
    rows = run_queue.describe(runs_dir)
    queue = run_queue.read(runs_dir)
    live = jobs.active_run(runs_dir)
    if not rows:
        note = ("**Queue:** empty. While a run trains, **Add to queue** keeps your next settings here; queued runs "
                "start one after another, even with this page closed.")
    elif queue.paused:
        note = (f"**Queue:** {len(rows)} waiting, **paused** because a run was stopped: press **Start next now** to "
                f"go on, or remove what you no longer want.")
    else:
        note = (f"**Queue:** {len(rows)} waiting; " + (f"the first starts when run **{live.name}** ends." if live
                                                        else "the first starts now."))
    if queue.problem:
        note += f"\n\n⚠️ {queue.problem}"
    choices = [(f"{r['position']}. {r['name']} ({r['id']})", r["id"]) for r in rows]
    start = gr.update(value="Add to queue (a run is training)" if live else "Start training")
    table = pd.DataFrame(rows, columns=QUEUE_COLUMNS).set_axis(QUEUE_HEADERS, axis=1)
    return QueueView(note, table,
                     gr.update(choices=choices, value=choices[0][1] if choices else None), start)


def poll_queue(ctx: UIContext, shown, seen) -> QueueView:
    """Each tick: start the next entry if nothing trains (a worker killed before it could hand on, a server
    restarted), then redraw the panel when the queue or what trains changed since this page last drew it. A run
    that starts after the one shown (the queue going on) becomes the run shown."""
    try:
        run_queue.waiting(ctx.runs_dir)
    except Exception:  # noqa: BLE001 - the panel still shows the queue; the reason is in the log
        log.warning("the next queued entry did not start", exc_info=True)
    key = list(queue_key(ctx.runs_dir))
    if seen == key:
        return QueueView()
    view = draw_queue(ctx.runs_dir)
    view.seen = key
    before, now = (seen or [None, None])[1], key[1]
    if seen is not None and now and now != before and shown != now and (shown == before or before is None):
        view.follow = gr.update(choices=run_choices(ctx.runs_dir), value=now)
    return view


def queue_action(ctx: UIContext, action: str, entry_id) -> QueueView:
    """Move up, Remove, Start next now: the panel redrawn, a refusal said in its note."""
    try:
        if action == "start":
            started = run_queue.start_next(ctx.runs_dir)
            if started is None:
                raise UserError("Nothing started: the queue is empty, or a run is training (the queue goes on when "
                                "it ends).")
        elif not entry_id:
            raise UserError("Pick a queued run first.")
        elif action == "up":
            run_queue.move(ctx.runs_dir, entry_id, max(1, (run_queue.position(ctx.runs_dir, entry_id) or 1) - 1))
        else:
            run_queue.remove(ctx.runs_dir, entry_id)
    except Exception as err:  # noqa: BLE001 - said in one sentence
        view = draw_queue(ctx.runs_dir)
        view.note = error_markdown(err)
        return view
    view = draw_queue(ctx.runs_dir)
    view.seen = list(queue_key(ctx.runs_dir))
    return view


def forget_start_failure(notice: str):
    """A setting changed: a "Cannot start" about the old settings no longer holds. Other notices stay."""
    return "" if (notice or "").startswith(START_FAILED) else gr.skip()


def stop_training(ctx: UIContext, run_id) -> str:
    if not run_id:
        return "No run selected."
    try:
        run_dir = jobs.run_path(ctx.runs_dir, run_id)
        if jobs.run_state(run_dir).get("status") not in LIVE:
            return f"Run {run_id} is not training."
        jobs.stop_run(run_dir)
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)
    return f"Stopping {run_id}: the adapter and a checkpoint are being saved."


def resume_training(ctx: UIContext, run_id) -> str:
    try:
        if not run_id:
            raise UserError("Pick a run to resume.")
        run_dir = jobs.resume_run(ctx.runs_dir, run_id)
    except Exception as err:  # noqa: BLE001
        return f"**Cannot resume:** {user_message(err)}"
    return f"Resuming {run_dir.name} from its last checkpoint."


def delete_run(ctx: UIContext, run_id, sure: bool) -> DeleteView:
    if not sure:
        return DeleteView("Tick the box to confirm the deletion.", confirm=False)
    try:
        jobs.delete_run(ctx.runs_dir, run_id)
    except Exception as err:  # noqa: BLE001
        return DeleteView(f"**Cannot delete:** {user_message(err)}", confirm=False)
    return DeleteView(f"Deleted {run_id}.", gr.update(choices=run_choices(ctx.runs_dir),
                                                      value=default_run(ctx.runs_dir)),
                      history_table(ctx.runs_dir), False)


def poll(ctx: UIContext, run_id, seen) -> RunView:
    """Redraw only when the run's files changed since this page last drew them (`seen`), so an idle or finished run
    costs nothing per tick. The history table follows when the run's status changes, and every TABLE_EVERY_S while
    it trains (redrawn each second, it would fight the user scrolling it)."""
    key = files_key(ctx.runs_dir, run_id)
    if seen and seen.get("key") == key:
        return RunView()
    view = draw_run(ctx.runs_dir, run_id)
    state = key[-1]
    now = time.time()
    table_due = seen and (seen.get("state") != state or now - seen.get("table_at", 0) >= TABLE_EVERY_S)
    view.table = history_table(ctx.runs_dir) if table_due else gr.skip()
    view.seen = {"key": key, "state": state, "table_at": now if table_due or not seen else seen.get("table_at", now)}
    return view


def show_run(ctx: UIContext, run_id) -> RunView:
    """Another run shown: drawn at once, whatever this page drew before."""
    return poll(ctx, run_id, None)


def open_page(ctx: UIContext) -> PageView:
    """A new page (or a reload) shows the live run, else the newest one."""
    choices = run_choices(ctx.runs_dir)
    return PageView(gr.update(choices=choices, value=default_run(ctx.runs_dir)), history_table(ctx.runs_dir),
                    gr.update(choices=choices))


def build_train_tab(ctx: UIContext, tab: gr.Tab | None = None) -> None:
    """The Train tab; `tab` (its gr.Tab) lets opening it check the settings and redraw the estimate beside Start."""
    names = list(ctx.fields)
    form = ctx.form(names)
    gr.Markdown("### Train\nPress **Start training**. The run goes on in its own process: you can reload this page "
                "or close it, and come back to the same run. The *loss* measures how wrong the model's guesses of "
                "the next word are (lower is better); the *validation* loss is measured on rows it never trains on, "
                "so it shows whether it learns your task or only memorises your rows.")
    with gr.Row():
        start_btn = gr.Button("Start training", variant="primary", elem_id="start")
        stop_btn = gr.Button("Stop (saves the adapter)", variant="stop", elem_id="stop", interactive=False)
        resume_btn = gr.Button("Resume", elem_id="resume", interactive=False)
    with gr.Row():
        estimate = gr.Markdown("Press **Check & estimate** to validate the settings and see the memory and time "
                               "this run needs.", elem_id="estimate")
        estimate_btn = gr.Button("Check & estimate", size="sm", scale=0)
    notice = gr.Markdown(elem_id="train-notice")
    # No run id in the page as built: with a login, the page and its API description are served before the login
    # (GET /), and must say nothing about runs. The page's load event (after the login) fills the list and the table.
    run_select = gr.Dropdown(label="Run shown", choices=[], value=None, elem_id="run-select", interactive=True)
    status = gr.Markdown(elem_id="run-status")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss (train and validation)",
                                height=320, elem_id="loss-plot", visible=False,
                                color_map={"train": "#c7d2fe", "train (smoothed)": "#4f46e5",
                                           "validation": "#f97316"})
        lr_plot = gr.LinePlot(x="step", y="learning rate", title="Learning rate", height=320, elem_id="lr-plot",
                              visible=False)  # until a run is shown: see curves
    reward_plot = gr.LinePlot(x="step", y="value", color="series", height=300, elem_id="reward-plot", visible=False,
                              title="Preference: how much more likely the model finds the chosen answer than the "
                                    "rejected one (margin; 0 = no preference yet), and the share of pairs where it "
                                    "prefers the chosen one (0 to 1)",
                              color_map={REWARD_SERIES[0]: "#4f46e5", REWARD_SERIES[1]: "#f97316",
                                         REWARD_SERIES[2]: "#16a34a"})  # DPO and ORPO runs only: see reward_curve
    log_box = gr.Code(label="Last lines of the worker log", visible=False, elem_id="log-tail")

    with gr.Accordion("Queue: runs waiting to start", open=True):
        queue = QueueView(note=gr.Markdown(elem_id="queue-note"),
                          table=gr.Dataframe(value=pd.DataFrame(columns=QUEUE_HEADERS), interactive=False,
                                             elem_id="queue-table", max_height=240),
                          pick=gr.Dropdown(label="Queued run", choices=[], value=None, elem_id="queue-pick"),
                          start=start_btn, seen=gr.State(None), follow=run_select)
        with gr.Row():
            up_btn = gr.Button("Move up", size="sm", elem_id="queue-up")
            remove_btn = gr.Button("Remove from queue", size="sm", elem_id="queue-remove")
            next_btn = gr.Button("Start next now", size="sm", elem_id="queue-start")

    with gr.Accordion("Run history and comparison", open=False):
        gr.Markdown("From each run's report card: **Task score** is how close the fine-tuned model's answers came "
                    "to yours on rows kept aside from training (chrF, 0 to 100, higher is better) and **vs base %** "
                    "its change from the model you started from; **General knowledge** kept or slipped on general "
                    "questions; **Parroting** whether it repeats training answers word for word; **Try next** the "
                    "report's advice. Click a column's name to sort by it.")
        table = gr.Dataframe(value=history_table(None), interactive=False, elem_id="history",
                             datatype=["number" if c in HISTORY_NUMBERS else "str" for c in HISTORY_COLUMNS])
        with gr.Row():
            compare_select = gr.Dropdown(label="Runs to compare", multiselect=True, choices=[])
            compare_btn = gr.Button("Compare")
        compare_plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss of the selected runs", height=300)
        compare_table = gr.Dataframe(value=pd.DataFrame(columns=["Setting"]), label="Settings that differ",
                                     interactive=False)
        with gr.Row():
            delete_confirm = gr.Checkbox(label="Yes, delete the run shown above and its files", value=False)
            delete_btn = gr.Button("Delete run", variant="stop")

    view = RunView(status, loss_plot, lr_plot, log_box, stop_btn, resume_btn, estimate, table, gr.State(None),
                   reward_plot)
    start_btn.click(bind(start_training, ctx, names), form, slots(StartView(notice, run_select)),
                    api_visibility="private")
    for component in form:
        component.change(forget_start_failure, notice, notice, api_visibility="private", show_progress="hidden",
                         queue=False)
    estimate_btn.click(bind(estimate_text, ctx, names), form, estimate, api_visibility="private")
    if tab is not None:
        tab.select(bind(estimate_text, ctx, names), form, estimate, api_visibility="private")
    stop_btn.click(bind(stop_training, ctx), run_select, notice, api_visibility="private")
    resume_btn.click(bind(resume_training, ctx), run_select, notice, api_visibility="private")
    delete_btn.click(bind(delete_run, ctx), [run_select, delete_confirm],
                     slots(DeleteView(notice, run_select, table, delete_confirm)), api_visibility="private")
    compare_btn.click(bind(compare_runs, ctx.runs_dir), compare_select, [compare_plot, compare_table],
                      api_visibility="private")
    run_select.change(bind(show_run, ctx), run_select, slots(view), show_progress="hidden", api_visibility="private")
    gr.Timer(POLL_S).tick(bind(poll, ctx), [run_select, view.seen], slots(view), show_progress="hidden",
                          api_visibility="private")
    queue_outputs = slots(queue)
    for button, action in ((up_btn, "up"), (remove_btn, "remove"), (next_btn, "start")):
        button.click(bind(queue_action, ctx, action), queue.pick, queue_outputs, api_visibility="private")
    gr.Timer(QUEUE_POLL_S).tick(bind(poll_queue, ctx), [run_select, queue.seen], queue_outputs,
                                show_progress="hidden", api_visibility="private")
    ctx.train = TrainTab(PageView(run_select, table, compare_select))
