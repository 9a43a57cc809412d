"""Issue 15: the problems that spoil a small fine-tune, found at the row the user's own file shows, quiet where
there are none; the fixes write a clean copy in the user's format; the split never leaks."""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import openpyxl
import pytest

from studio import data
from studio.config import RunConfig, apply_preset
from studio.data import checks, fixes, hub, load_data, personal, similar
from studio.models import load_tokenizer

SIGN_OFF = "Kind regards, the Riverside clinic team"
VOCAB = ("appointment blood test result vaccine dentist filling crown referral prescription pharmacy refill allergy "
         "physio knee shoulder scan xray parking invoice insurance claim deposit cancel reschedule morning evening "
         "weekend holiday child adult senior fasting water coffee medicine dosage label bandage wound stitches "
         "fever cough rash sleep diet sugar pressure heart ear eye glasses contact lens walk wheelchair ramp lift "
         "entrance reception phone portal password email letter form signature consent record copy transfer "
         "village bus train taxi bicycle").split()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-test")


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.sample(VOCAB, n))


def distinct_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(question, answer) pairs made of random words: no two alike, so no check has anything to say."""
    rng = random.Random(seed)
    return [(f"{words(rng, 7).capitalize()}?", f"{words(rng, 12).capitalize()}.") for _ in range(n)]


def write_jsonl(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in pairs), encoding="utf-8")
    return path


def kinds(report) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for p in report.problems:
        found.setdefault(p.kind, []).append(p.row)
    return found


# --- the clinic's Excel export (issue 15's own case) ------------------------------------------------------------
def clinic_workbook(path: Path) -> dict:
    """Header row 1 ("Customer question" / "Our reply"), blank rows 20, 45 and 80, empty replies at Excel rows 63
    and 104, a 2,000-word reply at row 30 that ends with the sign-off."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Export"
    sheet.append(["Customer question", "Our reply"])
    pairs = iter(distinct_rows(200, seed=7))
    for row in range(2, 111):
        if row in (20, 45, 80):
            continue  # left blank, as people leave rows in a sheet
        question, answer = next(pairs)
        if row in (63, 104):
            answer = None
        if row == 30:
            answer = " ".join(random.Random(3).choices(VOCAB, k=2000)) + ". " + SIGN_OFF
        sheet.cell(row=row, column=1, value=question)
        sheet.cell(row=row, column=2, value=answer)
    book.save(path)
    return {"blank": [20, 45, 80], "empty": [63, 104], "long": 30, "rows": 106}


def test_the_clinic_excel_export(tmp_path, tok):
    path = tmp_path / "clinic export.xlsx"
    facts = clinic_workbook(path)
    report = load_data(path)
    # The columns are recognised by their words, and the mapping is shown for a confirmation.
    assert (report.mapping.prompt, report.mapping.response) == ("Customer question", "Our reply")
    assert report.format == "pairs" and report.mapping_unsure and 0 < report.confidence < 1
    # Row numbers are Excel's: the header is row 1, blank rows count.
    assert report.n_rows == facts["rows"] and report.rows[0] == 2 and report.rows[-1] == 110
    found = kinds(report)
    assert found["empty_response"] == facts["empty"]
    assert found["blank_row"] == facts["blank"] and report.blank_rows == facts["blank"]
    assert any("3 blank row(s) (20, 45, 80)" in note for note in report.notes)
    empty = next(p for p in report.problems if p.kind == "empty_response")
    assert empty.quote and empty.quote.endswith("?") and report.rows[empty.index] == empty.row
    # The 2,000-word reply: what the cut-off loses is named.
    data.check_report(report, tok, 512)
    long = [p for p in report.problems if p.kind == "too_long"]
    assert [p.row for p in long] == [facts["long"]]
    assert "the Riverside clinic team" in long[0].message and "end of the answer is cut" in long[0].message
    assert set(kinds(report)) == {"blank_row", "empty_response", "too_long"}  # nothing else to say
    # The fix writes a workbook again (xlsx stays xlsx), without the bad and the long rows.
    result = fixes.write_fixed_copy(report, tmp_path / "clean", fixes.Fixes(drop_long=True), tok, 512)
    assert result.path.suffix == ".xlsx" and result.kept == facts["rows"] - 3
    assert result.dropped == {"unusable": 2, "duplicates": 0, "long_rows": 1}
    again = load_data(result.path)
    assert again.n_rows == result.kept and again.problems == [] and again.blank_rows == []
    assert openpyxl.load_workbook(result.path).active.title == "Export"


# --- column names people use ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, response", [
    ("Frage des Kunden", "Antwort"), ("Question du client", "Réponse"), ("Pregunta", "Respuesta"),
    ("Domanda", "Risposta"), ("Vraag", "Antwoord"), ("質問", "回答"), ("Customer question", "Our reply"),
])
def test_column_names_in_plain_words_and_other_languages(tmp_path, prompt, response):
    path = tmp_path / "q.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["Id", prompt, response], ["1", "Wann?", "Morgen."]])
    report = load_data(path)
    assert (report.mapping.prompt, report.mapping.response) == (prompt, response)
    assert report.mapping_unsure and len(report.usable()) == 1


def test_exact_names_are_sure_and_unknown_names_are_not_guessed(tmp_path):
    sure = load_data(write_jsonl(tmp_path / "pc.jsonl", [("a?", "b.")]))
    assert sure.confidence == 1.0 and not sure.mapping_unsure
    path = tmp_path / "odd.csv"
    path.write_text("Customer name,Order id\nAnna,12\n", encoding="utf-8")
    odd = load_data(path)
    assert odd.format == "unknown" and odd.usable() == [] and odd.mapping_unsure


# --- row numbers as the file shows them -----------------------------------------------------------------------------
def test_row_numbers_follow_the_file(tmp_path):
    csv_path = tmp_path / "r.csv"
    csv_path.write_text('prompt,completion\nA?,a\n\n"Two\nlines?",\nC?,c\n', encoding="utf-8")
    report = load_data(csv_path)
    assert report.rows == [2, 4, 5] and report.blank_rows == [3]  # a quoted two-line cell is one spreadsheet row
    assert [(p.row, p.kind) for p in report.problems] == [(3, "blank_row"), (4, "empty_response")]
    assert report.problems[1].quote == "Two lines?"
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"prompt": "A?", "completion": "a"}\n\n{"prompt": "B?", "completion": ""}\n\n', encoding="utf-8")
    lines = load_data(jsonl)
    assert lines.row_unit == "line" and lines.rows == [1, 3] and lines.blank_rows == [2]  # trailing blanks: quiet
    js = tmp_path / "r.json"
    js.write_text(json.dumps([{"prompt": "A?", "completion": "a"}, {"prompt": "B?", "completion": ""}]), "utf-8")
    listed = load_data(js)
    assert listed.row_unit == "item" and [(p.row, p.kind) for p in listed.problems] == [(2, "empty_response")]


# --- near duplicates, contradictions -------------------------------------------------------------------------------
def test_near_duplicates_found_and_quiet(tmp_path):
    pairs = distinct_rows(30)
    pairs.insert(10, ("How do I reset my password on the patient portal?",
                      "Open the portal, choose Forgot password and follow the e-mail we send you."))
    pairs.append(("how do I reset my password on the patient portal",
                  "Open the portal, choose 'Forgot password', then follow the e-mail we send."))
    report = data.check_report(load_data(write_jsonl(tmp_path / "n.jsonl", pairs)))
    near = [p for p in report.problems if p.kind == "near_duplicate"]
    assert [(p.row, p.other_row) for p in near] == [(32, 11)] and 85 <= near[0].similarity < 100
    assert near[0].quote.startswith("how do I reset")
    assert data.check_report(load_data(write_jsonl(tmp_path / "q.jsonl", distinct_rows(30)))).problems == []


def test_the_fast_path_finds_what_comparing_every_pair_finds():
    rng = random.Random(5)
    texts = [words(rng, 12) for _ in range(400)]
    for k in range(0, 400, 40):  # reworded copies: one word changed
        copy = texts[k].split()
        copy[3] = "changed"
        texts.append(" ".join(copy))
    exact = similar.similar_pairs(texts, 85)
    assert len(exact) == 10 and similar.similar_pairs(texts, 85, exact_below=0) == exact


def test_contradictions_found_and_quiet(tmp_path):
    pairs = distinct_rows(10) + [("Can I eat before a blood test?", "No, fast for 12 hours before the test."),
                                 ("Can I eat before a blood test?!", "Yes, eat normally, it makes no difference.")]
    report = data.check_report(load_data(write_jsonl(tmp_path / "c.jsonl", pairs)))
    assert [(p.row, p.kind, p.other_row) for p in report.problems] == [(12, "contradiction", 11)]
    same = distinct_rows(10) + [("Can I eat before a blood test?", "No, fast for 12 hours."),
                                ("Can I eat before a blood test", "No - fast for 12 hours!")]
    assert "contradiction" not in kinds(data.check_report(load_data(write_jsonl(tmp_path / "s.jsonl", same))))


# --- personal data --------------------------------------------------------------------------------------------------
def test_personal_data_found_masked_and_quiet(tmp_path):
    pairs = distinct_rows(6) + [
        ("Who do I write to?", "Write to anna.berg@example.org."),
        ("Call me back?", "Sure, we will call +44 20 7946 0958 this afternoon."),
        ("Pay how?", "Pay with 4111 1111 1111 1111, or transfer to DE89 3704 0044 0532 0130 00."),
        ("Order?", "Order 4111 1111 1111 1112 ships on 2024-01-15; ref GB00 0000 0000 0000 00."),  # bad checks
        ("Hotline?", "Call our free line 1-800-555-0199 any time."),  # a company's toll-free line
    ]
    report = data.check_report(load_data(write_jsonl(tmp_path / "p.jsonl", pairs)))
    personal_rows = {p.row: p.detail for p in report.problems if p.kind == "personal_data"}
    assert personal_rows == {7: "email", 8: "phone", 9: "card, iban"}
    assert "card number and IBAN" in next(p.message for p in report.problems if p.row == 9)
    assert personal.mask("mail a.b@c.de or +44 20 7946 0958") == "mail [EMAIL] or [PHONE]"
    result = fixes.write_fixed_copy(report, tmp_path / "clean", fixes.Fixes(mask_personal_data=True))
    assert result.masked == 3 and result.path.suffix == ".jsonl"
    text = result.path.read_text(encoding="utf-8")
    assert "[EMAIL]" in text and "[PHONE]" in text and "[CARD]" in text and "[IBAN]" in text
    assert "anna.berg" not in text and "1-800-555-0199" in text
    assert "personal_data" not in kinds(data.check_report(load_data(result.path)))


# --- too long -------------------------------------------------------------------------------------------------------
def test_too_long_names_what_is_cut_and_is_quiet_for_short_rows(tmp_path, tok):
    long_answer = " ".join(["The results arrive within five working days."] * 40) + " " + SIGN_OFF
    pairs = distinct_rows(5) + [("When do results arrive?", long_answer)]
    report = data.check_report(load_data(write_jsonl(tmp_path / "l.jsonl", pairs)), tok, 256)
    long = [p for p in report.problems if p.kind == "too_long"]
    assert [p.row for p in long] == [6] and "Riverside clinic team" in long[0].message
    assert "too_long" not in kinds(data.check_report(load_data(write_jsonl(tmp_path / "s.jsonl", pairs[:5])), tok,
                                                     256))
    huge = "Tell me everything. " + " ".join(["word"] * 400)  # a prompt that fills the cut-off on its own
    cut = data.check_report(load_data(write_jsonl(tmp_path / "h.jsonl", [(huge, "Fine.")])), tok, 64)
    assert "nothing of the answer is left" in cut.problems[0].message


# --- leaks and the split ----------------------------------------------------------------------------------------------
def test_leaks_from_a_separate_validation_file(tmp_path, capsys):
    train_pairs = distinct_rows(20)
    train = write_jsonl(tmp_path / "train.jsonl", train_pairs)
    question, answer = train_pairs[4]
    val = write_jsonl(tmp_path / "val.jsonl", distinct_rows(3, seed=9) + [
        (question, answer), (question.lower().rstrip("?"), answer.replace(".", "!"))])
    report, validation = load_data(train), load_data(val)
    data.check_report(report, validation=validation)
    assert [(p.row, p.kind, p.other_row) for p in validation.problems] == [
        (4, "leak", 5), (5, "leak", 5), (5, "near_duplicate", 4)]  # rows 4 and 5 also reword each other
    assert "repeats training line 5" in validation.problems[0].message
    assert report.problems == []
    quiet = load_data(write_jsonl(tmp_path / "v2.jsonl", distinct_rows(3, seed=9)))
    data.check_report(load_data(train), validation=quiet)
    assert quiet.problems == []
    assert data.main([str(train), "--validation", str(val), "--json", "--model", "tiny-test"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(p["row"], p["kind"]) for p in info["validation"]["problems"]] == [(4, "leak"), (5, "leak"),
                                                                               (5, "near_duplicate")]


def test_the_split_keeps_reworded_copies_on_one_side():
    rng = random.Random(2)
    base = [words(rng, 10) for _ in range(60)]
    examples = [data.Text(t) for t in base] + [data.Text(t + " again") for t in base[:20]]
    for seed in range(5):
        train, val = data.split_examples(examples, 0.25, seed)
        assert len(train) + len(val) == len(examples) and len(val) == 20
        held = {e.text.removesuffix(" again") for e in val}
        assert not held & {e.text.removesuffix(" again") for e in train}


# --- readiness, hub ---------------------------------------------------------------------------------------------
def test_is_this_enough_in_plain_words(tmp_path):
    report = load_data(write_jsonl(tmp_path / "r.jsonl", distinct_rows(150)))
    balanced = apply_preset(RunConfig(validation_fraction=0.0), "Balanced")
    text = data.readiness(report, balanced, "Balanced")
    assert text.startswith("150 usable rows (150 different prompts).") and "Enough for a first try" in text
    assert text.endswith("150 training rows x 2 epochs = 38 steps: Balanced sees each row 2.0 times.")
    quick = data.readiness(report, apply_preset(RunConfig(validation_fraction=0.0), "Quick test"), "Quick test")
    assert quick.endswith("150 training rows x 1 epoch = 38 steps, but Quick test stops at 30 steps (max_steps), "
                          "so it sees 120 of the 150 rows once.")
    few = load_data(write_jsonl(tmp_path / "f.jsonl", distinct_rows(5)))
    assert "very few" in data.readiness(few)


def test_a_hub_id_offline_is_one_sentence_in_under_5_s(monkeypatch):
    assert hub.parse_hub_id("HuggingFaceH4/no_robots:default@test") == ("HuggingFaceH4/no_robots", "default", "test")
    assert hub.parse_hub_id("tatsu-lab/alpaca") == ("tatsu-lab/alpaca", "", "train")
    assert hub.parse_hub_id("folder/data.csv") is None and hub.parse_hub_id("/abs/path") is None
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    with pytest.raises(data.DataError) as info:
        load_data("tatsu-lab/alpaca")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "cannot reach the hub" in message and "\n" not in message and message.endswith(".")


# --- fixes in the user's format, the user's own system prompt ---------------------------------------------------
def test_a_semicolon_csv_stays_a_semicolon_csv_without_repeats(tmp_path):
    pairs = distinct_rows(8)
    rows = pairs + [pairs[2], (pairs[5][0].lower().rstrip("?"), pairs[5][1].rstrip(".") + "!")]
    path = tmp_path / "export.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=";").writerows([["Customer question", "Our reply"], *rows])
    report = load_data(path)
    result = fixes.write_fixed_copy(report, tmp_path / "clean", fixes.Fixes(drop_near_duplicates=True))
    assert result.path.name == "export.clean.csv" and result.dropped == {"unusable": 0, "duplicates": 1,
                                                                          "near_duplicates": 1}
    lines = result.path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Customer question;Our reply" and len(lines) == 9
    again = data.check_report(load_data(result.path))
    assert again.problems == [] and [e.prompt for e in again.usable()] == [q for q, _ in pairs]
    with pytest.raises(data.DataError, match="every row"):
        fixes.write_fixed_copy(load_data(write_jsonl(tmp_path / "e.jsonl", [("q?", "")])), tmp_path, fixes.Fixes())


def test_the_users_own_system_prompt(tmp_path, capsys):
    chat = data.Chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    own = chat.with_system("You answer for the Riverside clinic.")
    assert own.messages[0] == {"role": "system", "content": "You answer for the Riverside clinic."}
    assert own.with_system("Another.") == own and chat.with_system("  ") == chat  # a system column wins
    path = write_jsonl(tmp_path / "s.jsonl", distinct_rows(3))
    own_prompt = ["--system-prompt", "You answer for the clinic."]
    assert data.main([str(path), "--json", "--model", "tiny-test", *own_prompt]) == 0
    segments = json.loads(capsys.readouterr().out)["preview"][0]["segments"]
    text = "".join(t for t, _ in segments)
    assert "You answer for the clinic." in text and "SmolLM" not in text  # not the model's default system prompt


def test_too_long_on_many_rows_matches_encoding_every_row(tmp_path, tok):
    """Over 2,000 rows near the cut-off take the sampled path (checks._rough_lengths): the same rows as exact."""
    pairs = distinct_rows(2500, seed=4)
    for k in (10, 1200, 2400):
        pairs[k] = (pairs[k][0], " ".join(["The clinic opens at nine."] * 30) + " " + SIGN_OFF)
    report = load_data(write_jsonl(tmp_path / "many.jsonl", pairs))
    found = [p.index for p in checks.too_long_problems(report, tok, 96)]
    exact = [i for i, e in enumerate(report.examples) if len(data.encode_example(e, tok, 10**9)["input_ids"]) > 96]
    assert found == exact and {10, 1200, 2400} <= set(found)


def test_drop_bad_rows_drops_the_repeat_not_the_row_above_it(tmp_path):
    """write_clean_copy works on positions, not on the file's row numbers (which start at 2 in a CSV)."""
    path = tmp_path / "r.csv"
    path.write_text("prompt,completion\nA?,a\nB?,b\nA?,a\nC?,c\n", encoding="utf-8")
    report = load_data(path)
    assert [(p.row, p.kind) for p in report.problems] == [(4, "duplicate")]
    clean = load_data(data.write_clean_copy(report, tmp_path / "clean"))
    assert [e.prompt for e in clean.usable()] == ["A?", "B?", "C?"]


@pytest.mark.parametrize("name", ["notes.docx", "export.pdf"])
def test_a_document_says_how_to_get_the_table_out(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 not a table")
    with pytest.raises(data.DataError, match=r"save that as \.xlsx or \.csv"):
        load_data(path)


def test_the_cache_key_can_see_every_module_of_the_package():
    names = {p.name for p in data.source_files()}
    assert {"__init__.py", "template.py", "formats.py", "load.py", "readers.py"} <= names
