"""The README that travels with every export: what the model is, what it was trained on, how well, under which
licence, and how to use it. A colleague who gets the zip, the GGUF or the Space learns everything from it.

The base model is named by its public hub id (the bundled model by its own, HuggingFaceTB/SmolLM2-135M-Instruct),
never by a folder on the trainer's machine: a path is useless to the reader and leaks the trainer's home folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import BUNDLED_MODEL, RunConfig
from .events import CONFIG_FILE, read_events, replay

BUNDLED_PUBLIC_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The settings a reader can act on; paths and switches of this machine are left out.
CARD_SETTINGS = ("method", "max_steps", "epochs", "learning_rate", "batch_size", "gradient_accumulation",
                 "max_seq_length", "lora_rank", "lora_alpha", "lora_dropout", "lr_scheduler", "warmup_ratio",
                 "weight_decay", "train_on_answers_only", "packing", "seed")

USAGE = {
    "adapter": ("```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
                "model = AutoPeftModelForCausalLM.from_pretrained(FOLDER)  # downloads the base model once\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"{base}\")\n```"),
    "merged": ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
               "model = AutoModelForCausalLM.from_pretrained(FOLDER)\n"
               "tokenizer = AutoTokenizer.from_pretrained(FOLDER)\n```"),
    # The Modelfile is named after its GGUF file (gguf_export.modelfile_path): MODEL.gguf -> MODEL.Modelfile.
    "gguf": ("```bash\n# in the folder of MODEL.gguf and MODEL.Modelfile\n"
             "ollama create my-model -f MODEL.Modelfile && ollama run my-model\n"
             "# or: llama-cli -m MODEL.gguf -cnv\n```"),
    "space": "This folder is a Hugging Face Space: `python app.py` runs it locally; pushed, it runs on the hub.",
}
WHAT = {"adapter": "a LoRA adapter (small; loads on top of the base model)",
        "merged": "full weights with the LoRA adapter merged in",
        "gguf": "one GGUF file with the adapter merged in, for llama.cpp, Ollama and LM Studio",
        "space": "a ready Hugging Face Space that chats with the fine-tuned model"}


def public_base_id(model: str) -> str | None:
    """The hub id a reader can download the base from; None for a local folder or the tiny test model."""
    from .models import is_hub_id
    from .paths import is_local_model

    if model == BUNDLED_MODEL:
        return BUNDLED_PUBLIC_ID
    return model if is_hub_id(model) and not is_local_model(model) else None


def licence_of(base_id: str | None) -> str | None:
    from .models import CATALOG

    return next((entry.licence for entry in CATALOG if entry.hub_id == base_id), None)


def _data_summary(config: RunConfig) -> str:
    from . import data

    name = Path(config.data_path).name if config.data_path else "?"
    try:
        report = data.load_data(config.data_path, data.mapping_from_config(config))
    except Exception:  # noqa: BLE001 - the data may have moved since training; the card still says what it was
        return f"`{name}` (no longer readable here, so no row counts)."
    usable = sum(1 for e in report.examples if e is not None)
    dropped = report.n_rows - usable
    problems = f", {dropped} unusable rows left out" if dropped else ""
    return f"`{name}`: {report.n_rows} rows in {report.format_label} format, {usable} used for training{problems}."


def _result(run_dir: Path) -> list[str]:
    history = replay(read_events(run_dir))
    lines = []
    pair = history.validation_before_after
    if pair:
        before, after = pair
        change = (before - after) / before * 100 if before else 0.0
        lines.append(f"- Validation loss (lower is better: how surprised the model is by held-out examples): "
                     f"{before:.3f} before training, {after:.3f} after ({change:+.0f}% lower)."
                     if change >= 0 else
                     f"- Validation loss: {before:.3f} before training, {after:.3f} after (worse by {-change:.0f}%).")
    report = run_dir / "report.json"
    if report.is_file():
        try:
            verdict = json.loads(report.read_text(encoding="utf-8")).get("verdict")
        except ValueError:
            verdict = None
        if isinstance(verdict, dict):
            verdict = verdict.get("text")
        if isinstance(verdict, str) and verdict:
            lines.append(f"- Report card: {verdict}")
    if history.train_steps:
        lines.append(f"- Trained for {history.train_steps[-1]} steps.")
    return lines or ["- No validation result was recorded for this run."]


def model_card(run_dir: str | Path, kind: str, header: dict | None = None) -> str:
    """README.md text for an export of `kind` (adapter, merged, gguf or space). `header`: extra front-matter keys
    (a Space's sdk and title)."""
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    base_id = public_base_id(config.model)
    licence = licence_of(base_id)
    front = dict(header or {})
    if base_id:
        front["base_model"] = base_id
    if kind == "adapter":
        front["library_name"] = "peft"
    if licence and " " not in licence:
        front["license"] = licence.lower()
    front["tags"] = ["studio", "lora", "fine-tuned"]
    yaml = "\n".join(f"{key}: {json.dumps(value) if not isinstance(value, list) else ''}".rstrip()
                     + ("".join(f"\n  - {item}" for item in value) if isinstance(value, list) else "")
                     for key, value in front.items())
    title = config.run_name or run_dir.name
    base_text = f"[`{base_id}`](https://huggingface.co/{base_id})" if base_id else "a local model"
    settings = {k: v for k, v in config.to_dict().items() if k in CARD_SETTINGS}
    usage = USAGE[kind].format(base=base_id or "BASE_MODEL", name=title)
    licence_line = (f"The base model's licence applies: {licence}." if licence else
                    "The base model's licence applies: see its page before you share or sell answers.")
    return (f"---\n{yaml}\n---\n\n# {title}\n\nFine-tuned with Studio from {base_text}: {WHAT[kind]}.\n\n"
            f"## Data\n\n{_data_summary(config)}\n\n## Result\n\n" + "\n".join(_result(run_dir)) +
            f"\n\n## How to use it\n\n{usage}\n\n## Training settings\n\n```json\n{json.dumps(settings, indent=2)}\n```"
            f"\n\n## Licence\n\n{licence_line}\n")


def publish_adapter_config(adapter_dir: Path, config: RunConfig) -> None:
    """Point a copied adapter's adapter_config.json at the public base id instead of a folder on this machine (no
    id when the base was a local folder: a path would only leak where it lay)."""
    path = adapter_dir / "adapter_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = public_base_id(config.model)
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
