"""What the tabs share: the context they register their form fields in, and error display."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import UserError

log = logging.getLogger("studio.ui")


@dataclass
class UIContext:
    """Built once per app. `fields` maps RunConfig field names to the component that edits them,
    so the Train tab can assemble one RunConfig from every tab's form."""

    runs_dir: Path
    uploads_dir: Path
    model_choices: list[str]
    default_model: str
    fields: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other shared components (e.g. the selected run)
    upload_temp_dir: Path | None = None  # where gradio keeps uploads before we copy them; None = gradio's own


# --- paths from a client: every handler that takes one goes through these (studio/paths.py) ---------------------
def app_roots(ctx: UIContext) -> tuple[Path, ...]:
    """The folders a path from the page or an API client may lie in: uploads, the shipped samples, the runs."""
    return paths.app_roots(ctx.runs_dir, ctx.uploads_dir)


def client_path(ctx: UIContext, value, fix: str = paths.UPLOAD_FIX) -> Path:
    """A path typed or sent by a client (the training file, the validation file, a sample), checked and resolved."""
    return paths.check_client_path(value, app_roots(ctx), fix)


def upload_roots(ctx: UIContext) -> tuple[Path, ...]:
    """Where a gr.File value may lie: gradio's upload folder (it accepts no other path for a File input, and we
    check again), or the app's folders."""
    if ctx.upload_temp_dir is not None:
        temp = Path(ctx.upload_temp_dir)
    else:
        from gradio.utils import get_upload_folder

        temp = Path(get_upload_folder())
    return (temp, *app_roots(ctx))


def uploaded_path(ctx: UIContext, file, fix: str = "upload the file again") -> Path:
    """The path of a gr.File value (type="filepath": a string), checked to be an upload and resolved."""
    return paths.check_client_path(getattr(file, "name", None) or file, upload_roots(ctx), fix)


def client_config(ctx: UIContext, names: list[str], values: list):
    """The RunConfig a form describes, with its model folder and data files checked against the app's folders."""
    return paths.check_config_paths(config_from_values(names, values), app_roots(ctx))


def user_message(err: Exception) -> str:
    """One sentence for the user; anything unexpected is logged with its traceback."""
    if isinstance(err, UserError):
        return str(err)
    log.exception("unexpected error", exc_info=err)
    return f"Something went wrong ({type(err).__name__}: {err}). The details are in the server log."


def error_markdown(err: Exception) -> str:
    return f"**Error:** {user_message(err)}"


def guarded(fn):
    """Wrap a UI callback: a UserError (or any crash) becomes a gr.Warning toast, never a traceback."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - shown as one sentence
            raise gr.Error(user_message(err), print_exception=False) from None

    return wrapper


def field_label(name: str) -> str:
    """The words the form shows for a RunConfig field ("Max steps" for max_steps)."""
    import dataclasses

    from ..config import RunConfig

    meta = {f.name: f.metadata for f in dataclasses.fields(RunConfig)}[name]
    return meta.get("label") or name.replace("_", " ").capitalize()


def config_component(name: str, value=None, **overrides):
    """A form component for one RunConfig field, built from its metadata (type, help, bounds, choices)."""
    import dataclasses

    import gradio as gr

    from ..config import METHOD_LABELS, RunConfig

    spec = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    meta = spec.metadata
    value = spec.default if value is None else value
    label = field_label(name)
    common = {"label": label, "info": meta["help"], "value": value, "elem_id": f"field-{name}"}
    common.update(overrides)
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    if meta.get("choices"):
        labels = METHOD_LABELS if name == "method" else {}
        return gr.Dropdown(choices=[(labels.get(c, c), c) for c in meta["choices"]], **common)
    if kind == "bool":
        return gr.Checkbox(**common)
    if kind in ("int", "float"):
        lo, hi = meta.get("min"), meta.get("max")
        step = 1 if kind == "int" else None
        return gr.Number(minimum=lo, maximum=hi, step=step, precision=0 if kind == "int" else None, **common)
    return gr.Textbox(**common)


def config_from_values(names: list[str], values: list):
    """The RunConfig a form describes; unknown-to-the-form fields keep their defaults."""
    from ..config import RunConfig

    return RunConfig(**dict(zip(names, values)))
