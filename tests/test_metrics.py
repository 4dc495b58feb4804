"""Prometheus metrics scraped during an end-to-end job, parsed with
prometheus_client's own parser: the API's request and job counters and the
worker's render and batch counters move by the right amounts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import LocalStack
from tests.service_helpers import client, small_job, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    env = {"DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_BATCH_SIZE": "2", "DREAMFARM_LOG_FORMAT": "json"}
    with LocalStack(root, workers=1, extra_env=env) as s:
        yield s


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) → value."""
    text = httpx.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= set(lab))


def test_counters_move_by_the_job(stack: LocalStack) -> None:
    api, worker = f"{stack.api_url}/metrics", stack.metrics_url(0)
    with client(stack) as http:
        # A first job warms everything up (the worker's metrics exist once it has run a batch).
        wait_for(http, http.post("/v1/jobs", json=small_job([1])).json()["id"])
        a0, w0 = scrape(api), scrape(worker)
        job = http.post("/v1/jobs", json=small_job([10, 11, 12, 13, 14], recipe="lucid", batch_size=5)).json()
        wait_for(http, job["id"])
        again = http.post("/v1/jobs", json=small_job([10, 11])).json()  # lecture, not lucid: 2 new renders
        wait_for(http, again["id"])
        a1, w1 = scrape(api), scrape(worker)
    model = {"model": "efficientnet_lite0"}
    assert value(a1, "dreamfarm_jobs_submitted_total", **model) - value(a0, "dreamfarm_jobs_submitted_total") == 2
    assert value(a1, "dreamfarm_units_submitted_total") - value(a0, "dreamfarm_units_submitted_total") == 7
    assert value(a1, "dreamfarm_jobs_submitted_total", recipe="lucid") - value(
        a0, "dreamfarm_jobs_submitted_total", recipe="lucid") == 1  # fmt: skip
    posts = {"handler": "/v1/jobs", "method": "POST", "status": "2xx"}
    assert value(a1, "http_requests_total", **posts) - value(a0, "http_requests_total", **posts) == 2
    assert value(a1, "http_request_duration_seconds_count", handler="/v1/jobs") > 0
    rendered = {"outcome": "rendered"}
    assert value(w1, "dreamfarm_renders_total", **rendered) - value(w0, "dreamfarm_renders_total", **rendered) == 7
    assert value(w1, "dreamfarm_renders_total", recipe="lucid", outcome="rendered") - value(
        w0, "dreamfarm_renders_total", recipe="lucid", outcome="rendered") == 5  # fmt: skip
    # Chunks of 2 (DREAMFARM_BATCH_SIZE): 5 lucid units → 3 chunks, 2 lecture units → 1.
    chunks = value(w1, "dreamfarm_batch_duration_seconds_count") - value(w0, "dreamfarm_batch_duration_seconds_count")
    assert chunks == 4
    assert value(w1, "dreamfarm_image_steps_per_second") > 0
    assert ("dreamfarm_queue_length", (("queue", "render"),)) in w1


def test_worker_logs_are_json_with_job_and_batch(stack: LocalStack) -> None:
    import json

    lines = [json.loads(line) for line in (stack.logs / "worker0.log").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    started = [x for x in lines if x.get("job_id") and x.get("batch_id")]
    assert started and all({"levelname", "name", "message"} <= set(x) for x in started)
