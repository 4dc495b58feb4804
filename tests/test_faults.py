"""Faults injected into the real stack (real Redis, SeaweedFS with access keys,
Celery worker processes, the API over HTTP). After each one: no unit lost,
none rendered twice in the bucket, and the job ends done (or
done_with_failures where the fault outlasts the retry budget, then done after
a retry). See docs/reliability.md."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import LocalStack
from service.contract import QUEUE
from tests.redis_fault_proxy import RedisFaultProxy, command
from tests.service_helpers import client, events, queue_length, renders_made, small_job, wait_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Short leases so a dead worker's batch comes back in ~10 s instead of ~45 s.
FAST_LEASES = {"DREAMFARM_LEASE_TIMEOUT_S": "8", "DREAMFARM_LEASE_RENEW_S": "1"}
SLOW_STEPS = {"DREAMFARM_FAULT_STEP_SLEEP": "0.15"}


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    stacks: list[LocalStack] = []

    def make(workers: int = 0, **env: str) -> LocalStack:
        root = tmp_path / f"stack{len(stacks)}"
        base = {"DREAMFARM_CACHE": str(root / "cache"), **FAST_LEASES, **env}
        s = LocalStack(root, workers=workers, extra_env=base)
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()


def _of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


def _kill(stack: LocalStack, i: int) -> None:
    stack.workers[i].kill()  # SIGKILL to the worker's whole process group


def _bucket_is_consistent(http: httpx.Client, job_id: str) -> None:
    """Every unit is there whole: a sidecar readable, its PNG present."""
    for item in http.get(f"/v1/jobs/{job_id}/renders", params={"limit": 500}).json()["items"]:
        assert item["state"] in ("done", "cached"), item
        side = httpx.get(item["sidecar_url"])
        assert side.status_code == 200 and side.json()["key"] == item["key"]
        png = httpx.get(item["png_url"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_killed_mid_batch_is_redelivered_to_a_new_worker(make_stack: Callable[..., LocalStack]) -> None:
    # The worker renders its batch in chunks of 2: kill it in the second chunk.
    stack = make_stack(DREAMFARM_BATCH_SIZE="2", **SLOW_STEPS)
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([10, 11, 12, 13], steps=30, batch_size=4)).json()
        wait_event(http, job["id"], _of_type("unit_rendered", unit=11))  # first chunk uploaded
        time.sleep(1.0)  # well into the second chunk
        _kill(stack, 0)
        killed_at = time.monotonic()
        stack.start_worker(0, env={"DREAMFARM_FAULT_STEP_SLEEP": "0"})
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 4
        assert time.monotonic() - killed_at < 90  # back within about a minute (lease 8 s here, 45 s by default)
        made = renders_made(http, job["id"])
        items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
        # The two units finished before the kill were not rendered again: the redelivery found them.
        assert [made[i["key"]] for i in items] == [1, 1, 1, 1]
        found = {e["unit"] for e in events(http, job["id"]) if e["type"] == "unit_exists"}
        assert found == {10, 11}
        _bucket_is_consistent(http, job["id"])


def test_orphaned_batch_moves_to_the_surviving_worker(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(**SLOW_STEPS)
    stack.start_worker(0)
    stack.start_worker(1)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([20, 21, 22, 23], steps=40, batch_size=2)).json()
        # Kill whichever worker started a batch first; the other has the other batch.
        started = wait_event(http, job["id"], _of_type("batch_started"))
        victim = int(started["worker"].split("@")[0].removeprefix("worker"))
        time.sleep(1.0)
        _kill(stack, victim)
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 4
        evs = events(http, job["id"])
        by_batch = {e["batch"]: e["worker"] for e in evs if e["type"] == "batch_started"}
        rendered_by = [by_batch[e["batch"]] for e in evs if e["type"] == "unit_rendered"]
        assert rendered_by == [f"worker{1 - victim}@127.0.0.1"] * 4
        assert all(n == 1 for n in renders_made(http, job["id"]).values())
        _bucket_is_consistent(http, job["id"])


def test_redis_restart_keeps_queued_batches_and_job_records(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack()
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([30, 31, 32], batch_size=1)).json()
        assert queue_length(stack) == 3
        before = http.get(f"/v1/jobs/{job['id']}").json()
        stack.redis.stop()  # graceful, append-only file as in docker-compose.yml
        stack.redis.start()
        assert queue_length(stack) == 3
        after = http.get(f"/v1/jobs/{job['id']}").json()
        assert after["totals"] == before["totals"] and after["state"] == "queued"
        stack.start_worker(0)
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 3


def test_bucket_down_past_the_retry_budget_then_retry(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(DREAMFARM_STORAGE_RETRIES="2", DREAMFARM_STORAGE_BACKOFF_S="0.2",
                       DREAMFARM_STORAGE_BACKOFF_CAP_S="0.5", **SLOW_STEPS)  # fmt: skip
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([40, 41], steps=20, batch_size=2)).json()
        wait_event(http, job["id"], _of_type("batch_started"))
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job['id']}").json()["progress"] <= 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        stack.s3.stop()
        status = wait_for(http, job["id"], timeout=120, atlas=False)
        assert status["state"] == "done_with_failures"
        assert status["totals"]["failed"] == 2
        assert all("upload failed" in f["error"] for f in status["failures"])
        stack.s3.start(timeout=60)
        r = http.post(f"/v1/jobs/{job['id']}/retry")
        assert r.status_code == 202, r.text
        assert r.json()["enqueued_batches"] == 1
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 2 and status["totals"]["failed"] == 0
        _bucket_is_consistent(http, job["id"])


def test_api_restart_mid_job_keeps_status_and_results(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(**SLOW_STEPS)
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([50, 51, 52], steps=20, batch_size=1)).json()
        wait_event(http, job["id"], _of_type("unit_rendered", unit=50))
        stack.stop_api()
        stack.start_api()
        mid = http.get(f"/v1/jobs/{job['id']}").json()
        assert mid["totals"]["units"] == 3 and mid["totals"]["done"] >= 1
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done"
        _bucket_is_consistent(http, job["id"])


def test_out_of_memory_splits_the_batch_down_to_single_units(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(DREAMFARM_FAULT_OOM_ABOVE="1")
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([60, 61, 62, 63], batch_size=4)).json()
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 4
        splits = sorted((e["units"], e["half"]) for e in events(http, job["id"]) if e["type"] == "oom_split")
        assert splits == [(2, 1), (2, 1), (4, 2)]


def test_out_of_memory_even_alone_fails_only_that_unit_with_its_reason(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(DREAMFARM_FAULT_OOM_ABOVE="0")
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([70, 71], batch_size=2)).json()
        status = wait_for(http, job["id"], timeout=180, atlas=False)
        assert status["state"] == "done_with_failures" and status["totals"]["failed"] == 2
        assert all("out of memory even alone" in f["error"] for f in status["failures"])


def test_sigterm_lets_the_running_batch_finish(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(**SLOW_STEPS)
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([80, 81], steps=30, batch_size=2)).json()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job['id']}").json()["progress"] <= 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        stack.workers[0].signal(signal.SIGTERM)
        assert stack.workers[0].wait(120) == 0  # warm shutdown: exits once the running batch is done
        assert http.get(f"/v1/jobs/{job['id']}").json()["totals"]["done"] == 2
        # The atlas task the last unit queued waits for the next worker (a deployment restarts it).
        stack.start_worker(0, env={"DREAMFARM_FAULT_STEP_SLEEP": "0"})
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 2
        assert all(n == 1 for n in renders_made(http, job["id"]).values())


@pytest.fixture
def proxied_stack(tmp_path: Path) -> Iterator[tuple[LocalStack, RedisFaultProxy]]:
    """A stack whose workers and API reach Redis through a fault-injecting proxy."""
    root = tmp_path / "proxied"
    stack = LocalStack(root, workers=0, extra_env={"DREAMFARM_CACHE": str(root / "cache"), **FAST_LEASES, **SLOW_STEPS})
    proxy = RedisFaultProxy(stack.redis.port)
    stack.extra_env["DREAMFARM_REDIS_URL"] = proxy.url
    try:
        yield stack.start(), proxy
    finally:
        stack.stop()
        proxy.close()


def _wait_progress(http: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while http.get(f"/v1/jobs/{job_id}").json()["progress"] <= 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def test_redis_blip_while_rendering_loses_no_batch(proxied_stack: tuple[LocalStack, RedisFaultProxy]) -> None:
    """The window the old code dropped batches in: a progress update fails,
    publishing (a retry) fails, and Redis is back before the message is
    rejected. The batch must finish, each unit rendered once, atlas written."""
    stack, proxy = proxied_stack
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([90, 91], steps=40, batch_size=2)).json()
        _wait_progress(http, job["id"])
        proxy.fail(command("HSET", f"dreamfarm:job:{job['id']}:progress".encode()))
        proxy.fail(command("LPUSH", QUEUE.encode()))
        time.sleep(3.0)  # progress is written every second: at least one update fails
        cut = proxy.cut
        proxy.heal()
        assert cut >= 1
        status = wait_for(http, job["id"], timeout=120)
        assert status["state"] == "done" and status["totals"]["done"] == 2 and status["atlas_key"]
        assert list(renders_made(http, job["id"]).values()) == [1, 1]
        _bucket_is_consistent(http, job["id"])


def test_redis_away_when_units_finish_records_them_later(proxied_stack: tuple[LocalStack, RedisFaultProxy]) -> None:
    """Uploads do not need Redis: units finished while Redis refuses to record
    them are recorded once it is back, without rendering them again."""
    stack, proxy = proxied_stack
    stack.start_worker(0)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([95, 96], steps=20, batch_size=2)).json()
        _wait_progress(http, job["id"])
        proxy.fail(command("EVALSHA"))  # the unit-outcome script
        proxy.fail(command("EVAL"))
        deadline = time.monotonic() + 60
        while proxy.cut == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)
        proxy.heal()
        status = wait_for(http, job["id"], timeout=120)
        assert status["state"] == "done" and status["totals"]["done"] == 2 and status["atlas_key"]
        _bucket_is_consistent(http, job["id"])
