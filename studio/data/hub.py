"""Hub datasets: `org/name`, optionally `org/name:subset` and `@split` (default train), read through
datasets.load_dataset when the machine is online. Offline it is one sentence, said within a few seconds."""

from __future__ import annotations

import logging
import os
import re
import threading

from ..errors import DataError
from .readers import EXTENSIONS, _Table, _table_from_values

log = logging.getLogger(__name__)

HUB_HOST = ("huggingface.co", 443)
REACH_TIMEOUT_S = 3.0  # DNS and connect together; a machine without network must not wait longer
HUB_ROWS = 200_000  # at most this many rows are read from a hub dataset
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?::(?P<subset>[\w.-]+))?(?:@(?P<split>[\w.\-\[\]:%]+))?$")


def parse_hub_id(spec: str) -> tuple[str, str, str] | None:
    """(repo, subset, split) for 'org/name[:subset][@split]', None for anything else (a file path, a typo)."""
    spec = str(spec).strip()
    match = _ID.match(spec)
    if not match or any(spec.lower().endswith(suffix) for suffix in EXTENSIONS):
        return None
    return match["repo"], match["subset"] or "", match["split"] or "train"


def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the hub answers a TCP connect within timeout (DNS included, in a thread it may outlive)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") not in (
            "", "0"):
        return False
    import socket

    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def read_hub(spec: str) -> _Table:
    """The dataset's split as a table; DataError with the fix when offline or when the hub refuses it."""
    repo, subset, split = parse_hub_id(spec) or (spec, "", "train")
    if not hub_reachable():
        raise DataError(f"{repo} looks like a Hugging Face dataset, but this machine cannot reach the hub: download "
                        f"it where there is a network and upload the file here, or check the name if you meant a "
                        f"file.")
    import datasets

    try:
        data = datasets.load_dataset(repo, subset or None, split=split)
    except Exception as err:  # noqa: BLE001 - the hub's many errors become one sentence; details to the log
        log.info("load_dataset(%r, %r, split=%r) failed", repo, subset, split, exc_info=True)
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DataError(f"The hub dataset {repo} could not be loaded ({reason}): check its name, subset and split "
                        f"(org/name:subset@split).") from None
    records = data.select(range(min(len(data), HUB_ROWS))).to_list()
    if not records:
        raise DataError(f"The split {split!r} of {repo} is empty: choose another split with @split.")
    table = _table_from_values(records, repo, set())
    if len(data) > HUB_ROWS:
        table.notes.append(f"Read the first {HUB_ROWS:,} of {len(data):,} rows of {repo}.")
    table.notes.append(f"Read from the Hugging Face hub: {repo}" + (f", subset {subset}" if subset else "") +
                       f", split {split}.")
    return table
