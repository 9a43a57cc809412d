"""Writing files and folders so that a reader never sees half of one: write beside the target, then rename.

A rename within one folder is atomic: a crash, a full disk or a second process reading at the same moment sees
the old version or the new one, never a mix. Used for status.json, the speed record, adapter zips, merged models,
the tokenised-data cache and the converted bundled model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing_file(path: str | Path) -> Iterator[Path]:
    """`with replacing_file(path) as tmp:` write tmp; when the block ends without an error, tmp replaces path.
    On an error tmp is removed and the error raised; path is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temp file
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Replace path's content with text, atomically (see replacing_file)."""
    with replacing_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """`with replacing_folder(target) as tmp:` fill the new folder tmp (beside target, so the rename stays on one
    disk); when the block ends without an error, an old target is removed and tmp takes its name. On an error tmp
    is removed and the error raised; target is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
