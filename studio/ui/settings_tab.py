"""Tab 3: hyperparameters, from presets, every field with its help; the run as a command."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import gradio as gr

from .. import distributed
from ..config import PRESETS, RunConfig, apply_preset
from .common import (
    START_PRESET,
    UIContext,
    bind,
    client_config,
    config_component,
    error_markdown,
    field_label,
    form_defaults,
    uploaded_path,
    user_message,
)
from .estimates import estimate_text
from .tune_panel import build_tune_panel

# Fields shown on this tab, in the order a person thinks about them.
# What most people change, in view; the rest behind "Advanced", where the presets' values are a good start.
MAIN_FIELDS = ["epochs", "max_steps", "learning_rate", "batch_size", "max_seq_length", "method", "objective",
               "run_name"]
OPTIMISER_FIELDS = ["lr_scheduler", "warmup_ratio", "gradient_accumulation", "packing", "weight_decay", "seed"]
LORA_FIELDS = ["lora_rank", "lora_alpha", "lora_dropout", "target_modules", "gradient_checkpointing",
               "preference_beta"]  # the last: DPO and ORPO only (the training goal in MAIN_FIELDS)
MONITOR_FIELDS = ["eval_every", "save_every", "keep_checkpoints", "logging_every"]
HARDWARE_FIELDS = ["devices", "sharding", "nodes", "master_addr", "master_port"]  # several GPUs or machines
ESTIMATE_FIELDS = ["epochs", "max_steps", "batch_size", "max_seq_length", "method", "gradient_accumulation", "packing",
                   "eval_every", "objective", "devices", "sharding", "nodes"]  # what the estimate follows
PRESET_FIELDS = sorted({k for values in PRESETS.values() for k in values})  # what a preset sets, in this order


def command_for(config: RunConfig) -> tuple[str, str]:
    """(config JSON, shell command) that reproduce this run headless; for a run on several machines, the command
    of each machine (the same config file, its own node rank)."""
    command = "python -m studio train my-run.json   # save the config above as my-run.json"
    if config.nodes > 1:
        lines = [f"{distributed.machine_command('my-run.json', rank)}   # on machine {rank}"
                 for rank in range(config.nodes)]
        command = ("# The same config file and data (same paths) on every machine; machine 0 "
                   f"({config.master_addr or 'set master_addr'}) shows the run.\n" + "\n".join(lines))
    return config.to_json(), command


def differences_from_preset(preset: str, config: RunConfig) -> str:
    if preset not in PRESETS:
        return ""
    base = apply_preset(dataclasses.replace(config), preset)
    changed = {k: v for k, v in config.diff(base).items() if k in PRESETS[preset]}
    if not changed:
        return f"Using the **{preset}** preset as is."
    items = ", ".join(f"{field_label(k)} {mine} (preset: {theirs})" for k, (mine, theirs) in changed.items())
    return f"Changed from **{preset}**: {items}"


def preset_values(name: str) -> list:
    """A preset's values for PRESET_FIELDS, in that order."""
    return [gr.update(value=PRESETS[name][k]) for k in PRESET_FIELDS]


def show_command(ctx: UIContext, names: list[str], *values) -> tuple[str, str, str | None]:
    """(config JSON, command, the JSON as a file to download) for the form's run; a bad field is said in the JSON
    box."""
    try:
        config = client_config(ctx, names, list(values))
    except Exception as err:  # noqa: BLE001
        return f"// {user_message(err)}", "", None
    text, cmd = command_for(config)
    path = Path(tempfile.mkdtemp(prefix="studio-config-")) / "my-run.json"
    path.write_text(text + "\n")
    return text, cmd, str(path)


def load_config(ctx: UIContext, names: list[str], path) -> list:
    """A config file saved with "Show as command": every field of `names` from it, then the note under the box."""
    try:
        config = RunConfig.load(uploaded_path(ctx, path, fix="load a config file you saved with Show as command"))
    except Exception as err:  # noqa: BLE001
        return [gr.skip() for _ in names] + [error_markdown(err)]
    return [gr.update(value=getattr(config, n)) for n in names] + [f"Loaded {Path(path).name}."]


def preset_note(ctx: UIContext, names: list[str], preset: str, *values) -> str:
    """What the form changed from its preset, or the field to fix."""
    try:
        return differences_from_preset(preset, client_config(ctx, names, list(values)))
    except Exception as err:  # noqa: BLE001
        return f"**Check this field:** {user_message(err)}"


def build_settings_tab(ctx: UIContext, tab: gr.Tab | None = None) -> None:
    """The Settings tab; `tab` (its gr.Tab) lets opening it redraw the estimate."""
    defaults = form_defaults()
    gr.Markdown("### Training settings\nStart from a preset, then change what you need. Every field says what it "
                "does; hover or read the line under it.")
    preset = gr.Radio(list(PRESETS), value=START_PRESET, label="Preset", elem_id="preset",
                      info="Quick test: a few minutes to see it work. Balanced: a real run. Thorough: more epochs "
                           "and capacity.")
    note = gr.Markdown(elem_id="preset-note")
    estimate = gr.Markdown("The memory and time this run needs appear here once a model and data are chosen.",
                           elem_id="settings-estimate")

    def fields(names: list[str]) -> None:
        for name in names:
            ctx.fields[name] = config_component(name, getattr(defaults, name))

    with gr.Row():
        with gr.Column():
            fields(MAIN_FIELDS[:4])
        with gr.Column():
            fields(MAIN_FIELDS[4:])
    with gr.Accordion("Advanced: schedule, LoRA, validation and checkpoints (the preset's values are a good start)",
                      open=False, elem_id="advanced-settings"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("#### Optimiser and batches")
                fields(OPTIMISER_FIELDS)
            with gr.Column():
                gr.Markdown("#### LoRA")
                fields(LORA_FIELDS)
                gr.Markdown("#### Validation and checkpoints")
                fields(MONITOR_FIELDS)
    with gr.Accordion("Several GPUs or machines (one run on all of them)", open=False, elem_id="hardware-settings"):
        gr.Markdown("Batch size is per GPU: each step trains on batch size x gradient accumulation x GPUs x machines "
                    "examples. For several machines, \"Show as command\" below gives the command for each.")
        fields(HARDWARE_FIELDS)

    with gr.Accordion("Show as command / load a config file", open=False):
        gr.Markdown("The same run without the browser: save the config and run the command. Loading a config "
                    "file fills this form.")
        show = gr.Button("Show as command")
        config_json = gr.Code(language="json", label="Config file (my-run.json)", elem_id="config-json")
        command = gr.Code(language="shell", label="Command")
        download = gr.File(label="Download config", interactive=False)
        upload = gr.File(label="Load a config file", file_types=[".json"], type="filepath")
        load_note = gr.Markdown()

    names = list(ctx.fields)  # every field registered so far (model and data tabs come first)
    form = ctx.form(names)
    build_tune_panel(ctx, names)
    preset.change(preset_values, preset, ctx.form(PRESET_FIELDS), api_visibility="private")
    show.click(bind(show_command, ctx, names), form, [config_json, command, download], api_visibility="private")
    upload.upload(bind(load_config, ctx, names), upload, [*form, load_note], api_visibility="private")
    for name in MAIN_FIELDS + OPTIMISER_FIELDS + LORA_FIELDS + MONITOR_FIELDS + HARDWARE_FIELDS:
        ctx.fields[name].change(bind(preset_note, ctx, names), [preset, *form], note, show_progress="hidden",
                                api_visibility="private")
    # The estimate follows what changes it; a preset sets several fields at once, and only the last redraw counts.
    redraw = [ctx.fields[n].change for n in ESTIMATE_FIELDS] + ([tab.select] if tab is not None else [])
    gr.on(redraw, bind(estimate_text, ctx, names), form, estimate, trigger_mode="always_last",
          show_progress="hidden", api_visibility="private")
