"""What a client may point at, and files the app writes for people to open.

A browser or API client of the web app sends paths as plain strings (a training file, a validation file, a prompt
file, a model folder). Each one must resolve, after symlinks, inside the app's own folders: the uploads folder, the
shipped samples (assets/samples) or the runs folder. The UI calls these checks in every handler that takes a path;
the CLI does not (a person at the terminal may read any file they can). No gradio here.

CSV files the app writes escape cells that a spreadsheet would run as a formula (OWASP "CSV injection").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError

UPLOAD_FIX = "upload the file on the Data tab"
MODEL_FIX = ("pick a model from the list or type a hub id; a model folder elsewhere on this machine trains with "
             "python -m studio train")
# Cells starting with these are formulas to Excel, LibreOffice and Google Sheets (OWASP adds tab and CR).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


class OutsidePathError(UserError):
    """A path from a client that lies outside the app's folders (or is no path at all)."""


def app_roots(runs_dir, uploads_dir) -> tuple[Path, ...]:
    """The folders a client's path may lie in: uploads, the shipped samples, the runs."""
    from .data import SAMPLES_DIR

    return Path(uploads_dir), SAMPLES_DIR, Path(runs_dir)


def _shown(raw: str) -> str:
    name = Path(raw).name or raw
    return name if len(name) <= 80 else name[:77] + "..."


def check_client_path(path, allowed_roots: Iterable[Path], fix: str = UPLOAD_FIX, what: str = "The file") -> Path:
    """`path` resolved (symlinks followed), when it lies inside one of `allowed_roots`; else OutsidePathError.

    The answer is the same whether or not the file exists, so a client learns nothing about the rest of the disk.
    Use the returned path, not the string the client sent."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise OutsidePathError(f"No file was given: {fix}.")
    raw = os.fspath(path)
    try:
        resolved = Path(raw).resolve()
        roots = [Path(root).resolve() for root in allowed_roots]
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop, a name too long
        raise OutsidePathError(f"{what} {_shown(raw)!r} is not a valid path: {fix}.") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise OutsidePathError(f"{what} {_shown(raw)} is outside the app's folders: {fix}.")
    return resolved


def is_local_model(name: str) -> bool:
    """Whether a model choice names a folder on this machine rather than the bundled model or a hub id."""
    from .config import BUNDLED_MODEL, TINY_TEST_MODEL

    if name in (BUNDLED_MODEL, TINY_TEST_MODEL):
        return False
    if name.startswith((".", "/", "~", "\\")) or os.path.isabs(name):
        return True
    try:
        return Path(name).expanduser().exists()  # as models.resolve_model_source decides: a folder wins
    except (OSError, ValueError):
        return True


def check_client_model(name, allowed_roots: Iterable[Path]) -> str:
    """The model choice to use: unchanged for the bundled model or a hub id; a local folder must lie in the
    app's folders (runs/<id>/merged, for instance) and comes back resolved."""
    if not isinstance(name, str):
        raise OutsidePathError(f"The model must be a name or a folder: {MODEL_FIX}.")
    if not is_local_model(name):
        return name
    return str(check_client_path(os.path.expanduser(name), allowed_roots, fix=MODEL_FIX, what="The model folder"))


def check_config_paths(config, allowed_roots: Iterable[Path]):
    """A RunConfig from a client with its model folder, training and validation files checked and resolved."""
    roots = list(allowed_roots)
    changes = {"model": check_client_model(config.model, roots)}
    if config.data_path:
        changes["data_path"] = str(check_client_path(config.data_path, roots))
    if config.validation_path:
        changes["validation_path"] = str(check_client_path(
            config.validation_path, roots, fix="upload it as the separate validation file on the Data tab"))
    if all(getattr(config, name) == value for name, value in changes.items()):
        return config
    return dataclasses.replace(config, **changes)


# --- CSV for spreadsheets ---------------------------------------------------------------------
def csv_cell(value):
    """A cell a spreadsheet shows as text: a string starting with = + - @ (or tab, CR, LF) gets a leading single
    quote (OWASP). Numbers and other values are kept as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(frame, path) -> Path:
    """Write a pandas DataFrame as CSV (no index) with every cell and header passed through csv_cell."""
    safe = frame.map(csv_cell).rename(columns=csv_cell)
    path = Path(path)
    safe.to_csv(path, index=False)
    return path
