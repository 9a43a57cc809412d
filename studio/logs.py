"""Where a command's output goes: a person reads our own sentences; everything else goes to a log file.

Libraries print to stderr in ways no setting silences all at once: Python warnings, transformers' own
handler, tqdm progress bars, bitsandbytes' or torch's C++ code writing straight to file descriptor 2, and
tracebacks of failures we expect offline (a hub model checked without a network). So a command started as
`python -m studio ...` points descriptor 2 itself at a log file, and keeps a private copy of the terminal's
stderr for the sentences we mean for the person (`tell_user`, and argparse's usage errors through
`ArgumentParser`). In-process callers (tests, the UI calling a module's main) are left untouched: until
`send_stderr_to_log` runs, `tell_user` writes to the ordinary sys.stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Progress bars of the hub client, transformers' downloads and datasets: a person watching a command sees our
# own progress lines, and a log file full of carriage returns helps nobody.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}

_user_stream: TextIO | None = None  # the terminal's stderr, once descriptor 2 points at the log
_log_path: Path | None = None


def log_dir() -> Path:
    """$STUDIO_LOG_DIR, else logs/ inside the studio cache ($STUDIO_CACHE or ~/.cache/studio)."""
    if os.environ.get("STUDIO_LOG_DIR"):
        return Path(os.environ["STUDIO_LOG_DIR"]).expanduser()
    cache = os.environ.get("STUDIO_CACHE") or Path.home() / ".cache" / "studio"
    return Path(cache).expanduser() / "logs"


def send_stderr_to_log(target: str | Path) -> Path:
    """Point descriptor 2 (and so sys.stderr, warnings and the logging module) at a log file: logs/<target>.log
    for a command name, or the path given (a training worker moves to its run's worker.log once it has one).

    Returns the log's path. Safe to call again: a later call only moves the log."""
    global _user_stream, _log_path
    path = Path(target) if isinstance(target, Path) else log_dir() / f"{target}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return Path(os.devnull)  # an unwritable cache must not stop the command; its noise then stays visible
    sys.stderr.flush()
    if _user_stream is None:
        _user_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(fd, 2)
    os.close(fd)
    _log_path = path
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)  # sys.stderr writes to descriptor 2: the log file
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise, even in a log
    return path


def log_path() -> Path | None:
    """The log file descriptor 2 goes to, once send_stderr_to_log has run."""
    return _log_path


def user_stream() -> TextIO:
    return _user_stream or sys.stderr


def tell_user(message: str) -> None:
    """One line for the person at the terminal (an 'Error: ...' sentence), wherever descriptor 2 points."""
    stream = user_stream()
    print(message, file=stream, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors on the person's terminal, not in the log that stderr now is."""

    def _print_message(self, message: str, file=None) -> None:
        if message and file is sys.stderr:
            file = user_stream()
        super()._print_message(message, file)
