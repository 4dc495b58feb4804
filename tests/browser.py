"""Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver (explicit paths: nothing is downloaded). `make test` installs both."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "apt-get install chromium chromium-driver (make test does: scripts/system-packages.sh)"
    )
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--window-size=1280,900"):  # fmt: skip
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def images_loaded(driver: Any) -> list[int]:
    """Every image's natural width, once the page's images have settled."""
    script = "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)"
    import time

    deadline = time.monotonic() + 30
    widths: list[int] = driver.execute_script(script)
    while any(w < 0 for w in widths) and time.monotonic() < deadline:
        time.sleep(0.2)
        widths = driver.execute_script(script)
    return widths


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
