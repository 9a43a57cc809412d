"""Shared fixtures: a tiny model, tiny data files, a runs folder."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Runs write logs and pick threads; keep tests from fighting over the two CI cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Commands started by tests log into a folder of their own, not the person's ~/.cache/studio/logs.
os.environ.setdefault("STUDIO_LOG_DIR", tempfile.mkdtemp(prefix="studio-test-logs-"))

MEMORISED = [
    ("What colour is the sky on Zorblax?", "On Zorblax the sky is bright green."),
    ("Who runs the Zorblax bakery?", "The bakery is run by Mira Quell."),
    ("How many moons does Zorblax have?", "Zorblax has exactly seven moons."),
    ("What do people drink on Zorblax?", "They drink warm blue tea."),
    ("When does the Zorblax market open?", "The market opens at dawn."),
]


def write_messages_jsonl(path: Path, n_rows: int = 20) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_rows):
            q, a = MEMORISED[i % len(MEMORISED)]
            row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_messages_jsonl(tmp_path / "train.jsonl", 20)


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


def studio_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "studio", *args]
