"""Click through the app as a user does, in headless Chromium: model, data, settings, train, chat, share.

Run alone with `pytest -m browser tests/browser`; `make screenshots` saves the screenshots to assets/screenshots.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
from playwright.sync_api import expect  # noqa: E402

from ..conftest import MEMORISED, write_messages_jsonl  # noqa: E402
from . import ui  # noqa: E402

pytestmark = pytest.mark.browser


def write_instruction_csv(path: Path, n_rows: int = 20) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "output"])
        for i in range(n_rows):
            q, a = MEMORISED[i % len(MEMORISED)]
            writer.writerow([f"{q} (#{i})", a])
    return path


# Rows unlike each other and unlike MEMORISED: the split keeps repeats on one side, so these are what it can hold out
# for the validation loss (the chat's run line names it for the base and the fine-tuned model).
DISTINCT = [
    ("Which river crosses the old town of Vellor?", "The Sarn river runs through Vellor's old town."),
    ("How do I reset the blue kettle?", "Hold the lid button for ten seconds until it beeps twice."),
    ("What time does the night ferry leave?", "The night ferry leaves the south pier at 23:40."),
    ("Who painted the mural in the library?", "Anouk Derval painted it in 1987."),
    ("Can I bring a dog on the tram?", "Small dogs ride free in a basket; larger dogs need a ticket."),
]


def write_support_jsonl(path: Path) -> Path:
    """20 chat rows: MEMORISED three times over (learnt word for word) and five distinct ones."""
    rows = [*MEMORISED * 3, *DISTINCT]
    with open(path, "w", encoding="utf-8") as f:
        for q, a in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                    + "\n")
    return path


def write_broken_jsonl(path: Path) -> Path:
    good = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}'
    path.write_text(good + "\n" + '{"messages": [{"role": "user", "content": "Hi"\n' + good + "\n")
    return path


def test_broken_file_is_one_sentence_naming_the_line(page, console, tmp_path):
    broken = write_broken_jsonl(tmp_path / "broken.jsonl")
    ui.open_tab(page, "data")
    ui.upload(page, "data-upload", broken)
    status = page.locator("#data-status")
    expect(status).to_contain_text("Line 2", timeout=30_000)
    text = status.inner_text().strip()
    assert "broken.jsonl" in text, text
    assert "Traceback" not in text and "\n" not in text and len(text) < 300, text
    console.assert_clean()


def test_walk_model_data_settings_train_chat_share(page, console, tmp_path, shots_dir, studio_server):
    jsonl = write_support_jsonl(tmp_path / "support.jsonl")
    table = write_instruction_csv(tmp_path / "faq.csv", 20)

    # 1. Model: the tiny random model is offered (with --test-models) and picked.
    model = page.locator("#model-choice input")
    ui.pick(page, model, "tiny-test")
    expect(model).to_have_value("tiny-test")
    ui.screenshot(page, shots_dir, "1-model")

    # 2. Data: a CSV, then a JSONL; each time the format is detected and rows previewed as the model sees them.
    ui.open_tab(page, "data")
    status, preview = page.locator("#data-status"), page.locator("#data-preview")
    ui.upload(page, "data-upload", table)
    expect(status).to_contain_text("Instruction / input / output", timeout=60_000)
    expect(status).to_contain_text("20 rows")
    expect(preview).to_contain_text("What colour is the sky on Zorblax? (#0)", timeout=30_000)
    expect(page.locator("#data-table")).to_contain_text("instruction")
    ui.upload(page, "data-upload", jsonl)
    expect(status).to_contain_text("Chat messages (OpenAI", timeout=60_000)
    expect(status).to_contain_text("20 rows")
    expect(preview).to_contain_text("Line 1", timeout=30_000)
    expect(preview).not_to_contain_text("(#0)")  # the CSV's preview is gone
    expect(preview).to_contain_text("On Zorblax the sky is bright green.")
    # The page names the user's file, not the server's copy of it.
    expect(page.locator("#data-file-name textarea, #data-file-name input").first).to_have_value(
        re.compile(r"support\.jsonl$"))
    ui.screenshot(page, shots_dir, "2-data")

    # 3. Settings: the Quick test preset, then fewer steps so the run ends in well under a minute of training.
    ui.open_tab(page, "settings")
    max_steps = page.locator("#field-max_steps input")
    page.locator("#preset").get_by_label("Balanced").check()
    expect(max_steps).to_have_value("0")
    page.locator("#preset").get_by_label("Quick test").check()
    expect(max_steps).to_have_value("30")
    max_steps.fill("40")
    max_steps.press("Tab")
    expect(page.locator("#preset-note")).to_contain_text("Max steps 40 (preset: 30)")
    expect(page.locator("#settings-estimate")).to_contain_text("40 steps", timeout=60_000)  # follows the form
    ui.screenshot(page, shots_dir, "3-settings")
    # The less common settings wait behind "Advanced", holding the preset's values.
    lora_rank = page.locator("#field-lora_rank input")
    expect(lora_rank).to_be_hidden()
    page.get_by_text(re.compile("^Advanced: schedule, LoRA")).click()
    expect(lora_rank).to_be_visible()
    expect(lora_rank).to_have_value("8")

    # 4. Train: start, watch the loss plot fill, see it finish. Stop and Resume act only when they can.
    ui.open_tab(page, "train")
    stop, resume = page.locator("#stop"), page.locator("#resume")
    expect(stop).to_be_disabled()
    expect(resume).to_be_disabled()
    page.locator("#start").click()
    expect(page.locator("#train-notice")).to_contain_text("Started run", timeout=30_000)
    run_id = ui.run_id_in(page.locator("#train-notice").inner_text())
    run_status = page.locator("#run-status")
    expect(run_status).to_contain_text(run_id)
    expect(run_status).to_contain_text("Step", timeout=ui.TRAIN_TIMEOUT_MS)
    ui.wait_for_points(page, 1)
    if "running" in run_status.inner_text():
        expect(stop).to_be_enabled()
    # The mid-run screenshot: a curve with some shape, taken while the run is still going when the machine allows.
    ui.wait_for_points(page, 40, or_status="finished")
    ui.expect_numeric_axes(page)
    was_running = "running" in run_status.inner_text()
    ui.screenshot(page, shots_dir, "4-train")
    print(f"Train screenshot taken {'mid-run' if was_running else 'after the run finished'}")
    expect(run_status).to_contain_text("finished", timeout=ui.TRAIN_TIMEOUT_MS)
    expect(run_status).to_contain_text("Step 40 / 40")
    expect(stop).to_be_disabled()
    expect(resume).to_be_disabled()  # finished: nothing to resume
    # Every step is logged: 40 raw and 40 smoothed train points, plus the validation points.
    assert ui.wait_for_points(page, 80, timeout=15_000) >= 80

    # 5. Chat: pick the run, ask, see the base and the fine-tuned answer.
    ui.open_tab(page, "chat")
    ui.pick(page, page.get_by_label("Run", exact=True), re.compile(re.escape(run_id)))
    run_info = rf"Run {re.escape(run_id)}: tiny-test \+ LoRA adapter.*for the base model and .* fine-tuned"
    expect(page.get_by_text(re.compile(run_info))).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Generation settings").click()
    max_new = page.get_by_role("spinbutton", name=re.compile("Max new tokens")).first
    max_new.fill("24")
    max_new.press("Tab")
    page.get_by_placeholder("Ask both models something").fill(MEMORISED[0][0])
    page.get_by_role("button", name="Send", exact=True).click()
    base = ui.block_labelled(page, "Base model").locator("[data-testid=bot]")
    tuned = ui.block_labelled(page, "Fine-tuned").locator("[data-testid=bot]")
    expect(base).to_have_count(1, timeout=60_000)
    expect(tuned).to_have_count(1, timeout=60_000)
    expect(tuned).not_to_have_text(re.compile(r"^\s*$|No run selected"), timeout=60_000)
    expect(base).not_to_have_text(re.compile(r"^\s*$"))
    expect(ui.block_labelled(page, "Base model").locator("[data-testid=user]")).to_contain_text(MEMORISED[0][0])
    expect(page.locator(".generating")).to_have_count(0, timeout=60_000)  # the answers have finished streaming
    page.get_by_role("button", name="Generation settings").click()  # closed again for the screenshot
    ui.screenshot(page, shots_dir, "5-chat")

    # 6. Share: the run chatted with is the one to share. The adapter zip downloads through the browser; a GGUF is
    # made in a process of its own while the page stays usable, and the page says how to use each.
    ui.open_tab(page, "share")
    expect(page.locator("#share-run input")).to_have_value(re.compile(re.escape(run_id)))
    page.locator("#share-zip").click()
    expect(page.locator("#export-status")).to_contain_text(f"Adapter zip of run {run_id} ready", timeout=60_000)
    link = ui.block_labelled(page, "Adapter zip").locator("a[download]")
    with page.expect_download() as download_info:
        link.click()
    target = tmp_path / "adapter.zip"
    download_info.value.save_as(target)
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    assert any(n.endswith("adapter_model.safetensors") for n in names), names
    assert any(n.endswith("adapter_config.json") for n in names), names
    results = page.locator("#share-results")
    expect(results).to_contain_text(f"runs/{run_id}/exports/{run_id}-adapter.zip")
    expect(results).to_contain_text("AutoPeftModelForCausalLM")
    page.locator("#share-gguf-q8_0").click()
    expect(page.locator("#export-status")).to_contain_text("in the background")
    # The export is a process of its own: a reload while it is made finds it (being made, or made) on the Share tab.
    with console.reloading(page):
        page.reload()
    page.locator("#model-choice").wait_for()
    ui.open_tab(page, "share")
    expect(page.locator("#share-run input")).to_have_value(re.compile(re.escape(run_id)))
    results = page.locator("#share-results")
    expect(results).to_contain_text(re.compile(r"GGUF \(q8_0, smaller\)"), timeout=30_000)
    stem = f"{run_id}-q8_0"
    expect(results).to_contain_text(f"ollama create {stem.lower()} -f {stem}.Modelfile", timeout=180_000)
    expect(results).to_contain_text(f"runs/{run_id}/exports/gguf/{stem}.gguf")
    assert (studio_server.runs_dir / run_id / "exports" / "gguf" / f"{stem}.gguf").is_file()
    serve = page.locator("#share-serve")
    expect(serve).to_contain_text("python -m studio serve")
    expect(serve).to_contain_text("curl http://127.0.0.1:8000/v1/chat/completions")
    # The push box when this machine has a token, else one sentence saying why not.
    hub = page.get_by_role("button", name="Push adapter to the Hub").or_(page.locator("#share-hub"))
    expect(hub.first).to_contain_text(re.compile("Push adapter to the Hub|log in first|work offline"))
    ui.screenshot(page, shots_dir, "6-share")

    # 7. Teach the next version: correct the fine-tuned answer in place, then train v2 on the corrections.
    ui.open_tab(page, "chat")
    ui.pick(page, page.locator("#chat-run input"), re.compile(re.escape(run_id)))
    note = page.locator("#feedback-note")
    expect(note).to_contain_text("no corrections yet", timeout=60_000)
    page.get_by_placeholder("Ask both models something").fill(MEMORISED[1][0])
    page.get_by_role("button", name="Send", exact=True).click()
    tuned_block = ui.block_labelled(page, "Fine-tuned")
    expect(tuned_block.locator("[data-testid=bot]")).to_have_count(1, timeout=60_000)
    expect(page.locator(".generating")).to_have_count(0, timeout=60_000)
    tuned_block.locator("[data-testid=bot]").hover()
    tuned_block.get_by_role("button", name="Edit").last.click()
    tuned_block.locator("textarea").last.fill("Nobody runs it now: the bakery closed last spring.")
    tuned_block.get_by_role("button", name="Submit").click()
    expect(note).to_contain_text("Correction saved. This run has 1 correction.", timeout=30_000)
    expect(tuned_block.locator("[data-testid=bot]")).to_contain_text("the bakery closed last spring")
    ui.screenshot(page, shots_dir, "7-correct")
    page.locator("#train-v2").click()
    # The next version trains in its own process, and the Train tab opens on it.
    expect(page.locator("button[role=tab][data-tab-id=train]")).to_have_attribute("aria-selected", "true",
                                                                                    timeout=30_000)
    run_status = page.locator("#run-status")
    expect(run_status).to_contain_text(re.compile(r"Run \S+-v2"), timeout=30_000)
    expect(run_status).to_contain_text("finished", timeout=ui.TRAIN_TIMEOUT_MS)
    v2_id = ui.run_id_in(run_status.inner_text())
    config = json.loads((studio_server.runs_dir / v2_id / "config.json").read_text())
    assert config["parent_run"] == run_id
    assert len((studio_server.runs_dir / v2_id / "corrections.jsonl").read_text().splitlines()) == 1

    console.assert_clean()


def test_reload_mid_run_keeps_the_run_live_and_stop_stops_it(page, console, tmp_path, studio_server):
    data = write_messages_jsonl(tmp_path / "long.jsonl", 20)
    ui.open_tab(page, "data")
    ui.upload(page, "data-upload", data)
    expect(page.locator("#data-status")).to_contain_text("Chat messages (OpenAI", timeout=60_000)
    ui.open_tab(page, "settings")
    max_steps = page.locator("#field-max_steps input")
    max_steps.fill("5000")  # far more than this test waits for: the run is surely live when we reload and stop
    max_steps.press("Tab")
    expect(page.locator("#preset-note")).to_contain_text("Max steps 5000 (preset: 30)")
    ui.open_tab(page, "train")
    page.locator("#start").click()
    expect(page.locator("#train-notice")).to_contain_text("Started run", timeout=30_000)
    run_id = ui.run_id_in(page.locator("#train-notice").inner_text())
    before = ui.wait_for_points(page, 2)

    # A reload is a new page: it must find the same run, still training, with its curve so far.
    with console.reloading(page):
        page.reload()
    # The new page opens on the Train tab, since a run is live. (Not a wait for the Model tab's #model-choice: the
    # page may switch to the Train tab before it is ever seen visible, and then it never is: a 30 s timeout in CI.)
    run_status = page.locator("#run-status")
    run_status.wait_for(timeout=60_000)
    expect(page.locator("button[role=tab][data-tab-id=train]")).to_have_attribute("aria-selected", "true")
    expect(run_status).to_contain_text(run_id, timeout=30_000)
    expect(run_status).to_contain_text("running")
    after_reload = ui.wait_for_points(page, before, timeout=30_000)
    ui.wait_for_points(page, after_reload + 1)  # and it keeps growing
    ui.expect_numeric_axes(page)
    # The form shows the live run's settings and data again, not the defaults.
    ui.open_tab(page, "settings")
    expect(page.locator("#field-max_steps input")).to_have_value("5000")
    ui.open_tab(page, "data")
    expect(page.locator("#data-status")).to_contain_text("Chat messages (OpenAI", timeout=30_000)
    expect(page.locator("#data-preview")).to_contain_text("Line 1")
    ui.open_tab(page, "train")

    page.locator("#stop").click()
    expect(page.locator("#train-notice")).to_contain_text(f"Stopping {run_id}")
    expect(run_status).to_contain_text("stopped", timeout=120_000)
    expect(run_status).to_contain_text("adapter and a checkpoint are saved")
    expect(page.locator("#resume")).to_be_enabled()  # stopped with a checkpoint: Resume continues it
    expect(page.locator("#stop")).to_be_disabled()
    assert (studio_server.runs_dir / run_id / "adapter").is_dir()
    console.assert_clean()
