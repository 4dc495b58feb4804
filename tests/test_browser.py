"""The gallery in a real browser against a real stack, after a small job:
the job page's progress reaches done, model → layer → unit navigates, every
image loads, search finds a class by name, and the console stays clean.
Screenshots of a layer page and a unit page go to docs/images/ when
DREAMFARM_SCREENSHOTS is set."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from devstack import LocalStack
from tests.browser import browser, console_errors, images_loaded  # noqa: F401
from tests.service_helpers import client, small_job, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
UNITS = ["Samoyed", "goldfish", "king crab", "hourglass", "paper towel", "geyser"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    with LocalStack(root, workers=1, extra_env={"DREAMFARM_CACHE": str(root / "cache")}) as s:
        yield s


@pytest.fixture(scope="module")
def job_id(stack: LocalStack) -> str:
    with client(stack) as http:
        body = small_job(UNITS, recipe="lucid", steps=6, size=96, batch_size=3, title="browser test")
        return str(http.post("/v1/jobs", json=body).json()["id"])


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    assert "500" not in driver.title


def test_job_page_follows_progress_to_done(stack: LocalStack, browser: Any, job_id: str) -> None:  # noqa: F811
    _open(browser, f"{stack.api_url}/gallery/jobs/{job_id}")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        atlas = browser.find_elements(By.ID, "atlas")
        if atlas and browser.find_element(By.ID, "state").text == "done":
            break
        time.sleep(0.5)  # the page polls the API and reloads itself when the job ends
    assert browser.find_element(By.ID, "state").text == "done"
    assert browser.find_element(By.ID, "bar").get_attribute("aria-valuenow") == "100"
    assert all(w > 0 for w in images_loaded(browser))
    assert not console_errors(browser)


def test_navigate_model_layer_unit_with_every_image(stack: LocalStack, browser: Any, job_id: str) -> None:  # noqa: F811
    with client(stack) as http:
        wait_for(http, job_id)
    _open(browser, f"{stack.api_url}/gallery")
    browser.find_element(By.LINK_TEXT, "efficientnet_lite0").click()
    browser.find_element(By.LINK_TEXT, "logits").click()
    assert browser.current_url.endswith("/gallery/efficientnet_lite0/_fc")
    tiles = browser.find_elements(By.CSS_SELECTOR, "#units .tile")
    assert len(tiles) == len(UNITS)
    widths = images_loaded(browser)
    assert len(widths) == len(UNITS) and all(w > 0 for w in widths)
    if os.environ.get("DREAMFARM_SCREENSHOTS"):
        browser.save_screenshot("docs/images/gallery-layer.png")
    browser.find_element(By.PARTIAL_LINK_TEXT, "king crab").click()
    assert browser.current_url.endswith("/gallery/efficientnet_lite0/_fc/121")
    assert "king crab" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_elements(By.CSS_SELECTOR, ".render svg.trace")
    assert all(w > 0 for w in images_loaded(browser))
    if os.environ.get("DREAMFARM_SCREENSHOTS"):
        browser.save_screenshot("docs/images/gallery-unit.png")
    assert not console_errors(browser)


def test_search_finds_a_class_by_name(stack: LocalStack, browser: Any, job_id: str) -> None:  # noqa: F811
    _open(browser, f"{stack.api_url}/gallery/efficientnet_lite0/_fc")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("towel")
    box.submit()
    tiles = browser.find_elements(By.CSS_SELECTOR, "#units .tile")
    assert [t.get_attribute("data-unit") for t in tiles] == ["700"]
    assert all(w > 0 for w in images_loaded(browser))
    _open(browser, f"{stack.api_url}/gallery/efficientnet_lite0/logits")  # an alias: redirected to the stable URL
    assert browser.current_url.endswith("/gallery/efficientnet_lite0/_fc")
    assert not console_errors(browser)


def test_bad_gallery_paths_are_pages_with_one_line(stack: LocalStack) -> None:
    with client(stack) as http:
        lite = "/gallery/efficientnet_lite0"
        for path, status in [("/gallery/vgg17", 404), (f"{lite}/conv99", 404), (f"{lite}/_fc/999", 404),
                             (f"{lite}/_fc?page=9", 404), (f"{lite}/_fc?page=zero", 422), (f"{lite}/_fc/x", 422),
                             ("/gallery/jobs/0123456789abcdef", 404)]:  # fmt: skip
            r = http.get(path)
            assert r.status_code == status, (path, r.status_code)
            assert r.headers["content-type"].startswith("text/html")
            message = r.text.split('<p id="error">')[1].split("</p>")[0]
            assert message and "\n" not in message
