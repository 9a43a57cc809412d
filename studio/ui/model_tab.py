"""Tab 1: choose the base model, see the hardware and what fits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import models, paths
from ..config import BUNDLED_MODEL
from .common import UIContext, app_roots, bind, config_component, form_defaults, user_message


@dataclass
class ModelTab:
    """What the Model tab lends to others: the catalogue, whose fit badges follow the Settings tab's sizing."""

    catalog: gr.Dataframe


def catalog_table(method: str, seq_len: int, batch_size: int) -> pd.DataFrame:
    hardware = models.detect_hardware()
    available = hardware.get("gpu_memory_gb") or hardware["ram_gb"]
    rows = [(BUNDLED_MODEL, models.BUNDLED_PARAMS_B, 8192, "Apache-2.0")]
    rows += [(e.hub_id, e.params_b, e.context, e.licence) for e in models.CATALOG]
    table = []
    gpus = hardware["gpu_count"]
    for name, params_b, context, licence in rows:
        estimate = models.estimate_memory_gb(params_b, method, seq_len, batch_size)
        badge = models.fit_badge(estimate, available)
        if badge == "too big" and gpus > 1:
            # Sharding auto: a model too big for one GPU is split across all of them (FSDP), per GPU this much.
            estimate = models.estimate_memory_gb(params_b, method, seq_len, batch_size, shards=gpus)
            badge = models.fit_badge(estimate, available)
            badge = f"{badge} (split over {gpus} GPUs)" if badge != "too big" else badge
        table.append({"Model": name, "Parameters": f"{params_b:g} B", "Context": f"{context:,}", "Licence": licence,
                      "Est. memory (longest rows)": f"{estimate:.1f} GB", "Fit": badge,
                      "Needs": "nothing (offline)" if name == BUNDLED_MODEL else "hub connection"})
    return pd.DataFrame(table)


def describe_model(name: str, trust_remote_code: bool, roots: tuple[Path, ...] | None = None) -> str:
    """Architecture, size and chat template, from the config and tokenizer only (no weights). With `roots` (the name
    came from a client), a model folder must lie inside them."""
    try:
        if roots is not None:
            name = paths.check_client_model(name, roots)
        config = models.load_config(name, trust_remote_code)
        tokenizer = models.load_tokenizer(name, trust_remote_code)
    except Exception as err:  # noqa: BLE001 - one sentence for the user
        return f"**Cannot use this model:** {user_message(err)}"
    template = "yes" if models.has_chat_template(tokenizer) else "no (a simple User/Assistant layout is used)"
    arch = ", ".join(getattr(config, "architectures", None) or [config.model_type])
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", "unknown")
    # Plain words beside each term: the person choosing may know their domain, not transformers.
    return (f"**{name}** - architecture {arch} (the model family's code), {config.num_hidden_layers} layers "
            f"(processing stages, one after another), hidden size {config.hidden_size} (numbers per token inside "
            f"each layer: wider learns more and needs more memory), vocabulary {len(tokenizer):,} (word pieces it "
            f"reads and writes), stored as {dtype} (the number format of its weights), chat template: {template}.")


def check_model(ctx: UIContext, name: str, trust_remote_code: bool) -> str:
    """The Check button: describe a model the page names (a folder must lie in the app's folders)."""
    return describe_model(name, trust_remote_code, app_roots(ctx))


def forget_model_info() -> str:
    """Another model was picked: what was said about the previous one (a "Cannot use this model" too) goes."""
    return ""


def pick_row(event: gr.SelectData) -> str:
    """A click on a catalogue row picks its model."""
    return event.row_value[0]


def build_model_tab(ctx: UIContext) -> None:
    hardware = models.detect_hardware()
    gr.Markdown("### Choose the base model\nThe bundled model works offline and is small enough to train on a "
                "laptop CPU. Hub models need an internet connection the first time.")
    gr.Markdown(f"**Hardware:** {hardware['summary']}", elem_id="hardware")
    with gr.Row():
        model = gr.Dropdown(choices=ctx.model_choices, value=ctx.default_model, allow_custom_value=True,
                            label="Base model", elem_id="model-choice", scale=3,
                            info="Pick from the list, type a hub id (org/name), or paste a local folder path.")
        check = gr.Button("Check model", scale=1)
    trust = config_component("trust_remote_code", label="Trust remote code")
    info = gr.Markdown(elem_id="model-info")
    defaults = form_defaults()  # as the Settings tab starts
    gr.Markdown("#### Popular instruct models and whether they fit this machine\nClick a row to pick that model. "
                "The estimate follows the method, sequence length and batch size in Settings, with every row "
                "as long as the maximum; the Train tab estimates from your actual data, which is usually less.")
    table = gr.Dataframe(value=catalog_table(defaults.method, defaults.max_seq_length, defaults.batch_size),
                         interactive=False, wrap=True, elem_id="catalog")
    check.click(bind(check_model, ctx), [model, trust], info, api_visibility="private")
    model.change(forget_model_info, None, info, api_visibility="private", queue=False)
    table.select(pick_row, None, model, api_visibility="private")
    ctx.fields["model"] = model
    ctx.fields["trust_remote_code"] = trust
    ctx.model = ModelTab(table)
