"""Files: the cleaned copy the Data tab trains on, uploads saved under safe names, the shipped samples."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

from ..errors import DataError
from .load import DataReport
from .readers import EXTENSIONS

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "samples"


def write_clean_copy(report: DataReport, folder, drop_duplicates: bool = True) -> Path:
    """The usable rows (without repeats) as normalised JSONL in `folder`; the Data tab points data_path at it."""
    repeats = report.indexes_with("duplicate") if drop_duplicates else set()
    good = [e for i, e in enumerate(report.examples) if e is not None and i not in repeats]
    if not good:
        raise DataError(report.message or f"No usable rows in {Path(report.path).name}: there is nothing to keep.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(Path(report.path).stem).removesuffix(".clean")
    target = folder / f"{stem}.clean.jsonl"
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for example in good:
            f.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


def safe_filename(name: str, default: str = "data") -> str:
    """A file name safe to create anywhere: no folders, no control characters, no leading dots."""
    name = unicodedata.normalize("NFKC", str(name)).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if ch.isalnum() or ch in "._- ()" else "_" for ch in name)
    name = re.sub(r"\s+", " ", name).strip(" .") or default
    # Cut a long name in its stem: the extension is how the file is read later (".csv" cut to ".c" is unreadable).
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and len(suffix) <= 10:
        return f"{stem[:120 - len(suffix) - 1].rstrip(' .') or default}.{suffix}"
    return name[:120]


def save_upload(source, uploads_dir) -> Path:
    """Copy an uploaded (temporary) file into uploads_dir under a sanitised name; never outside it."""
    source = Path(source)
    folder = Path(uploads_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_filename(source.name)
    stem, suffix = Path(name).stem or "data", Path(name).suffix.lower()
    target = folder / f"{stem}{suffix}"
    counter = 1
    while target.exists() and not _same_file(source, target):
        counter += 1
        target = folder / f"{stem}-{counter}{suffix}"
    if target.resolve().parent != folder:
        raise DataError(f"The file name {source.name!r} cannot be used: rename the file and upload it again.")
    if not _same_file(source, target):
        try:
            shutil.copyfile(source, target)
        except OSError as err:
            raise DataError(f"The upload could not be saved ({err.strerror or err}): check the free disk "
                            f"space.") from None
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and (a.resolve() == b.resolve() or (a.stat().st_size == b.stat().st_size
                                                               and a.read_bytes() == b.read_bytes()))
    except OSError:
        return False


def sample_files() -> list[Path]:
    """The shipped sample datasets (assets/samples), sorted by name."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)

