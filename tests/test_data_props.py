"""Property tests: whatever bytes or JSON shape a user uploads, the reader returns a report or raises
DataError, never anything else; the split partitions; the masking keeps exactly the answers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import data
from studio.data import Chat, DataError, DataReport, Text, load_data
from studio.data import load as data_load
from studio.models import load_tokenizer

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTENSIONS = [".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".xlsx"]


@pytest.fixture(autouse=True, scope="module")
def strict_reader():
    """Unexpected exceptions propagate instead of being turned into a generic DataError, so bugs show."""
    old, data_load.STRICT = data_load.STRICT, True
    yield
    data_load.STRICT = old


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-test")


def read(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            report = load_data(path)
        except DataError as err:
            message = str(err)
            assert message and "\n" not in message and "Traceback" not in message
            return None
    check_report(report)
    return report


def check_report(report: DataReport) -> None:
    assert report.n_rows == len(report.examples) >= 1
    assert len(report.preview) == min(report.n_rows, data.PREVIEW_ROWS)
    assert len(report.rows) == report.n_rows and report.rows == sorted(set(report.rows))
    for p in report.problems:
        assert p.row >= 1 and p.message
        assert report.rows[p.index] == p.row if p.index >= 0 else p.kind == "blank_row" and p.row not in report.rows
    for example in report.usable():
        match example:
            case Text():
                assert isinstance(example.text, str) and example.text
            case Chat():
                roles = [m["role"] for m in example.messages]
                assert set(roles) <= {"system", "user", "assistant"} and roles[-1] == "assistant"
                assert all(isinstance(m["content"], str) for m in example.messages)
            case _:
                raise AssertionError(f"not a typed example: {example!r}")
    assert report.good_examples() == [e.to_dict() for e in report.usable()]  # the dict shape at the boundary


@SETTINGS
@given(content=st.binary(max_size=2000), suffix=st.sampled_from(EXTENSIONS))
def test_random_bytes(content, suffix):
    read(content, suffix)


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from('ab ,;\t"\n\r{}[]:\\é'), max_size=300),
       suffix=st.sampled_from([".csv", ".tsv", ".txt", ".json", ".jsonl"]))
def test_random_text_with_syntax_characters(text, suffix):
    read(text.encode("utf-8"), suffix)


NAMES = st.sampled_from(["prompt", "completion", "instruction", "input", "output", "messages", "conversations",
                         "text", "role", "content", "from", "value", "question", "answer", "system", "x", ""])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(NAMES, children, max_size=5),
    max_leaves=30,
)


@SETTINGS
@given(value=JSON)
def test_random_json_shapes(value):
    read(json.dumps(value).encode(), ".json")


@SETTINGS
@given(rows=st.lists(JSON, min_size=1, max_size=8))
def test_random_jsonl_rows(rows):
    read("\n".join(json.dumps(r) for r in rows).encode(), ".jsonl")


TURN = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool", 3]),
                              "content": st.one_of(st.text(max_size=30), st.none(), st.integers())})


@SETTINGS
@given(conversations=st.lists(st.lists(TURN, max_size=6), min_size=1, max_size=5))
def test_random_conversations(conversations):
    read("\n".join(json.dumps({"messages": c}) for c in conversations).encode(), ".jsonl")


@SETTINGS
@given(n=st.integers(0, 200), fraction=st.floats(0, 0.5), seed=st.integers(0, 2**31 - 1))
def test_split_partitions(n, fraction, seed):
    examples = [{"text": str(i)} for i in range(n)]
    train, val = data.split_examples(examples, fraction, seed)
    assert sorted(train + val, key=lambda e: int(e["text"])) == examples
    assert (train, val) == data.split_examples(examples, fraction, seed)
    if n >= 2 and fraction > 0:
        assert train and val


WORDS = st.text(alphabet=st.sampled_from("abcdefgh XYZ.,!?é\n"), min_size=1, max_size=40).filter(str.strip)


@settings(max_examples=50, deadline=None)
@given(pairs=st.lists(st.tuples(WORDS, WORDS), min_size=1, max_size=4), system=st.none() | WORDS)
def test_masking_keeps_exactly_the_answers(tok, pairs, system):
    messages = [{"role": "system", "content": system.strip()}] if system else []
    for question, answer in pairs:
        messages += [{"role": "user", "content": question.strip()}, {"role": "assistant", "content": answer.strip()}]
    enc = data.encode_example({"messages": messages}, tok, 4096)
    trained = [t for t, label in zip(enc["input_ids"], enc["labels"]) if label != -100]
    assert tok.decode(trained) == "".join(a.strip() + "<|im_end|>" for _, a in pairs)
