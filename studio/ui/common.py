"""What the tabs share: the context that links them, error display, and the glue between handlers and Gradio.

A handler is a module-level function of named inputs. Its first argument is the app's UIContext when it needs one
(`bind` fixes it when the tab wires the handler); a handler with several outputs returns a small dataclass whose
fields are named after what they draw (`bind` turns it into the positional values Gradio sends). The same dataclass,
filled with the components instead of values, is the event's outputs list: one order, written once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from .. import paths
from ..errors import UserError

if TYPE_CHECKING:
    from .chat_tab import ChatTab
    from .data_tab import DataTab
    from .model_tab import ModelTab
    from .train_tab import TrainTab

log = logging.getLogger("studio.ui")


@dataclass
class UIContext:
    """Built once per app. `fields` maps RunConfig field names to the component that edits them, so the Train tab
    can assemble one RunConfig from every tab's form. The tab attributes are the components one tab lends to
    another (app.py wires those links after every tab is built); each is None until its tab is built."""

    runs_dir: Path
    uploads_dir: Path
    model_choices: list[str]
    default_model: str
    upload_temp_dir: Path | None = None  # where gradio keeps uploads before we copy them; None = gradio's own
    fields: dict[str, gr.components.Component] = field(default_factory=dict)
    model: ModelTab | None = None
    data: DataTab | None = None
    train: TrainTab | None = None
    chat: ChatTab | None = None

    def form(self, names: list[str] | None = None) -> list:
        """The form's components, in the order of `names` (default: every field registered so far)."""
        return [self.fields[n] for n in (names if names is not None else self.fields)]


# --- handlers and outputs ----------------------------------------------------------------------------------------
def keep() -> Any:
    """A dataclass field's default for an output a handler leaves as it is on the page."""
    return field(default_factory=gr.skip)


def slots(view) -> list:
    """The fields of an outputs dataclass in their order: its components (an event's outputs list) or its values."""
    return [getattr(view, f.name) for f in dataclasses.fields(view)]


def _flat(result):
    return tuple(slots(result)) if dataclasses.is_dataclass(result) and not isinstance(result, type) else result


def bind(fn, *bound):
    """`fn` with its first arguments fixed (the context), for Gradio: a dataclass result becomes positional values.

    Gradio reads a handler's signature to pass gr.Request and gr.Progress, so the wrapper shows the signature
    without the bound arguments, and keeps fn's name (the page's api_name) and type hints."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            for result in fn(*bound, *args, **kwargs):
                yield _flat(result)
    else:
        @functools.wraps(fn)
        def call(*args, **kwargs):
            return _flat(fn(*bound, *args, **kwargs))
    call.__signature__ = inspect.signature(functools.partial(fn, *bound))
    return call


def guarded(fn):
    """A handler whose failure is a gr.Error toast with one sentence (a UserError's, or a logged crash's), never a
    traceback: for handlers whose outputs have no place for a message (the chat columns, a table)."""
    def toast(err: Exception):
        return gr.Error(user_message(err), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - shown as one sentence
                raise toast(err) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - shown as one sentence
                raise toast(err) from None
    return wrapper


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
        temp = Path(gr.utils.get_upload_folder())
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


def field_label(name: str) -> str:
    """The words the form shows for a RunConfig field ("Max steps" for max_steps)."""
    from ..config import RunConfig

    meta = {f.name: f.metadata for f in dataclasses.fields(RunConfig)}[name]
    return meta.get("label") or name.replace("_", " ").capitalize()


def config_component(name: str, value=None, **overrides):
    """A form component for one RunConfig field, built from its metadata (type, help, bounds, choices)."""
    from .. import methods
    from ..config import RunConfig

    spec = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    meta = spec.metadata
    value = spec.default if value is None else value
    label = field_label(name)
    common = {"label": label, "info": meta["help"], "value": value, "elem_id": f"field-{name}"}
    common.update(overrides)
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    if meta.get("choices"):
        labels = {"method": methods.LABELS, "objective": methods.OBJECTIVE_LABELS}.get(name, {})
        return gr.Dropdown(choices=[(labels.get(c, c), c) for c in meta["choices"]], **common)
    if kind == "bool":
        return gr.Checkbox(**common)
    if kind in ("int", "float"):
        lo, hi = meta.get("min"), meta.get("max")
        step = 1 if kind == "int" else None
        return gr.Number(minimum=lo, maximum=hi, step=step, precision=0 if kind == "int" else None, **common)
    return gr.Textbox(**common)


START_PRESET = "Quick test"  # the preset a new page's form starts from


def form_defaults():
    """The RunConfig a new page's form shows: the defaults with START_PRESET applied (the Model tab's fit badges
    and the Settings tab start from the same values)."""
    from ..config import RunConfig, apply_preset

    return apply_preset(RunConfig(), START_PRESET)


def config_from_values(names: list[str], values: list):
    """The RunConfig a form describes; unknown-to-the-form fields keep their defaults."""
    from ..config import RunConfig

    return RunConfig(**dict(zip(names, values)))
