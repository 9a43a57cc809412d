"""`python -m studio data FILE`: the detected format, rows, problems and a preview with the chat template."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..logs import ArgumentParser, tell_user
from .checks import check_report
from .formats import ColumnMapping
from .load import load_data
from .readers import SUPPORTED_TEXT, _names
from .readiness import readiness
from .template import describe_stats, render_segments, token_stats

log = logging.getLogger(__name__)



def _parser() -> argparse.ArgumentParser:
    from ..config import BUNDLED_MODEL

    p = ArgumentParser(prog="studio data", description="Check a dataset: detected format, rows, problems "
                                "and a preview with the model's chat template applied.")
    p.add_argument("file", help=f"the data file ({SUPPORTED_TEXT}), or a hub dataset id org/name[:subset][@split]")
    p.add_argument("--validation", default="", help="a separate validation file: checked too, and for rows that "
                   "repeat or reword training rows (leaks)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of text")
    p.add_argument("--model", default=BUNDLED_MODEL, help="model whose tokenizer and chat template are used "
                   "(default: the bundled model)")
    p.add_argument("--max-seq-length", type=int, default=512, help="cut-off in tokens used for the length check "
                   "(default: 512)")
    p.add_argument("--prompt-column", default="", help="column holding the prompt (join several with '+')")
    p.add_argument("--response-column", default="", help="column holding the answer")
    p.add_argument("--system-column", default="", help="column holding a system prompt")
    p.add_argument("--text-column", default="", help="column of plain text (instead of prompt and response)")
    p.add_argument("--system-prompt", default="", help="your own system prompt, added to rows without one")
    p.add_argument("--preset", default="Quick test", help="settings preset for 'Is this enough?' (default: Quick "
                   "test)")
    p.add_argument("--rows", type=int, default=3, help="how many rows to preview (default: 3)")
    p.add_argument("--all-problems", action="store_true", help="list every problem, not only the first 20")
    return p


def _cli_report(args: argparse.Namespace) -> dict:
    from ..config import RunConfig, apply_preset
    from ..models import load_tokenizer

    mapping = ColumnMapping(args.prompt_column, args.response_column, args.system_column, args.text_column)
    started = time.perf_counter()
    report = load_data(args.file, mapping)
    validation = load_data(args.validation, mapping) if args.validation else None
    for r in (report, validation):
        if r is not None and args.system_prompt:
            r.examples = [e.with_system(args.system_prompt) if e is not None else None for e in r.examples]
    tokenizer = load_tokenizer(args.model)
    check_report(report, tokenizer, args.max_seq_length, validation=validation)
    stats = token_stats(report.examples, tokenizer, args.max_seq_length)
    config = apply_preset(RunConfig(validation_path=args.validation), args.preset)
    info = _report_info(report, tokenizer, args.rows)
    info.update({"token_stats": {k: v for k, v in stats.items() if k != "lengths"},
                 "stats_line": describe_stats(stats), "model": args.model, "preset": args.preset,
                 "readiness": readiness(report, config, args.preset, tokenizer),
                 "validation": _report_info(validation, tokenizer, 0) if validation else None,
                 "seconds": round(time.perf_counter() - started, 3)})
    return info


def _report_info(report, tokenizer, n_preview: int) -> dict:
    preview = []
    for row, example in zip(report.rows, report.examples):
        if len(preview) >= n_preview:
            break
        if example is not None:
            preview.append({"row": row, "segments": [[t, m] for t, m in render_segments(example, tokenizer)]})
    return {"path": report.path, "format": report.format, "format_label": report.format_label,
            "columns": report.columns, "n_rows": report.n_rows, "n_usable": len(report.usable()),
            "row_unit": report.row_unit, "blank_rows": report.blank_rows, "confidence": report.confidence,
            "mapping_unsure": report.mapping_unsure, "mapping": dataclasses.asdict(report.mapping),
            "notes": report.notes, "message": report.message,
            "problems": [dataclasses.asdict(p) for p in report.problems], "preview": preview}


def _print_text(info: dict, all_problems: bool) -> None:
    color = sys.stdout.isatty()
    mapping = ", ".join(f"{k}={v}" for k, v in info["mapping"].items() if v)
    print(f"File:    {info['path']}")
    print(f"Format:  {info['format_label']}" + (f" ({mapping})" if mapping else ""))
    print(f"Columns: {', '.join(info['columns'])}")
    print(f"Rows:    {info['n_rows']:,} ({info['n_usable']:,} usable)")
    for note in info["notes"]:
        print(f"Note:    {note}")
    if info["message"]:
        print(f"Note:    {info['message']}")
    print(info["stats_line"])
    print(f"\nIs this enough? {info['readiness']}")
    _print_problems(info, all_problems)
    if info["validation"]:
        print(f"\nValidation file: {info['validation']['path']} ({info['validation']['n_usable']:,} usable rows)")
        _print_problems(info["validation"], all_problems)
    legend = "trained-on text in green" if color else "trained-on text between [[ and ]]"
    print(f"\nPreview with the chat template of {info['model']} ({legend}):")
    for item in info["preview"]:
        print(f"--- {info['row_unit']} {item['row']} ---")
        out = []
        for text, trained in item["segments"]:
            if trained:
                out.append(f"\x1b[42m{text}\x1b[0m" if color else f"[[{text}]]")
            else:
                out.append(text)
        print("".join(out).rstrip("\n"))


def _print_problems(info: dict, all_problems: bool) -> None:
    problems = info["problems"]
    if not problems:
        return
    shown = problems if all_problems else problems[:20]
    print(f"\nProblems ({len(problems):,}):")
    for p in shown:
        quoted = f" “{p['quote']}”" if p["quote"] else ""
        print(f"  {info['row_unit']} {p['row']:>6}  {p['kind']:<15}{quoted} {p['message']}")
    if len(shown) < len(problems):
        print(f"  ... and {len(problems) - len(shown):,} more (use --all-problems)")


def main(argv: list[str]) -> int:
    """`python -m studio data FILE ...`: 0 when the file was read, 1 with one 'Error: ...' line when not."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        info = _cli_report(args)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    except Exception as err:
        log.debug("studio data failed", exc_info=True)
        tell_user(f"Error: {type(err).__name__}: {err}".splitlines()[0])
        return 1
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
    if not info["n_usable"]:
        tell_user(f"Error: {no_usable_rows_sentence(info)}")
        return 1
    if not args.json:
        _print_text(info, args.all_problems)
    return 0


def no_usable_rows_sentence(info: dict) -> str:
    """Why the CLI found nothing to train on, with the flags that fix it."""
    name = Path(info["path"]).name
    if info["format"] == "manual" or not any(info["mapping"].values()):
        return (f"No usable rows in {name}: Studio could not tell which column is the prompt and which the answer; "
                f"name them with --prompt-column and --response-column (or --text-column for plain text). "
                f"Columns: {_names(info['columns'])}.")
    kinds = sorted({p["kind"] for p in info["problems"]})
    return (f"No usable rows in {name} ({', '.join(kinds) or 'every row is empty'}): fix the rows listed by "
            f"--json, or map other columns with --prompt-column and --response-column.")


