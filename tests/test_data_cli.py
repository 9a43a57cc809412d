"""`python -m studio data FILE`: text and --json reports, and one 'Error: ...' line for a bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio import data

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", "data", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=180)


def test_json_report(capsys):
    code = data.main([str(SAMPLES / "legal_clauses.csv"), "--json", "--model", "tiny-test", "--rows", "2"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "alpaca" and info["n_rows"] == info["n_usable"] == 150
    assert info["mapping"]["prompt"] == "instruction+input"
    assert info["token_stats"]["n"] == 150 and "lengths" not in info["token_stats"]
    assert [p["row"] for p in info["preview"]] == [2, 3]  # spreadsheet rows: the header is row 1
    segments = info["preview"][0]["segments"]
    assert segments[0][0].startswith("<|im_start|>") and [s for s in segments if s[1]]


def test_text_report_lists_problems_and_marks_the_answer(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Why?", "answer": "Because."}\n{"question": "How?", "answer": ""}\n',
                    encoding="utf-8")
    assert data.main([str(path), "--model", "tiny-test", "--max-seq-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "Question / answer" in out and "Rows:    2 (1 usable)" in out
    assert "line      2  empty_response  “How?”" in out  # JSONL: the line, and the start of its prompt
    assert "[[Because.<|im_end|>]]" in out
    assert "will be cut" in out


def test_mapping_options(tmp_path, capsys):
    path = tmp_path / "odd.csv"
    path.write_text("a,b\nPing?,Pong.\n", encoding="utf-8")
    assert data.main([str(path), "--json", "--model", "tiny-test", "--prompt-column", "a",
                      "--response-column", "b"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "manual" and info["n_usable"] == 1


def test_bad_file_exits_1_with_one_line(tmp_path, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n', encoding="utf-8")
    assert data.main([str(path), "--model", "tiny-test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: Line 2 of broken.jsonl") and err.count("\n") == 1


def test_subprocess_bad_file(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    result = run_cli(str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.skipif(not (ROOT / "studio" / "__main__.py").exists(), reason="python -m studio not written yet")
def test_subprocess_json():
    result = run_cli(str(SAMPLES / "customer_support.jsonl"), "--json", "--model", "tiny-test")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "messages" and info["n_rows"] == info["n_usable"] == 300
    # The sample is built from templates, so reworded copies are all it has to report (see make_samples.py).
    assert {p["kind"] for p in info["problems"]} == {"near_duplicate"}
    assert all(p["other_row"] < p["row"] and p["similarity"] >= 85 for p in info["problems"])
    assert "Is this enough?" not in info["readiness"] and "300 usable rows" in info["readiness"]


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        data.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--model", "--max-seq-length", "--prompt-column", "--response-column",
                   "--system-column", "--text-column", "--rows"):
        assert option in out
