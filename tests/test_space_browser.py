"""End to end in a real browser: the Space served on 127.0.0.1, driven by headless Chromium through Playwright.

Needs Debian's `chromium` (/usr/bin/chromium) and Playwright's Python package; without them the test is skipped
with the reason (set UNIQA_REQUIRE_BROWSER=1, as CI does, to fail instead). UNIQA_SAVE_SCREENSHOT=PATH copies the
screenshot there (docs/images/space.png is made this way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings

# gradio 6.31 itself trips pandas 3 deprecations when it serialises tables
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")
CHROMIUM = Path(os.environ.get("UNIQA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _missing(reason: str) -> None:
    if os.environ.get("UNIQA_REQUIRE_BROWSER"):
        pytest.fail(f"UNIQA_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server_url(space_url):
    return space_url


def test_upload_score_and_screenshot(browser, server_url, model, reference_images, tmp_path):
    image = reference_images["astronaut"]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(server_url)
    page.locator("#score-image input[type=file]").set_input_files(str(image))
    page.locator("#score-image img").first.wait_for()  # the upload's preview is shown
    page.locator("#score-button").click()
    quality_box = page.locator("#quality-score input")
    page.wait_for_function("el => el.value !== ''", arg=quality_box.element_handle())
    page.locator("#score-summary").get_by_text("Quality:").wait_for()
    page.wait_for_timeout(500)  # let the bar charts draw before the screenshot
    shown_quality = float(quality_box.input_value())
    shown_aesthetics = float(page.locator("#aesthetics-score input").input_value())
    shot = tmp_path / "space.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    if os.environ.get("UNIQA_SAVE_SCREENSHOT"):
        target = Path(os.environ["UNIQA_SAVE_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
    assert shot.stat().st_size > 20_000
    # what the browser shows is the package's score of the same file (rounded to 4 decimals for display)
    assert shown_quality == pytest.approx(float(model.score(image, adapter="tiny")[0]), abs=5e-5)
    assert shown_aesthetics == pytest.approx(float(model.score(image, task="aesthetics")[0]), abs=5e-5)
