"""Tab 2: upload or pick a dataset, see its format, problems, token lengths, and rows as the model sees them.

A thin shell over studio.data: every action here has a twin in `python -m studio data`.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import data, paths
from ..config import RunConfig
from ..data.checks import leak_problems
from ..data.readers import DOCUMENTS
from ..errors import UserError
from ..models import load_tokenizer
from .common import (
    UIContext,
    app_roots,
    bind,
    client_path,
    config_component,
    error_markdown,
    keep,
    slots,
    uploaded_path,
    user_message,
)

MAPPING_FIELDS = ("prompt_column", "response_column", "system_column", "text_column")
VALIDATION_FIX = "upload it as the separate validation file on the Data tab"
PREVIEW_EXAMPLES = 3
PROBLEM_ROWS_SHOWN = 500
LEAKS_SHOWN = 5  # validation rows that repeat training rows, named in the split line
DEFAULT_MAX_SEQ_LENGTH = 512
TRAINED_BG = "#bbf7d0"  # green: loss computed here
MASKED_FG = "#6b7280"  # grey: context only

_reports: dict = {}  # (path, mtime, size, mapping) -> DataReport; the last few analyses, so re-renders are instant
_reports_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def cached_tokenizer(name: str):
    return load_tokenizer(name)


def analyse(path: str, mapping: data.ColumnMapping | None) -> data.DataReport:
    """load_data with a small cache keyed by the file's identity and the mapping."""
    p = Path(path)
    try:
        stat = p.stat()
        key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size, dataclasses.astuple(mapping) if mapping else None)
    except OSError:
        key = None
    with _reports_lock:
        if key in _reports:
            return _reports[key]
    report = data.load_data(path, mapping)
    if key is not None:
        with _reports_lock:
            while len(_reports) >= 3:
                _reports.pop(next(iter(_reports)))
            _reports[key] = report
    return report


# --- pure renderers (tested without a browser) -----------------------------------------------
def segments_html(rows: list[tuple[int, list[tuple[str, bool]]]], unit: str = "row",
                  rejected: dict[int, str] | None = None) -> str:
    """Rows rendered with the chat template: trained-on text on green, masked context in grey. Escaped. Each is
    numbered as the user's file shows it (`unit`: "row" of a spreadsheet, "line" or "item"), like the problems.
    `rejected`: a preference pair's rejected answer by row, shown under its chosen one (the green answer)."""
    rejected = rejected or {}
    legend = (f'<div style="margin-bottom:6px;font-size:0.9em"><span style="background:{TRAINED_BG};padding:1px 4px">'
              f'green</span> = the model learns to write this (loss computed) &nbsp; '
              f'<span style="color:{MASKED_FG}">grey</span> = context it reads but is not trained on</div>')
    if not rows:
        return legend + "<p>No usable rows to preview.</p>"
    blocks = []
    for row, segments in rows:
        spans = []
        for text, trained in segments:
            style = f"background:{TRAINED_BG}" if trained else f"color:{MASKED_FG}"
            spans.append(f'<span style="{style}">{html.escape(text)}</span>')
        worse = ""
        if row in rejected:
            worse = (f'<div style="font-size:0.85em;margin:2px 0"><b>Rejected answer</b> (the model learns to prefer '
                     f'the green one over it): <span style="background:#fee2e2;padding:1px 4px">'
                     f'{html.escape(rejected[row])}</span></div>')
        blocks.append(f'<div style="margin:8px 0"><div style="font-weight:600">{unit.capitalize()} {row}</div>'
                      f'<pre style="white-space:pre-wrap;word-break:break-word;margin:2px 0;padding:8px;'
                      f'border:1px solid #e5e7eb;border-radius:6px;font-size:0.85em">{"".join(spans)}</pre>'
                      f'{worse}</div>')
    return legend + "".join(blocks)


def histogram_svg(lengths: list[int], max_seq_length: int, bins: int = 30) -> str:
    """An inline SVG histogram of token lengths with the cut-off drawn as a red line."""
    if not lengths:
        return ""
    width, height, pad = 640, 180, 30
    top = max(max(lengths), max_seq_length) * 1.05
    half_decade = 10 ** math.floor(math.log10(top)) / 2
    top = math.ceil(top / half_decade) * half_decade  # a round number at the end of the axis (300, not 268)
    step = top / bins
    counts = [0] * bins
    for n in lengths:
        counts[min(int(n / step), bins - 1)] += 1
    peak = max(counts)
    bar_w = (width - 2 * pad) / bins
    bars = []
    for i, count in enumerate(counts):
        h = (height - 2 * pad) * count / peak
        x, y = pad + i * bar_w, height - pad - h
        over = (i + 1) * step > max_seq_length
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                    f'fill="{"#f59e0b" if over else "#6366f1"}"><title>{int(i * step)}-{int((i + 1) * step)} tokens: '
                    f'{count} rows</title></rect>')
    cut_x = pad + (width - 2 * pad) * max_seq_length / top
    axis = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#9ca3af"/>'
            f'<text x="{pad}" y="{height - 8}" font-size="11">0</text>'
            f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">{int(top)} tokens</text>')
    # The label sits left of the line when the line is near the right edge, so it is never clipped.
    label_x, anchor = (cut_x - 4, "end") if cut_x > width / 2 else (cut_x + 4, "start")
    cut = (f'<line x1="{cut_x:.1f}" y1="{pad - 10}" x2="{cut_x:.1f}" y2="{height - pad}" stroke="#dc2626" '
           f'stroke-dasharray="4 3" stroke-width="2"/><text x="{label_x:.1f}" y="{pad - 2}" font-size="11" '
           f'fill="#dc2626" text-anchor="{anchor}">cut-off: {max_seq_length} tokens (max sequence length)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'style="max-width:{width}px" role="img" aria-label="Histogram of token lengths">'
            f'{"".join(bars)}{axis}{cut}</svg>')


PROBLEM_COLUMNS = ["Row", "Problem", "Details", "Starts with", "Like row", "Alike"]
PROBLEM_WIDTHS = ["8%", "11%", "45%", "20%", "9%", "7%"]  # of the table, per column above


def problems_frame(report: data.DataReport) -> pd.DataFrame:
    """One line per problem, numbered as the user's file shows its rows (spreadsheet row, line or item): the
    row's first words, and for a reworded copy, a contradiction or a leak the row it resembles and how much."""
    unit = report.row_unit.capitalize()
    rows = [{"Row": f"{unit} {p.row}", "Problem": p.kind.replace("_", " "), "Details": p.message,
             "Starts with": p.quote, "Like row": "" if p.other_row is None else f"{unit} {p.other_row}",
             "Alike": "" if p.similarity is None else f"{p.similarity:.0f}%"}
            for p in report.problems[:PROBLEM_ROWS_SHOWN]]
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)


def status_markdown(report: data.DataReport) -> str:
    good = len(report.good_examples())
    columns = ", ".join(report.columns[:12]) + (", ..." if len(report.columns) > 12 else "")
    lines = [(f"**Detected:** {report.format_label} &nbsp;·&nbsp; **{report.n_rows:,} rows**, {good:,} usable "
             f"&nbsp;·&nbsp; columns: {columns}")]
    if report.message:
        lines.append(f"**Action needed:** {report.message}")
    n_bad, n_dup = len(report.bad_rows(include_duplicates=False)), sum(p.kind == "duplicate" for p in report.problems)
    if n_bad or n_dup:
        cannot, repeat = ("row cannot", "rows cannot")[n_bad != 1], ("repeats", "repeat")[n_dup != 1]
        lines.append(f"{n_bad:,} {cannot} be used and {n_dup:,} {repeat} an earlier row: see Problems below, or "
                     f"press *Drop bad rows*.")
    lines += [f"*{note}*" for note in report.notes]
    return "\n\n".join(lines)


def split_markdown(report: data.DataReport | None, fraction: float, validation_path: str,
                   validation: data.DataReport | None = None) -> str:
    """The training and validation rows; with a separate validation file (`validation`, already read) the rows in
    it that repeat or reword a training row (leaks), by the row numbers of both files."""
    if report is None:
        return ""
    good = len(report.good_examples())
    if validation_path:
        line = f"Training rows: **{good:,}**; validation rows come from **{Path(validation_path).name}**."
        return line + (leaks_markdown(report, validation) if validation is not None else "")
    try:
        train, val = data.split_sizes(good, float(fraction or 0))
    except data.DataError as err:
        return error_markdown(err)
    if not val:
        return f"Training rows: **{train:,}**; no validation rows (validation loss will not be measured)."
    return f"Training rows: **{train:,}**; validation rows: **{val:,}** ({float(fraction):.0%}, picked with the seed)."


def leaks_markdown(report: data.DataReport, validation: data.DataReport) -> str:
    """Validation rows that repeat or reword a training row, by the row numbers of both files; "" when none do."""
    leaks = leak_problems(report, validation)
    if not leaks:
        return ""
    unit, train_unit = validation.row_unit, report.row_unit
    repeat = "repeats a training row" if len(leaks) == 1 else "repeat training rows"
    lines = [f"\n\n**{len(leaks):,} of the validation {unit}s {repeat}**: the validation loss would look better "
             f"than the model is. Delete each from one of the two files:"]
    for p in leaks[:LEAKS_SHOWN]:
        how = "repeats" if (p.similarity or 0) >= 100 else f"rewords ({p.similarity:.0f}% alike)"
        lines.append(f"- validation {unit} {p.row} (“{p.quote}”) {how} training {train_unit} {p.other_row}")
    if len(leaks) > LEAKS_SHOWN:
        lines.append(f"- ... and {len(leaks) - LEAKS_SHOWN:,} more.")
    return "\n".join(lines)


def validation_report(ctx: UIContext, val_path: str, report: data.DataReport) -> data.DataReport | None:
    """The separate validation file read with the training file's columns (as a run reads it); None without one or
    when it cannot be read (on_validation said why). A path outside the app's folders raises the UserError."""
    if not val_path:
        return None
    path = client_path(ctx, val_path, VALIDATION_FIX)
    try:
        return analyse(str(path), report.mapping if report.mapping.is_set() else None)
    except Exception:  # noqa: BLE001 - the validation upload showed its own sentence
        return None


class _PlainTokenizer:
    """Stands in when the model's tokenizer cannot be loaded: the '### Role:' layout, no token counts."""

    chat_template = None
    eos_token = ""


def model_tokenizer(model: str, roots: tuple[Path, ...] | None = None):
    """The model's tokenizer (a model folder from a client must lie inside `roots`); raises a UserError."""
    if roots is not None:
        model = paths.check_client_model(model, roots)
    return cached_tokenizer(model)


def model_view(report: data.DataReport, model: str, answers_only: bool, max_len: int,
               roots: tuple[Path, ...] | None = None, system_prompt: str = "") -> tuple[str, str, str]:
    """(preview HTML, stats markdown, histogram SVG) for a report and a model. With `roots` (the model came from a
    client), a model folder must lie inside them. `system_prompt`: the run's own (RunConfig.system_prompt), added
    to rows without one as training will add it, so the preview and the token lengths are what trains."""
    first = [(row, e.with_system(system_prompt)) for row, e in _first_usable(report)]
    rejected = {row: e.rejected for row, e in first if isinstance(e, data.Preference)}
    try:
        tokenizer = model_tokenizer(model, roots)
    except Exception as err:  # noqa: BLE001 - shown as one sentence, the preview still works
        rows = [(row, data.render_segments(e, _PlainTokenizer(), answers_only)) for row, e in first]
        return (segments_html(rows, report.row_unit, rejected), f"**Token lengths unavailable:** {user_message(err)}",
                "")
    rows = [(row, data.render_segments(e, tokenizer, answers_only)) for row, e in first]
    examples = [e.with_system(system_prompt) if e is not None else None for e in report.examples]
    stats = data.token_stats(examples, tokenizer, int(max_len))
    return (segments_html(rows, report.row_unit, rejected), data.describe_stats(stats),
            histogram_svg(stats["lengths"], int(max_len)))


def checked(report: data.DataReport, model: str, max_len: int, roots: tuple[Path, ...] | None) -> tuple:
    """(report with the cross-row checks added, the tokenizer or None): rows over the cut-off need the model's
    tokenizer; without one the other checks still run."""
    try:
        tokenizer = model_tokenizer(model, roots)
    except Exception:  # noqa: BLE001 - model_view says why in the stats line
        tokenizer = None
    return data.check_report(report, tokenizer, int(max_len)), tokenizer


def readiness_markdown(report: data.DataReport, tokenizer) -> str:
    return f"**Is this enough?** {data.readiness(report, tokenizer=tokenizer)}"


def _first_usable(report: data.DataReport) -> list[tuple[int, dict]]:
    """The first usable examples, each with its row as the file shows it (a spreadsheet's first is row 2)."""
    found = []
    rows = report.rows or range(1, len(report.examples) + 1)
    for row, example in zip(rows, report.examples):
        if example is not None:
            found.append((row, example))
            if len(found) >= PREVIEW_EXAMPLES:
                break
    return found


def _mapping_choices(report: data.DataReport) -> list[str]:
    choices = [""] + list(report.columns)
    for value in dataclasses.astuple(report.mapping):
        if value and value not in choices:
            choices.append(value)  # e.g. "instruction+input"
    return choices


# --- what the tab draws ----------------------------------------------------------------------
@dataclass
class DataView:
    """Everything the Data tab draws for one training file; a field left at KEEP stays as it is on the page.
    The four mapping fields are the column-mapping boxes (MAPPING_FIELDS)."""

    data_path: Any = keep()
    status: Any = keep()
    table: Any = keep()
    preview: Any = keep()
    stats: Any = keep()
    histogram: Any = keep()
    problems: Any = keep()
    split: Any = keep()
    drop_note: Any = keep()
    prompt_column: Any = keep()
    response_column: Any = keep()
    system_column: Any = keep()
    text_column: Any = keep()
    file_name: Any = keep()  # the training file's name as the page shows it (data_path holds the server's path)
    mapping_panel: Any = keep()  # the column-mapping accordion: opened when the detection is unsure
    readiness: Any = keep()  # "Is this enough?"


@dataclass
class DataTab:
    """What the app wires to other tabs: the view (redrawn after a reload refills the form) and its inputs."""

    view: DataView  # of components
    mapping: list  # the training file and the four mapping boxes: the inputs every redraw starts with
    model: Any  # the Model tab's choice (a State with the default model when the tab is built alone)
    answers_only: gr.Checkbox
    max_len: gr.State  # the Settings tab's max_seq_length as last seen (512 until that tab says otherwise)
    fraction: gr.Slider
    validation_path: gr.Textbox

    @property
    def looks(self) -> list:
        """The inputs that decide how the rows look, after the mapping ones (see on_mapping)."""
        return [self.model, self.answers_only, self.max_len, self.fraction, self.validation_path]


def _mapping_of(prompt: str, response: str, system: str, text: str) -> data.ColumnMapping | None:
    mapping = data.ColumnMapping(prompt or "", response or "", system or "", text or "")
    return mapping if mapping.is_set() else None


def show(ctx: UIContext, path: str, mapping, model_name, only_answers, length, frac, val_path, progress=None,
         previous="", system_prompt="") -> DataView:
    """Analyse `path` and fill every output; a bad file gives one sentence in the status line.

    `previous`: the training file in use before this upload. A new file that cannot be read does not replace it:
    the preview stays, and the status line says which file is still used."""
    if not path:
        return DataView()
    try:  # a path from the page (or any API client) must lie in the app's folders
        path = str(client_path(ctx, path))
        if val_path:
            client_path(ctx, val_path, VALIDATION_FIX)
    except UserError as err:
        return DataView(status=error_markdown(err))
    if progress is not None:  # a large file takes seconds: the user sees what is happening
        progress(0.1, desc="Reading and checking every row...")
    try:
        report = analyse(path, mapping)
        if progress is not None:
            progress(0.7, desc="Tokenising a sample for the preview and length statistics...")
    except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
        if previous and previous != path:
            kept = f" Nothing changed: the training file is still **{Path(previous).name}**."
            return DataView(status=error_markdown(err) + kept)
        return DataView(path, error_markdown(err), pd.DataFrame(), "", "", "", problems_frame_empty(), "", "",
                        file_name=Path(path).name, readiness="")
    length = length or DEFAULT_MAX_SEQ_LENGTH
    html_preview, stats_line, svg = model_view(report, model_name, only_answers, length, app_roots(ctx),
                                               system_prompt)
    report, tokenizer = checked(report, model_name, length, app_roots(ctx))
    choices = _mapping_choices(report)
    boxes = [gr.update(choices=choices, value=v) for v in dataclasses.astuple(report.mapping)]  # MAPPING_FIELDS
    split = split_markdown(report, frac, val_path, validation_report(ctx, val_path, report))
    return DataView(path, status_markdown(report), report.preview, html_preview, stats_line, svg,
                    problems_frame(report), split, "", *boxes,
                    file_name=Path(path).name,
                    mapping_panel=gr.update(open=True) if report.mapping_unsure else gr.skip(),
                    readiness=readiness_markdown(report, tokenizer))


def on_upload(ctx: UIContext, file, model_name, only_answers, length, frac, val_path, previous="",
              system_prompt="", progress=gr.Progress()) -> DataView:
    if not file:
        return DataView()
    try:
        saved = data.save_upload(uploaded_path(ctx, file), ctx.uploads_dir)
    except Exception as err:  # noqa: BLE001
        return DataView(status=error_markdown(err))
    return show(ctx, str(saved), None, model_name, only_answers, length, frac, val_path, progress, previous,
                system_prompt)


def on_sample(ctx: UIContext, path, model_name, only_answers, length, frac, val_path, system_prompt="",
              progress=gr.Progress()) -> DataView:
    return show(ctx, path, None, model_name, only_answers, length, frac, val_path, progress,
                system_prompt=system_prompt)


def on_mapping(ctx: UIContext, path, prompt, response, system, text, model_name, only_answers, length, frac,
               val_path, system_prompt="") -> DataView:
    return show(ctx, path, _mapping_of(prompt, response, system, text), model_name, only_answers, length, frac,
                val_path, system_prompt=system_prompt)


def on_view(ctx: UIContext, path, prompt, response, system, text, model_name, only_answers, length,
            system_prompt="") -> DataView:
    """Model, cut-off, masking or the system prompt changed: redraw the preview, the stats and the problems (rows
    over the cut-off depend on both) from the cached report."""
    if not path:
        return DataView(preview="", stats="", histogram="")
    try:
        length = length or DEFAULT_MAX_SEQ_LENGTH
        report = analyse(client_path(ctx, path), _mapping_of(prompt, response, system, text))
        preview, stats, histogram = model_view(report, model_name, only_answers, length, app_roots(ctx),
                                               system_prompt)
        report, tokenizer = checked(report, model_name, length, app_roots(ctx))
    except Exception as err:  # noqa: BLE001
        return DataView(preview="", stats=error_markdown(err), histogram="")
    return DataView(preview=preview, stats=stats, histogram=histogram, problems=problems_frame(report),
                    readiness=readiness_markdown(report, tokenizer))


def on_length(ctx: UIContext, length, path, prompt, response, system, text, model_name, only_answers) -> tuple:
    """The Settings tab's max sequence length changed: (the length, remembered in the state, then the DataView with
    the length check redrawn)."""
    return length, *slots(on_view(ctx, path, prompt, response, system, text, model_name, only_answers, length))


# The fixes the page offers, by the words it shows: (label, Fixes field). "Drop bad rows" is the first two.
FIX_CHOICES = [
    ("Drop rows that cannot be used", "drop_unusable"),
    ("Drop repeats (keep the first)", "drop_duplicates"),
    ("Drop reworded copies (keep the first)", "drop_near_duplicates"),
    ("Drop rows longer than the cut-off", "drop_long"),
    ("Hide personal data ([EMAIL], [PHONE] ...)", "mask_personal_data"),
]
DEFAULT_FIXES = ["drop_unusable", "drop_duplicates"]


def on_fix(ctx: UIContext, chosen, path, prompt, response, system, text, model_name, only_answers, length, frac,
           val_path, system_prompt="") -> DataView:
    """Write a fixed copy of the training file (same format as the user's) with the chosen fixes, and use it."""
    if not path:
        return DataView(drop_note="Upload a file first.")
    chosen = set(chosen or [])
    if not chosen:
        return DataView(drop_note="Tick at least one fix first.")
    mapping = _mapping_of(prompt, response, system, text)
    length = int(length or DEFAULT_MAX_SEQ_LENGTH)
    try:
        fixes = data.Fixes(**{name: name in chosen for _, name in FIX_CHOICES})
        report, tokenizer = checked(analyse(client_path(ctx, path), mapping), model_name, length, app_roots(ctx))
        if fixes.drop_long and tokenizer is None:
            model_tokenizer(model_name, app_roots(ctx))  # raises the sentence that says why
        result = data.write_fixed_copy(report, ctx.uploads_dir, fixes, tokenizer, length)
    except Exception as err:  # noqa: BLE001
        return DataView(drop_note=error_markdown(err))
    if not sum(result.dropped.values()) and not result.masked:
        result.path.unlink(missing_ok=True)
        return DataView(drop_note="Nothing to fix: the file stays as it is.")
    view = show(ctx, str(result.path), mapping, model_name, only_answers, length, frac, val_path,
                system_prompt=system_prompt)
    view.drop_note = f"{result.summary()} Training now uses this copy; your own file is unchanged."
    return view


def on_drop(ctx: UIContext, path, prompt, response, system, text, model_name, only_answers, length, frac,
            val_path, system_prompt="") -> DataView:
    """"Drop bad rows": the fixed copy without unusable rows and repeats."""
    return on_fix(ctx, DEFAULT_FIXES, path, prompt, response, system, text, model_name, only_answers, length, frac,
                  val_path, system_prompt)


def split_for(ctx: UIContext, path, prompt, response, system, text, frac, val_path) -> str:
    if not path:
        return ""
    try:
        report = analyse(client_path(ctx, path), _mapping_of(prompt, response, system, text))
        return split_markdown(report, frac, val_path, validation_report(ctx, val_path, report))
    except Exception as err:  # noqa: BLE001
        return error_markdown(err)


def on_validation(ctx: UIContext, file, frac, path, prompt, response, system, text) -> tuple[str, str]:
    """(the validation file kept, the split line). No file (the box cleared): back to a split of the training file."""
    if not file:
        return "", split_for(ctx, path, prompt, response, system, text, frac, "")
    try:
        saved = data.save_upload(uploaded_path(ctx, file), ctx.uploads_dir)
        check = data.load_data(saved, _mapping_of(prompt, response, system, text))
        if not check.good_examples():
            raise data.DataError(check.message or f"No usable rows in {saved.name}: check the file.")
    except Exception as err:  # noqa: BLE001
        return "", error_markdown(err)
    return str(saved), split_for(ctx, path, prompt, response, system, text, frac, str(saved))


def follow_max_seq_length(ctx: UIContext, length_box: gr.components.Component) -> None:
    """Wired by the app once the Settings tab exists: its max_seq_length then drives the length check (until then,
    or without it, the check uses DEFAULT_MAX_SEQ_LENGTH)."""
    tab = ctx.data
    try:
        tab.max_len.value = int(length_box.value)  # the per-session starting value of the state
    except (TypeError, ValueError):
        pass
    length_box.change(bind(on_length, ctx), [length_box, *tab.mapping, tab.model, tab.answers_only],
                      [tab.max_len, *slots(tab.view)], api_visibility="private")


# --- the tab ---------------------------------------------------------------------------------
def build_data_tab(ctx: UIContext) -> None:
    defaults = RunConfig()
    gr.Markdown("### Training data\nUpload your examples (CSV, TSV, JSON, JSONL, Parquet, TXT or Excel), or start "
                "from a sample. The format is detected; check the preview below: it is exactly what the model "
                "reads, with the part it learns to write in green.")
    with gr.Row():
        # Documents (.docx, .pdf) are let through so the server says what to do with them, on the page: refused
        # here, the browser would show only a toast that fades.
        upload = gr.File(label="Upload a data file", file_types=sorted(data.EXTENSIONS) + list(DOCUMENTS),
                         type="filepath",
                         elem_id="data-upload", scale=2)
        with gr.Column(scale=2):
            samples = [(p.name, str(p)) for p in data.sample_files()]
            sample = gr.Dropdown(choices=samples, value=None, label="...or start from a sample", elem_id="data-sample",
                                 info="Small datasets written for Studio: a support bot, legal clauses, recipes, "
                                      "product notes.")
            data_path = config_component("data_path", label="Training file", interactive=False, visible=False)
            file_name = gr.Textbox(label="Training file", interactive=False, elem_id="data-file-name")
    status = gr.Markdown(elem_id="data-status")
    specs = {f.name: f for f in dataclasses.fields(RunConfig)}
    readiness = gr.Markdown(elem_id="data-readiness")
    with gr.Accordion("Column mapping (detected automatically; change it if the detection is wrong)",
                      open=False) as mapping_panel, gr.Row():
        mapping_boxes = [gr.Dropdown(choices=[""], value="", allow_custom_value=True, elem_id=f"field-{name}",
                                     label=name.replace("_", " ").capitalize(), info=specs[name].metadata["help"])
                         for name in MAPPING_FIELDS]
    answers_only = config_component("train_on_answers_only", label="Train on answers only")
    system_prompt = config_component("system_prompt", label="System prompt (optional)", lines=2,
                                     placeholder="e.g. You answer for the Riverside vet clinic's front desk; sign "
                                                 "with 'The Riverside team'.")
    gr.Markdown("#### First rows, as read")
    table = gr.Dataframe(interactive=False, wrap=True, max_height=320, elem_id="data-table")
    gr.Markdown("#### As the model sees it")
    preview = gr.HTML(elem_id="data-preview")
    gr.Markdown("#### Token lengths\nTokens are the word pieces a model reads (about 3/4 of a word each); a row "
                "longer than the max sequence length (Settings tab) is cut there.")
    stats_md = gr.Markdown(elem_id="data-stats")
    histogram = gr.HTML(elem_id="data-histogram")
    gr.Markdown("#### Problems")
    # Fixed column widths: without them the table sizes each column to its longest text, the Details run off the
    # right edge and the columns after them are never seen.
    problems = gr.Dataframe(value=problems_frame_empty(), interactive=False, wrap=True, max_height=700,
                            column_widths=PROBLEM_WIDTHS, elem_id="data-problems")
    with gr.Row():
        drop = gr.Button("Drop bad rows", elem_id="data-drop")
        drop_note = gr.Markdown(elem_id="data-fix-note")
    with gr.Row():
        fix_choices = gr.CheckboxGroup(FIX_CHOICES, value=DEFAULT_FIXES, label="Fixes", elem_id="data-fixes",
                                       info="A fixed copy is written in your file's own format; your file is "
                                            "never changed.", scale=3)
        fix = gr.Button("Write a fixed copy", elem_id="data-fix", scale=1)
    gr.Markdown("#### Validation")
    meta = specs["validation_fraction"].metadata
    fraction = gr.Slider(meta["min"], meta["max"], value=defaults.validation_fraction, step=0.05,
                         label="Validation fraction", info=meta["help"], elem_id="field-validation_fraction")
    with gr.Row():
        validation_upload = gr.File(label="Separate validation file (optional)", file_types=sorted(data.EXTENSIONS),
                                    type="filepath", elem_id="data-validation-upload")
        validation_path = config_component("validation_path", label="Validation file", interactive=False)
    split_md = gr.Markdown(elem_id="data-split")

    model = ctx.fields.get("model") or gr.State(ctx.default_model)
    max_len = gr.State(DEFAULT_MAX_SEQ_LENGTH)
    view = DataView(data_path, status, table, preview, stats_md, histogram, problems, split_md, drop_note,
                    *mapping_boxes, file_name=file_name, mapping_panel=mapping_panel, readiness=readiness)
    outputs = slots(view)
    mapping_in = [data_path, *mapping_boxes]
    tab = DataTab(view, mapping_in, model, answers_only, max_len, fraction, validation_path)
    looks = tab.looks
    view_inputs = [*mapping_in, model, answers_only, max_len, system_prompt]
    # The run's system prompt comes last in every redraw's inputs: the preview shows the rows as they will train.
    upload.upload(bind(on_upload, ctx), [upload, *looks, data_path, system_prompt], outputs, api_visibility="private")
    sample.input(bind(on_sample, ctx), [sample, *looks, system_prompt], outputs, api_visibility="private")
    for box in mapping_boxes:
        box.input(bind(on_mapping, ctx), [*mapping_in, *looks, system_prompt], outputs, api_visibility="private")
    answers_only.change(bind(on_view, ctx), view_inputs, outputs, api_visibility="private")
    system_prompt.change(bind(on_view, ctx), view_inputs, outputs, api_visibility="private", show_progress="hidden")
    if not isinstance(model, gr.State):
        model.change(bind(on_view, ctx), view_inputs, outputs, api_visibility="private")
    drop.click(bind(on_drop, ctx), [*mapping_in, *looks, system_prompt], outputs, api_visibility="private")
    fix.click(bind(on_fix, ctx), [fix_choices, *mapping_in, *looks, system_prompt], outputs,
              api_visibility="private")
    fraction.change(bind(split_for, ctx), [*mapping_in, fraction, validation_path], split_md,
                    api_visibility="private")
    validation_upload.upload(bind(on_validation, ctx), [validation_upload, fraction, *mapping_in],
                             [validation_path, split_md], api_visibility="private")
    validation_upload.clear(bind(on_validation, ctx, None), [fraction, *mapping_in], [validation_path, split_md],
                            api_visibility="private")

    ctx.fields["data_path"] = data_path
    ctx.fields["validation_path"] = validation_path
    ctx.fields["validation_fraction"] = fraction
    for name, box in zip(MAPPING_FIELDS, mapping_boxes):
        ctx.fields[name] = box
    ctx.fields["train_on_answers_only"] = answers_only
    ctx.fields["system_prompt"] = system_prompt
    ctx.data = tab


def problems_frame_empty() -> pd.DataFrame:
    return pd.DataFrame(columns=PROBLEM_COLUMNS)
