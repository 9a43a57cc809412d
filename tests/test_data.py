"""studio.data: every format detected and normalised, per-row problems, clear errors, masking, split."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from studio import data
from studio.config import RunConfig
from studio.data import Chat, ColumnMapping, DataError, Text, encode_example, load_data, render_segments, split_examples
from studio.models import load_tokenizer

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
EOS = "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-test")


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def turns(example: Chat) -> list[tuple[str, str]]:
    assert isinstance(example, Chat), example
    return [(m["role"], m["content"]) for m in example.messages]


def one_sentence(message: str) -> str:
    """User-facing errors are one line, one sentence with a fix, no Python noise."""
    assert "\n" not in message and "Traceback" not in message, message
    assert message.endswith("."), message
    assert ": " in message or "," in message, message  # the problem, then the fix
    assert len(message) < 320, message
    return message


def data_error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_data(path, **kwargs)
    return one_sentence(str(info.value))


# --- formats ---------------------------------------------------------------------------------
def test_alpaca_csv_joins_instruction_and_input(tmp_path):
    path = write_csv(tmp_path / "a.csv", ["instruction", "input", "output"],
                     [["Translate to French.", "Good morning", "Bonjour"], ["Name a primary colour.", "", "Red"]])
    report = load_data(path)
    assert report.format == "alpaca"
    assert report.mapping == ColumnMapping(prompt="instruction+input", response="output")
    assert report.n_rows == 2 and report.problems == []
    assert turns(report.examples[0]) == [("user", "Translate to French.\n\nGood morning"), ("assistant", "Bonjour")]
    assert turns(report.examples[1]) == [("user", "Name a primary colour."), ("assistant", "Red")]
    assert list(report.preview.columns) == ["instruction", "input", "output"]
    assert report.preview.iloc[0]["output"] == "Bonjour"


def test_prompt_completion_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "completion": "4"}, {"prompt": "3+3?",
                                                                                          "completion": "6"}])
    report = load_data(path)
    assert report.format == "prompt_completion"
    assert turns(report.examples[1]) == [("user", "3+3?"), ("assistant", "6")]


def test_question_answer_json_array_with_system(tmp_path):
    rows = [{"System": "Be brief.", "Question": "Capital of France?", "Answer": "Paris."}]
    report = load_data(write(tmp_path / "qa.json", json.dumps(rows)))
    assert report.format == "question_answer"
    assert report.mapping == ColumnMapping(prompt="Question", response="Answer", system="System")
    assert turns(report.examples[0]) == [("system", "Be brief."), ("user", "Capital of France?"),
                                         ("assistant", "Paris.")]


@pytest.mark.parametrize("prompt,response", [("input", "output"), ("query", "response"), ("context", "response"),
                                             ("user", "assistant"), ("human", "gpt"), ("request", "reply")])
def test_similar_column_pairs(tmp_path, prompt, response):
    path = write_csv(tmp_path / "pairs.csv", ["id", prompt, response], [["1", "Hello?", "Hi!"]])
    report = load_data(path)
    assert report.format == "pairs"
    assert (report.mapping.prompt, report.mapping.response) == (prompt, response)
    assert turns(report.examples[0]) == [("user", "Hello?"), ("assistant", "Hi!")]


def test_openai_messages_jsonl(tmp_path):
    row = {"messages": [{"role": "system", "content": "You help."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]}
    report = load_data(write_jsonl(tmp_path / "m.jsonl", [row]))
    assert report.format == "messages"
    # the trailing question has no answer to learn from, so it is dropped
    assert turns(report.examples[0]) == [("system", "You help."), ("user", "Hi"), ("assistant", "Hello!")]


def test_sharegpt_json(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "Cook."}, {"from": "human", "value": "Eggs?"},
                               {"from": "gpt", "value": "Boil 7 min."}, {"from": "human", "value": "Soft?"},
                               {"from": "gpt", "value": "6 min."}]}]
    report = load_data(write(tmp_path / "s.json", json.dumps(rows)))
    assert report.format == "sharegpt"
    assert turns(report.examples[0]) == [("system", "Cook."), ("user", "Eggs?"), ("assistant", "Boil 7 min."),
                                         ("user", "Soft?"), ("assistant", "6 min.")]


def test_messages_column_as_json_text_in_csv(tmp_path):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    report = load_data(write_csv(tmp_path / "m.csv", ["messages"], [[json.dumps(msgs)]]))
    assert report.format == "messages"
    assert turns(report.examples[0]) == [("user", "Hi"), ("assistant", "Hello")]


def test_text_column_and_txt_files(tmp_path):
    report = load_data(write_csv(tmp_path / "t.csv", ["text", "source"], [["First doc.", "a"], ["Second.", "b"]]))
    assert report.format == "text" and report.examples == [Text("First doc."), Text("Second.")]
    paragraphs = load_data(write(tmp_path / "p.txt", "Para one\ncontinues.\n\n\nPara two.\n"))
    assert paragraphs.format == "text"
    assert paragraphs.examples == [Text("Para one\ncontinues."), Text("Para two.")]
    lines = load_data(write(tmp_path / "l.txt", "line one\nline two\r\nline three"))
    assert [e.text for e in lines.examples] == ["line one", "line two", "line three"]


def test_json_object_of_arrays_and_wrapped_list(tmp_path):
    columns = {"prompt": ["a", "b"], "completion": ["A", "B"]}
    report = load_data(write(tmp_path / "cols.json", json.dumps(columns)))
    assert report.format == "prompt_completion" and report.n_rows == 2
    wrapped = {"version": 2, "data": [{"question": "q", "answer": "a"}]}
    report = load_data(write(tmp_path / "wrapped.json", json.dumps(wrapped)))
    assert report.format == "question_answer" and report.n_rows == 1
    # a .json file that is really JSON Lines
    report = load_data(write(tmp_path / "lines.json", '{"prompt": "a", "completion": "b"}\n' * 2))
    assert report.n_rows == 2 and any("JSONL" in n for n in report.notes)


def test_tsv_and_semicolon_csv(tmp_path):
    report = load_data(write_csv(tmp_path / "t.tsv", ["prompt", "completion"], [["a, b", "c"]], delimiter="\t"))
    assert turns(report.examples[0]) == [("user", "a, b"), ("assistant", "c")]
    report = load_data(write(tmp_path / "semi.csv", "question;answer\nWhy?;Because.\n"))
    assert turns(report.examples[0]) == [("user", "Why?"), ("assistant", "Because.")]


def test_parquet_and_xlsx(tmp_path):
    import pandas as pd

    pd.DataFrame({"instruction": ["Add 2 and 3.", "Spell cat."], "output": [5, 3]}).to_parquet(tmp_path / "d.parquet")
    report = load_data(tmp_path / "d.parquet")
    assert report.format == "alpaca" and turns(report.examples[1]) == [("user", "Spell cat."), ("assistant", "3")]
    frame = pd.DataFrame({"instruction": ["Add 2 and 3.", "Spell cat."], "output": [5, "c-a-t"]})
    frame.to_excel(tmp_path / "d.xlsx", index=False)
    report = load_data(tmp_path / "d.xlsx")
    assert report.format == "alpaca"
    assert turns(report.examples[0]) == [("user", "Add 2 and 3."), ("assistant", "5")]
    messages = pd.DataFrame({"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]})
    messages.to_parquet(tmp_path / "m.parquet")
    assert load_data(tmp_path / "m.parquet").format == "messages"


def test_unknown_columns_then_manual_mapping(tmp_path):
    path = write_csv(tmp_path / "odd.csv", ["col_a", "col_b", "sys"], [["Ping?", "Pong.", "Be terse."]])
    report = load_data(path)
    assert report.format == "unknown"
    assert report.good_examples() == [] and "column mapping" in report.message
    mapped = load_data(path, ColumnMapping(prompt="col_a", response="col_b", system="sys"))
    assert mapped.format == "manual"
    assert turns(mapped.examples[0]) == [("system", "Be terse."), ("user", "Ping?"), ("assistant", "Pong.")]
    text = load_data(path, ColumnMapping(text="col_b"))
    assert text.examples == [Text("Pong.")]


def test_manual_mapping_errors(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["prompt", "completion"], [["a", "b"]])
    message = data_error(path, mapping=ColumnMapping(prompt="promt", response="completion"))
    assert "'promt'" in message and "prompt, completion" in message
    message = data_error(path, mapping=ColumnMapping(text="prompt", response="completion"))
    assert "either" in message
    # only one side given: the other one comes from detection
    report = load_data(path, ColumnMapping(response="prompt"))
    assert turns(report.examples[0]) == [("user", "a"), ("assistant", "a")]


def test_single_unnamed_column_is_text(tmp_path):
    report = load_data(write_csv(tmp_path / "one.csv", ["sentence_en"], [["Hello world."], ["Bye."]]))
    assert report.format == "text" and report.mapping.text == "sentence_en"


def test_shipped_samples():
    expected = {"customer_support.jsonl": "messages", "legal_clauses.csv": "alpaca",
                "recipes_sharegpt.json": "sharegpt", "product_notes.txt": "text"}
    assert {p.name for p in data.sample_files()} >= set(expected)
    for name, fmt in expected.items():
        path = SAMPLES / name
        assert path.stat().st_size < 2**20
        report = load_data(path)
        assert report.format == fmt, name
        assert not [p for p in report.problems if p.kind in data.UNUSABLE], name
    support = load_data(SAMPLES / "customer_support.jsonl")
    assert 250 <= support.n_rows <= 350
    answers = [e.answer for e in support.examples]
    assert all(a.endswith("— Brightwave Support") for a in answers)


# --- per-row problems --------------------------------------------------------------------------
def test_row_problems_with_row_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(data.checks, "MAX_EXAMPLE_CHARS", 200)
    rows = [
        {"prompt": "ok", "completion": "fine"},  # 1
        {"prompt": "no answer", "completion": "   "},  # 2 empty response
        {"prompt": "missing"},  # 3 missing column
        {"prompt": "list", "completion": ["a", "b"]},  # 4 wrong type
        {"prompt": "ok", "completion": "fine"},  # 5 duplicate of 1
        {"prompt": "long", "completion": "x" * 300},  # 6 oversized
        {"prompt": "", "completion": "orphan"},  # 7 empty prompt
        ["not", "an", "object"],  # 8 wrong type
        {"prompt": 7, "completion": 8.5},  # 9 numbers become text
    ]
    report = load_data(write_jsonl(tmp_path / "bad.jsonl", rows))
    kinds = {(p.row, p.kind) for p in report.problems}
    assert kinds == {(2, "empty_response"), (3, "missing_column"), (4, "wrong_type"), (5, "duplicate"),
                     (6, "oversized"), (7, "empty_prompt"), (8, "wrong_type")}
    assert [e is None for e in report.examples] == [False, True, True, True, False, True, True, True, False]
    assert turns(report.examples[8]) == [("user", "7"), ("assistant", "8.5")]
    assert len(report.good_examples()) == 3  # a repeat is kept unless the user drops it
    assert report.bad_rows() == [2, 3, 4, 5, 6, 7, 8]
    for p in report.problems:
        one_sentence(p.message)
    assert "'completion'" in next(p.message for p in report.problems if p.kind == "missing_column")
    assert "line 1" in next(p.message for p in report.problems if p.kind == "duplicate")  # JSONL: lines

    clean = data.write_clean_copy(report, tmp_path / "uploads")
    again = load_data(clean)
    assert again.format == "messages" and again.n_rows == 2 and again.problems == []


def test_conversation_problems(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}]},  # no answer
            {"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]},
            {"messages": "hello"},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Parts"}]},
                          {"role": "assistant", "content": "ok"}]}]
    report = load_data(write_jsonl(tmp_path / "c.jsonl", rows))
    assert report.format == "messages"
    assert [(p.row, p.kind) for p in report.problems] == [(1, "empty_response"), (2, "bad_message"),
                                                          (3, "wrong_type"), (4, "empty_response")]
    assert "'tool'" in report.problems[1].message
    assert turns(report.examples[4]) == [("user", "Parts"), ("assistant", "ok")]


def test_non_utf8_rows_are_decoded_and_flagged(tmp_path):
    raw = "prompt,completion\nCafé?,Oui\n".encode() + "Crème brûlée?,Non\n".encode("cp1252") + b"a,b\n"
    report = load_data(write(tmp_path / "enc.csv", raw))
    assert [(p.row, p.kind) for p in report.problems] == [(3, "encoding")]  # the spreadsheet row: header = 1
    assert turns(report.examples[1])[0] == ("user", "Crème brûlée?")
    assert turns(report.examples[0])[0] == ("user", "Café?")
    assert len(report.good_examples()) == 3
    assert any("Windows-1252" in n for n in report.notes)


def test_utf8_bom_and_utf16(tmp_path):
    text = "prompt,completion\nhé,ho\n"
    assert load_data(write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + text.encode())).columns == ["prompt", "completion"]
    assert load_data(write(tmp_path / "u16.csv", text.encode("utf-16"))).examples[0].prompt == "hé"


# --- bad files: one clear sentence -------------------------------------------------------------
def test_empty_and_blank_files(tmp_path):
    assert "0 bytes" in data_error(write(tmp_path / "zero.csv", b""))
    assert "whitespace" in data_error(write(tmp_path / "blank.jsonl", "\n \n"))
    assert "one example per paragraph" in data_error(write(tmp_path / "blank.txt", "\n\n\t\n"))


def test_binary_files(tmp_path):
    message = data_error(write(tmp_path / "sheet.csv", b"PK\x03\x04" + bytes(range(256)) * 4))
    assert "ZIP" in message and ".xlsx" in message
    assert "binary" in data_error(write(tmp_path / "noise.jsonl", bytes(range(256)) * 8))
    assert "PNG" in data_error(write(tmp_path / "img.json", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50))
    assert "Parquet" in data_error(write(tmp_path / "fake.parquet", b"prompt,completion\na,b\n"))
    assert "xlsx" in data_error(write(tmp_path / "fake.xlsx", b"prompt,completion\na,b\n"))
    assert "damaged" in data_error(write(tmp_path / "broken.xlsx", b"PK\x03\x04" + b"junk" * 50))


def test_truncated_json(tmp_path):
    full = json.dumps([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}])
    message = data_error(write(tmp_path / "cut.json", full[:-12]))
    assert "cut off" in message
    message = data_error(write(tmp_path / "typo.json", '[{"prompt": "a", "completion": "b",}]'))
    assert "line 1" in message and "not valid JSON" in message


def test_jsonl_with_one_broken_line(tmp_path):
    lines = ['{"prompt": "a", "completion": "b"}', "", '{"prompt": "c", "completion": "d"}',
             '{"prompt": "e", "completion": ', '{"prompt": "f", "completion": "g"}']
    message = data_error(write(tmp_path / "broken.jsonl", "\n".join(lines)))
    assert message.startswith("Line 4 of broken.jsonl")


def test_ragged_and_header_only_csv(tmp_path):
    message = data_error(write(tmp_path / "ragged.csv", "prompt,completion\na,b\nc,d,e\nf\n"))
    assert "Line 3" in message and "3 fields" in message and "header has 2" in message and "1 more" in message
    # trailing empty cells are what spreadsheets export: they are fine
    assert load_data(write(tmp_path / "trail.csv", "prompt,completion\na,b,,\n")).n_rows == 1
    message = data_error(write(tmp_path / "head.csv", "prompt,completion\n\n"))
    assert "header" in message and "no data rows" in message


def test_names_sizes_and_extensions(tmp_path):
    weird = write(tmp_path / "Données (final) №2 ✓.jsonl", '{"prompt": "a", "completion": "b"}\n')
    assert load_data(weird).n_rows == 1  # spaces, accents and symbols are fine
    assert "control" in data_error(write(tmp_path / "bad\tname.csv", "prompt,completion\na,b\n"))
    big = write(tmp_path / "big.csv", "prompt,completion\n" + "a,b\n" * 100)
    message = data_error(big, max_bytes=100)
    assert "limit" in message
    assert "not supported" in data_error(write(tmp_path / "notes.docx", "x"))
    assert "xlsx" in data_error(write(tmp_path / "old.xls", "x"))
    assert "no file extension" in data_error(write(tmp_path / "README", "x"))
    assert "does not exist" in data_error(tmp_path / "missing.csv")
    assert "folder" in data_error(tmp_path)


@pytest.mark.parametrize("content,words", [
    ("42", "single JSON number"), ("null", "single JSON null"), ("[]", "empty list"), ("{}", "empty JSON object"),
    ("[1, 2, 3]", "list of number"), ('{"a": [1, 2], "b": [1]}', "different lengths"),
    ('{"a": 1, "b": {"c": 2}}', "cannot read"), ("[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_json_shapes_that_are_not_examples(tmp_path, content, words):
    assert words in data_error(write(tmp_path / "shape.json", content))


# --- splitting and config --------------------------------------------------------------------
def test_split_is_deterministic_and_partitions():
    examples = [{"text": str(i)} for i in range(50)]
    train, val = split_examples(examples, 0.2, seed=1)
    assert (train, val) == split_examples(examples, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert sorted(e["text"] for e in train + val) == sorted(e["text"] for e in examples)
    assert split_examples(examples, 0.2, seed=2)[1] != val
    assert split_examples(examples, 0.0, seed=1) == (examples, [])
    assert [len(x) for x in split_examples(examples[:2], 0.01, seed=0)] == [1, 1]
    assert split_examples(examples[:1], 0.3, seed=0) == (examples[:1], [])


def test_load_examples(tmp_path):
    with pytest.raises(DataError, match="No training data: upload a file in the Data tab."):
        data.load_examples(RunConfig())
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)]
                       + [{"prompt": "bad", "completion": ""}])
    train, val = data.load_examples(RunConfig(data_path=str(path), validation_fraction=0.25, seed=3))
    assert (len(train), len(val)) == (15, 5)
    assert (train, val) == data.load_examples(RunConfig(data_path=str(path), validation_fraction=0.25, seed=3))
    # The dict shape at the boundary with code that has not switched (chat.py): the same rows, as dicts.
    dicts = data.load_for_config(RunConfig(data_path=str(path), validation_fraction=0.25, seed=3))
    assert dicts == ([e.to_dict() for e in train], [e.to_dict() for e in val])
    assert dicts[0][0] == {"messages": [{"role": "user", "content": train[0].prompt},
                                        {"role": "assistant", "content": train[0].answer}]}
    other = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "vq", "completion": "va"}])
    train, val = data.load_examples(RunConfig(data_path=str(path), validation_path=str(other)))
    assert len(train) == 20 and turns(val[0]) == [("user", "vq"), ("assistant", "va")]
    mapped = data.load_examples(RunConfig(data_path=str(path), prompt_column="completion",
                                            response_column="prompt", validation_fraction=0.0))[0]
    assert turns(mapped[0]) == [("user", "a0"), ("assistant", "q0")]
    empty = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "x", "completion": ""}])
    with pytest.raises(DataError, match="No usable rows"):
        data.load_examples(RunConfig(data_path=str(empty)))
    unknown = write_csv(tmp_path / "u.csv", ["a", "b"], [["1", "2"]])
    with pytest.raises(DataError, match="column mapping"):
        data.load_examples(RunConfig(data_path=str(unknown)))


def test_save_upload_stays_inside_uploads(tmp_path):
    source = write(tmp_path / "in.csv", "prompt,completion\na,b\n")
    uploads = tmp_path / "uploads"
    for evil in ["../../etc/passwd.csv", "..\\..\\x.csv", ".hidden.csv", "a/b/c.csv", "\x00nul.csv", "..", ""]:
        assert "/" not in data.safe_filename(evil) and not data.safe_filename(evil).startswith(".")

    target = data.save_upload(source, uploads)
    assert target.parent == uploads.resolve() and target.read_bytes() == source.read_bytes()
    assert data.save_upload(source, uploads) == target  # same content: no second copy
    other = write(tmp_path / "x" / "in.csv" if (tmp_path / "x").mkdir() is None else None, "prompt,completion\nc,d\n")
    second = data.save_upload(other, uploads)
    assert second != target and second.parent == uploads.resolve()


# --- encoding for training -------------------------------------------------------------------
def trained_runs(enc: dict) -> list[list[int]]:
    """Contiguous runs of tokens that carry a loss."""
    runs, current = [], []
    for token, label in zip(enc["input_ids"], enc["labels"]):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_masking_single_turn(tok):
    example = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there"},
                            {"role": "assistant", "content": "Hello! How can I help?"}]}
    enc = encode_example(example, tok, 512)
    assert len(enc["input_ids"]) == len(enc["labels"])
    runs = trained_runs(enc)
    assert [tok.decode(r) for r in runs] == ["Hello! How can I help?" + EOS]
    full = tok.apply_chat_template(example["messages"], tokenize=False)
    assert tok.decode(enc["input_ids"]) == full


def test_masking_multi_turn(tok):
    answers = ["Paris is the capital.", "About 2.1 million people\nlive there.", "Yes — the Louvre."]
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": answers[0]},
                {"role": "user", "content": "Population?"}, {"role": "assistant", "content": answers[1]},
                {"role": "user", "content": "Museums?"}, {"role": "assistant", "content": answers[2]}]
    enc = encode_example({"messages": messages}, tok, 1024)
    assert [tok.decode(r) for r in trained_runs(enc)] == [a + EOS for a in answers]
    everything = encode_example({"messages": messages}, tok, 1024, train_on_answers_only=False)
    assert everything["labels"] == everything["input_ids"] == enc["input_ids"]


def test_text_example_and_truncation(tok):
    enc = encode_example({"text": "Plain words for pre-training."}, tok, 512)
    assert enc["labels"] == enc["input_ids"] and enc["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(enc["input_ids"][:-1]) == "Plain words for pre-training."
    long = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok " * 300}]}
    cut = encode_example(long, tok, 64)
    assert len(cut["input_ids"]) == len(cut["labels"]) == 64
    assert all(label == -100 for label in cut["labels"])  # the cut keeps only the long prompt
    with pytest.raises(DataError):
        encode_example({"prompt": "x"}, tok, 10)


def test_fallback_rendering_without_chat_template(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2"}]
    text = data.render_chat(messages, plain)
    assert text.startswith("### System:\nS\n### User:\nQ1\n### Assistant:\nA1")
    enc = encode_example({"messages": messages}, plain, 512)
    assert [plain.decode(r) for r in trained_runs(enc)] == ["A1" + EOS, "A2" + EOS]
    assert data.render_chat(messages[:2], plain, add_generation_prompt=True).endswith("### Assistant:\n")


def test_render_segments_match_the_template(tok):
    messages = [{"role": "user", "content": "Hi <b>"}, {"role": "assistant", "content": "Hello & welcome"},
                {"role": "user", "content": "More"}, {"role": "assistant", "content": "Sure"}]
    segments = render_segments({"messages": messages}, tok)
    assert "".join(t for t, _ in segments) == tok.apply_chat_template(messages, tokenize=False)
    assert [t for t, trained in segments if trained] == ["Hello & welcome" + EOS, "Sure" + EOS]
    assert render_segments({"text": "abc"}, tok) == [("abc" + EOS, True)]
    assert all(trained for _, trained in render_segments({"messages": messages}, tok, train_on_answers_only=False))


def test_token_stats(tok):
    examples = [{"text": " ".join(["word"] * n)} for n in range(1, 101)] + [None]
    stats = data.token_stats(examples, tok, max_seq_length=50)
    assert stats["n"] == stats["n_total"] == 100 and not stats["sampled"]
    assert stats["min"] == 2 and stats["max"] == 101  # n words + eos
    assert stats["n_over"] == 51 and len(stats["lengths"]) == 100
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    sampled = data.token_stats(examples, tok, 50, sample=10)
    assert sampled["n"] == 10 and sampled["sampled"] and sampled == data.token_stats(examples, tok, 50, sample=10)
    assert data.token_stats([], tok, 50)["n"] == 0
    assert "will be cut" in data.describe_stats(stats)


def test_a_long_upload_name_is_cut_in_its_stem_and_keeps_its_extension(tmp_path):
    assert data.safe_filename("a" * 300 + ".csv") == "a" * 116 + ".csv"
    assert data.safe_filename("x" * 300).startswith("x") and len(data.safe_filename("x" * 300)) == 120
    source = tmp_path / ("customer questions " * 12 + ".jsonl")
    source.write_text('{"prompt": "Hi", "response": "Hello"}\n')
    saved = data.save_upload(source, tmp_path / "uploads")
    assert saved.suffix == ".jsonl" and len(saved.name) <= 120


# --- preference pairs: a Preference (prompt, chosen, rejected); supervised training reads its chosen conversation -
def test_preference_columns_become_pairs_and_say_how_they_train(tmp_path):
    path = write_csv(tmp_path / "prefs.csv", ["prompt", "chosen", "rejected"],
                     [["Capital of France?", "Paris.", "Lyon."], ["2+2?", "4", "5"]])
    report = load_data(path)
    assert report.format == "preference" and "Preference" in report.format_label
    first = report.examples[0]
    assert isinstance(first, data.Preference)
    assert first.prompt_messages == [{"role": "user", "content": "Capital of France?"}]
    assert (first.chosen, first.rejected) == ("Paris.", "Lyon.")
    assert turns(first) == [("user", "Capital of France?"), ("assistant", "Paris.")]  # what supervised training reads
    assert data.formats.PREFERENCE_NOTE in report.notes and "Supervised" in data.formats.PREFERENCE_NOTE
    plain = load_data(write_csv(tmp_path / "plain.csv", ["prompt", "chosen"], [["Capital?", "Paris."]]))
    assert plain.format == "pairs" and data.formats.PREFERENCE_NOTE not in plain.notes


def test_preference_conversations_train_on_the_chosen_conversation(tmp_path):
    rows = [{"prompt": "Hi?",
             "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]},
            {"prompt": "Bye?", "chosen": [{"role": "assistant", "content": "Goodbye!"}],  # answer only: prompt joins
             "rejected": [{"role": "assistant", "content": "Whatever."}]}]
    report = load_data(write_jsonl(tmp_path / "prefs.jsonl", rows))
    assert report.format == "preference_chat" and data.formats.PREFERENCE_NOTE in report.notes
    assert turns(report.examples[0]) == [("user", "Hi?"), ("assistant", "Hello!")]
    assert turns(report.examples[1]) == [("user", "Bye?"), ("assistant", "Goodbye!")]
    assert [e.rejected for e in report.examples] == ["Go away.", "Whatever."]


def test_anthropic_hh_pairs_share_the_prompt_and_differ_in_the_last_answer(tmp_path):
    talk = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Tell me a joke."}]
    rows = [{"chosen": [*talk, {"role": "assistant", "content": "Why did the cow cross the road?"}],
             "rejected": [*talk, {"role": "assistant", "content": "No."}]}]
    pair = load_data(write_jsonl(tmp_path / "hh.jsonl", rows)).examples[0]
    assert pair.prompt_messages == talk and pair.chosen == "Why did the cow cross the road?" and pair.rejected == "No."
    # The cleaned copy's dict shape reads back as the same pair.
    assert data.as_example(pair.to_dict()) == pair
    assert pair.trl_row() == {"prompt": talk, "chosen": [{"role": "assistant", "content": pair.chosen}],
                              "rejected": [{"role": "assistant", "content": "No."}]}


def test_pairs_with_nothing_to_prefer_are_row_problems_in_plain_words(tmp_path):
    path = write_csv(tmp_path / "prefs.csv", ["prompt", "chosen", "rejected"],
                     [["Capital of France?", "Paris.", "Lyon."], ["2+2?", "4", "4"], ["3+3?", "6", ""],
                      ["4+4?", "", "9"]])
    report = load_data(path)
    kinds = {p.row: p.kind for p in report.problems}
    assert kinds == {3: "same_answers", 4: "empty_rejected", 5: "empty_response"}
    assert report.examples[1:] == [None, None, None]  # unusable: dropped from training
    same = next(p for p in report.problems if p.kind == "same_answers")
    assert "same" in same.message and "drop the row" in same.message and same.quote == "2+2?"
    chat = [{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
             "rejected": [{"role": "user", "content": "Hi"}]}]  # the rejected conversation has no answer
    problems = load_data(write_jsonl(tmp_path / "hh.jsonl", chat)).problems
    assert [p.kind for p in problems] == ["empty_rejected"] and "rejected answer is empty" in problems[0].message


def test_a_pipe_is_not_called_a_folder(tmp_path):
    import os

    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    message = one_sentence(data_error(fifo))
    assert "not a regular file" in message and "folder" not in message
    assert "folder" in data_error(tmp_path)
