"""What a person does on the page, as small functions over Playwright: open a tab, pick from a dropdown, upload,
read the loss plot. Selectors are elem_ids where the app sets them, else what the user reads (labels, roles)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

MAX_PNG_BYTES = 500_000
TRAIN_TIMEOUT_MS = 240_000  # a tiny-model run on a busy 2-core machine: ~25 s to start, ~1.5 s a step

# Points drawn in a Vega line chart (Gradio's LinePlot renders SVG): one M or L command per point. Only lines with
# a colour count: a series the plot has no colour for is drawn without a stroke, i.e. invisible.
COUNT_POINTS_JS = """(el) => {
    let n = 0;
    for (const path of el.querySelectorAll('g.mark-line path')) {
        const stroke = path.getAttribute('stroke');
        if (!stroke || stroke === 'none' || stroke === 'transparent') continue;
        n += ((path.getAttribute('d') || '').match(/[ML]/g) || []).length;
    }
    return n;
}"""


def open_tab(page: Page, tab_id: str) -> None:
    page.locator(f"button[role=tab][data-tab-id={tab_id}]").click()
    expect(page.locator(f"button[role=tab][data-tab-id={tab_id}]")).to_have_attribute("aria-selected", "true")


def pick(page: Page, combobox: Locator, option: str | re.Pattern) -> None:
    """Open a Gradio dropdown and click the option whose text matches."""
    combobox.click()
    page.get_by_role("option", name=option).click()


def upload(page: Page, block_id: str, path: Path) -> None:
    """Put a file into a gr.File, clearing the one shown there first (a filled gr.File has no file input)."""
    block = page.locator(f"#{block_id}")
    clear = block.get_by_role("button", name="Clear")
    if clear.count():
        clear.click()
    block.locator("input[type=file]").set_input_files(str(path))


def block_labelled(page: Page, label: str) -> Locator:
    """A component without an elem_id, found by the label printed on it (e.g. a Chatbot)."""
    return page.locator("div.block", has=page.locator("label[data-testid=block-label]", has_text=label))


def plot_points(page: Page, plot_id: str = "loss-plot") -> int:
    plot = page.locator(f"#{plot_id}")
    if not plot.count():
        return 0
    return plot.evaluate(COUNT_POINTS_JS)


def wait_for_points(page: Page, at_least: int, plot_id: str = "loss-plot", timeout: int = TRAIN_TIMEOUT_MS,
                    or_status: str | None = None) -> int:
    """Wait until the plot draws `at_least` points (or, with or_status, the run status shows that text)."""
    page.wait_for_function(f"""([n, text]) => {{
        const status = document.querySelector('#run-status');
        if (text && status && status.innerText.includes(text)) return true;
        const el = document.querySelector('#{plot_id}');
        return el && ({COUNT_POINTS_JS})(el) >= n;
    }}""", arg=[at_least, or_status], timeout=timeout)
    return plot_points(page, plot_id)


def expect_numeric_axes(page: Page, plot_id: str = "loss-plot") -> None:
    """Step is drawn on a number line, not as one category per step (which leaves the chart empty)."""
    axis = page.locator(f"#{plot_id} [aria-roledescription=axis][aria-label^=\"X-axis titled 'step'\"]")
    expect(axis).to_have_attribute("aria-label", re.compile("linear scale"))


def run_id_in(text: str) -> str:
    match = re.search(r"\b(\d{8}-\d{6}-[\w.-]+)", text)
    assert match, f"no run id in {text!r}"
    return match.group(1).rstrip(".")


def screenshot(page: Page, folder: Path, name: str) -> Path:
    """A full-page PNG; squeezed to a palette image if it would exceed MAX_PNG_BYTES (README assets stay small)."""
    path = folder / f"{name}.png"
    # As a person would look at it: no text cursor in a field, and the pointer off the controls (Gradio draws a
    # hovered radio button as unselected).
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    data = page.screenshot(full_page=True, animations="disabled")
    if len(data) > MAX_PNG_BYTES:
        from PIL import Image

        image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    path.write_bytes(data)
    return path
