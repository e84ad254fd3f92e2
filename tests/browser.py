"""A real browser for the page tests: Debian's headless Chromium (``chromium``), driven by selenium
through Debian's ``chromedriver``. Nothing is downloaded: the driver and the browser are given
by path, and Selenium Manager (which would fetch them) is kept offline.

``DLSERVE_UI_SCREENSHOTS=FOLDER`` makes ``screenshot`` save small PNGs (quantised to 64 colours)
there: ``DLSERVE_UI_SCREENSHOTS=docs/ui pytest tests/test_ui_browser.py`` remakes the docs'.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from PIL import Image

from tests.needs import require_tools

SCREENSHOTS = "DLSERVE_UI_SCREENSHOTS"


def chromium(width: int = 1200, height: int = 900):  # -> selenium WebDriver
    """A headless Chromium of ``width`` x ``height`` CSS pixels; skipped without the system
    browser and driver (failed under ``CI``)."""
    require_tools("chromium", "chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never goes online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-GB",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    service = Service(executable_path=str(shutil.which("chromedriver")))
    return webdriver.Chrome(service=service, options=options)


def screenshot(shown, name: str) -> None:  # shown: a selenium WebElement, or the WebDriver
    """Save ``shown`` (an element, whole; or the driver: its viewport) as
    ``<DLSERVE_UI_SCREENSHOTS>/<name>.png`` when that variable is set."""
    folder = os.environ.get(SCREENSHOTS)
    if not folder:
        return
    if hasattr(shown, "get_screenshot_as_png"):
        png = shown.get_screenshot_as_png()
    else:  # an element is cut at the viewport's edge: make the window as tall as the page
        driver = shown.parent
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], height + 200)
        png = shown.screenshot_as_png
        driver.set_window_size(size["width"], size["height"])
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    Path(folder).mkdir(parents=True, exist_ok=True)
    small.save(Path(folder) / f"{name}.png", optimize=True)
