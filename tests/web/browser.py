"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by Selenium."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import needs

#: Where screenshots go (``KANSHI_ARTIFACTS``; git-ignored ``tests/artifacts`` by default).
ARTIFACTS = Path(os.environ.get("KANSHI_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
WAIT = 30.0


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium that records the page's console (level SEVERE and up)."""
    chromium = needs.command("chromium", "chromium")
    driver_path = needs.command("chromedriver", "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="needs the Python package selenium (pip)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--lang=en-US"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Console entries of level SEVERE since the last call (the log is drained)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page as ``ARTIFACTS/web/NAME.png``."""
    folder = ARTIFACTS / "web"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000),
            "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def log_in(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait_until(driver, lambda d: d.current_url.rstrip("/").endswith("/web"), "the overview")


def wait_until(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, f"waiting for {what}")
