"""Faults injected into the real stack (real Redis, SeaweedFS with access keys,
Celery worker processes, the API over HTTP). After each one: no unit lost,
none rendered twice in the bucket, and the job ends done (or
done_with_failures where the fault outlasts the retry budget, then done after
a retry). See docs/reliability.md."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import LocalStack
from tests.service_helpers import client, queue_length, renders_made, small_job, wait_for

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


def _log(stack: LocalStack, name: str) -> str:
    path = stack.root / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _wait_log(stack: LocalStack, name: str, pattern: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, _log(stack, name)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared in {name}.log:\n{_log(stack, name)[-3000:]}")


def _kill(stack: LocalStack, i: int) -> None:
    os.killpg(stack.workers[i].pid, signal.SIGKILL)
    stack.workers[i].wait(10)


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
        _wait_log(stack, "worker0", r"unit=11 key=\w+ done")  # first chunk uploaded
        time.sleep(1.0)  # well into the second chunk
        _kill(stack, 0)
        killed_at = time.monotonic()
        stack.start_worker(0, env={"DREAMFARM_FAULT_STEP_SLEEP": "0"})
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 4
        assert time.monotonic() - killed_at < 90  # back within about a minute (lease 8 s here, 45 s by default)
        made = renders_made(stack)
        items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
        # The two units finished before the kill were not rendered again.
        assert [made[i["key"][:12]] for i in items] == [1, 1, 1, 1]
        assert "already rendered" in _log(stack, "worker0")
        _bucket_is_consistent(http, job["id"])


def test_orphaned_batch_moves_to_the_surviving_worker(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(**SLOW_STEPS)
    stack.start_worker(0)
    stack.start_worker(1)
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([20, 21, 22, 23], steps=40, batch_size=2)).json()
        # Kill whichever worker picked up a batch first; the other has the other batch.
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            for i in (0, 1):
                if "render_batch" in _log(stack, f"worker{i}") and "received" in _log(stack, f"worker{i}"):
                    victim = i
                    break
            time.sleep(0.1)
        assert victim is not None
        time.sleep(1.0)
        _kill(stack, victim)
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 4
        survivor = 1 - victim
        assert len(re.findall(r"key=\w+ done", _log(stack, f"worker{survivor}"))) == 4
        assert all(n == 1 for n in renders_made(stack).values())
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
        _wait_log(stack, "worker0", r"batch=\w+ unit=|Task dreamfarm.render_batch\[.*\] received")
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
        _wait_log(stack, "worker0", r"unit=50 key=\w+ done")
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
        log = _log(stack, "worker0")
        assert "out of memory with 4 units; retrying in halves of 2" in log
        assert log.count("out of memory with 2 units") == 2


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
        os.killpg(stack.workers[0].pid, signal.SIGTERM)
        assert stack.workers[0].wait(120) == 0  # warm shutdown: exits once the running batch is done
        assert http.get(f"/v1/jobs/{job['id']}").json()["totals"]["done"] == 2
        # The atlas task the last unit queued waits for the next worker (a deployment restarts it).
        stack.start_worker(0, env={"DREAMFARM_FAULT_STEP_SLEEP": "0"})
        status = wait_for(http, job["id"], timeout=180)
        assert status["state"] == "done" and status["totals"]["done"] == 2
        assert all(n == 1 for n in renders_made(stack).values())
