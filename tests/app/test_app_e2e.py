"""The web demo in a real headless Chromium: upload a photo, edit a token, survive bad uploads, generate.

Needs Debian's chromium and chromium-driver (`.ci/install_browser.sh`) and selenium; skipped where
they are absent, failed under CI=true. Screenshots go to outputs/app/. The README's screenshot,
docs/app_screenshot.png, is remade from the models shipped with onetok (the app started with no
arguments) by `ONETOK_UPDATE_SCREENSHOT=1 pytest tests/app/test_app_e2e.py`.
"""
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from onetok.app import logic
from onetok.files import atomic_write_bytes

from ..conftest import REPO
from .conftest import free_port, need, need_module

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # this machine's network is closed: no background fetches that fail and slow the start
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
]
SCREENSHOTS = REPO / "outputs" / "app"
README_SCREENSHOT = REPO / "docs" / "app_screenshot.png"
WAIT_S = 60
STARTUP_S = 180  # importing torch and Gradio on a busy 2-core machine


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer at {url} within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser_tools():
    need(shutil.which("chromium") is not None and shutil.which("chromedriver") is not None, "Debian's chromium + chromium-driver")
    need_module("selenium")
    need_module("gradio")


@contextmanager
def running_app(arguments: list[str], log: Path):
    """`python -m onetok.cli.app ARGUMENTS` on a free port; yields its URL, stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "onetok.cli.app", "--port", str(port), *arguments]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def app_url(browser_tools, checkpoint_folders, tmp_path_factory):
    arguments = ["--generator", checkpoint_folders["generator"],
                 "--tokenizer", checkpoint_folders["tokenizer_16"], "--tokenizer", checkpoint_folders["tokenizer_32"]]
    with running_app(arguments, tmp_path_factory.mktemp("app_log") / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(browser_tools, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


class Page:
    """Small helpers over the selenium driver, by the elem_ids the app sets."""

    def __init__(self, driver):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def find_all(self, css: str):
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def wait(self, condition, what: str):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT_S, poll_frequency=0.2).until(
            lambda _: condition(), message=f"timed out waiting for {what}"
        )

    def image_shown(self, elem_id: str) -> bool:
        script = "const img = document.querySelector(arguments[0]); return !!img && img.complete && img.naturalWidth > 0;"
        return self.driver.execute_script(script, f"#{elem_id} img")

    def text(self, elem_id: str) -> str:
        return self.find(f"#{elem_id}").text

    def cells(self) -> list[str]:
        """The token ids in sequence order (each grid row starts with its positions, "0–7", left out)."""
        return [cell.text for cell in self.find_all("#token-grid [role=gridcell]") if "–" not in cell.text]

    def highlighted(self, test_id: str) -> bool:
        """Whether a grid cell (or the box around it) carries the app's edited-cell colour."""
        script = """let e = document.querySelector(`#token-grid [data-testid='${arguments[0]}']`), styles = '';
                    for (let i = 0; e && i < 4; i++, e = e.parentElement) styles += getComputedStyle(e).backgroundColor + ';';
                    return styles;"""
        return "rgb(255, 213, 79)" in self.driver.execute_script(script, test_id)  # ui.EDITED_CELL's #ffd54f

    def budget_captions(self) -> list[str]:
        return [item.text for item in self.find_all("#budget-row .caption-label")]

    def upload(self, path: Path) -> None:
        if not self.find_all("#upload input[type=file]"):
            self.find("#upload button[aria-label=Clear]").click()
        self.wait(lambda: self.find_all("#upload input[type=file]"), "the file input")
        self.find("#upload input[type=file]").send_keys(str(path))

    def screenshot(self, name: str) -> Path:
        """The whole page: the window is stretched to the document's height first."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, min(height + 40, 4000))
        self.driver.execute_script("window.scrollTo(0, 0)")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        atomic_write_bytes(path, self.driver.get_screenshot_as_png())
        self.driver.set_window_size(1280, 1000)
        return path


def test_app_in_a_browser(app_url, browser, sample_photos, tmp_path):
    browser.get(app_url)
    page = Page(browser)
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photos[1]).save(photo, quality=92)

    # reconstruct: a real photo in, the crop, the reconstruction and the 16 ids of the first tokenizer out
    page.wait(lambda: page.find_all("#upload input[type=file]"), "the page to load")
    page.upload(photo)
    page.wait(lambda: page.image_shown("recon-image") and len(page.cells()) == 16, "the reconstruction and token grid")
    assert page.image_shown("input-image")
    assert all(0 <= int(value) < 256 for value in page.cells())
    assert "PSNR" in page.text("recon-stats") and "16 bytes per image" in page.text("recon-stats")
    assert len(page.find_all("#comparison img")) == 3  # the input and both tokenizers side by side
    # the budget row: the 16-token tokenizer's first 1, 2, 4, 8, 16 tokens, bytes and PSNR under each
    page.wait(lambda: len(page.budget_captions()) == 5, "the budget row")
    assert len(page.find_all("#budget-row img")) == 5
    captions = page.budget_captions()
    assert [c.split(" · ")[:2] for c in captions] == [["1 token", "1 B"], ["2 tokens", "2 B"], ["4 tokens", "4 B"],
                                                       ["8 tokens", "8 B"], ["16 tokens", "16 B"]]
    assert all(c.endswith(" dB") for c in captions)

    # switch to the 32-token tokenizer: the grid grows
    page.find("#tokenizer-choice input[value='32 tokens · titok_tiny_32']").click()
    page.wait(lambda: len(page.cells()) == 32, "the 32-token grid")
    page.wait(lambda: len(page.budget_captions()) == 6 and page.budget_captions()[-1].startswith("32 tokens"),
              "the 32-token budget row")

    # click a token, give it a new id, see the edited image
    old = page.cells()[3]
    page.find("#token-grid [data-testid='cell-0-4']").click()  # column 0 holds the row's positions
    page.wait(lambda: page.find("#edit-position input").get_attribute("value") == "3", "the clicked position")
    assert page.find("#edit-id input").get_attribute("value") == old
    new = str((int(old) + 1) % 256)
    page.find("#edit-id input").clear()
    page.find("#edit-id input").send_keys(new)
    page.find("#replace-button").click()
    page.wait(lambda: f"Token 3 set to {new}." in page.text("edit-note"), "the edit note")
    page.wait(lambda: page.image_shown("edited-image") and page.cells()[3] == new, "the edited image and grid")
    assert page.highlighted("cell-0-4") and not page.highlighted("cell-0-5")  # the edited id stands out
    page.screenshot("reconstruct.png")

    # an example photo shipped with onetok: one click reconstructs it (and clears the edit)
    next(item for item in page.find_all(".gallery") if item.text == "coffee.jpg").click()
    page.wait(lambda: page.text("edit-note") == "", "the example's reconstruction")
    assert "PSNR" in page.text("recon-stats")

    # a non-image upload: a readable message in the page, and the server keeps serving
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these bytes are not a picture\n" * 40)
    page.upload(bad)
    page.wait(lambda: "not an image this app can read" in page.text("recon-stats"), "the bad-upload message")
    page.screenshot("bad_upload.png")

    # a file over the stated size limit is refused at upload, with the limit in the message
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff" * (logic.MAX_UPLOAD_MB * 2**20 + 1))
    page.upload(big)
    limit = f"exceed the maximum allowed size of {logic.MAX_UPLOAD_MB}"
    page.wait(lambda: limit in page.find("body").text, "the size-limit message")

    # generate
    next(tab for tab in page.find_all("button[role=tab]") if tab.text == "Generate").click()
    page.wait(lambda: page.find("#generate-button").is_displayed(), "the Generate tab")
    page.find("#generate-button").click()
    page.wait(lambda: "images of" in page.text("generate-stats"), "the generation to finish")
    assert page.image_shown("generated-image")
    assert page.text("generate-stats").startswith("4 images of thing 0 in ")
    page.screenshot("generate.png")


def test_the_app_starts_with_the_shipped_models(browser, tmp_path):
    from onetok import TiTok, hub

    num_tokens = TiTok.from_pretrained(hub.default_tokenizer_path()).config.num_latent_tokens
    with running_app([], tmp_path / "app.log") as url:
        browser.get(url)
        page = Page(browser)
        page.wait(lambda: page.find_all(".gallery"), "the page to load")
        next(item for item in page.find_all(".gallery") if item.text == "chelsea.jpg").click()
        page.wait(lambda: page.image_shown("recon-image") and page.cells(), "the reconstruction")
        assert len(page.cells()) == num_tokens  # the shipped tokenizer's ids, one cell each
        page.find("#randomise-button").click()
        page.wait(lambda: page.image_shown("edited-image"), "the edited image")
        shot = page.screenshot("readme.png")
        next(tab for tab in page.find_all("button[role=tab]") if tab.text == "Generate").click()
        page.wait(lambda: page.find("#generate-button").is_displayed(), "the Generate tab")
        page.find("#generate-button").click()
        page.wait(lambda: "images of" in page.text("generate-stats"), "the generation to finish")
        # the stats line and the picture are separate outputs: the browser may draw the picture later
        page.wait(lambda: page.image_shown("generated-image"), "the generated image")
        page.screenshot("readme_generate.png")
    if os.environ.get("ONETOK_UPDATE_SCREENSHOT") == "1":
        atomic_write_bytes(README_SCREENSHOT, shot.read_bytes())
