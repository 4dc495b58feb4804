from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from devstack import RedisServer
from service.errors import StorageError
from service.jobstore import JobStore
from service.planning import plan_job
from service.request import JobRequest
from service.retry import backoff_delays, with_retries
from service.splitting import InjectedOutOfMemory, render_splitting
from service.storage import LocalStore
from service.zoo import Architecture, Registry


def test_backoff_is_exponential_and_capped() -> None:
    assert backoff_delays(6, 0.5, 4) == [0.5, 1, 2, 4, 4, 4]


def test_retries_then_succeeds_or_gives_up() -> None:
    calls, waits = [0], []

    def flaky() -> str:
        calls[0] += 1
        if calls[0] < 3:
            raise StorageError("down")
        return "ok"

    assert with_retries(flaky, retries=5, base_s=1, cap_s=8, sleep=waits.append) == "ok"
    assert calls[0] == 3 and len(waits) == 2 and 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2

    def broken() -> None:
        raise StorageError("still down")

    with pytest.raises(StorageError):
        with_retries(broken, retries=3, base_s=0.1, cap_s=1, sleep=waits.append)
    with pytest.raises(ValueError):  # other errors are not retried
        with_retries(lambda: int("x"), retries=3, base_s=0.1, cap_s=1, sleep=waits.append)


def test_out_of_memory_splits_in_halves_down_to_one() -> None:
    sizes: list[int] = []

    def render(part: list[int]) -> list[int]:
        sizes.append(len(part))
        if len(part) > 2 or 5 in part:
            raise InjectedOutOfMemory("too big")
        return part

    pieces = render_splitting(render, list(range(8)))
    done = sorted(u for p in pieces if p.result is not None for u in p.specs)
    failed = [p.specs for p in pieces if p.result is None]
    assert done == [0, 1, 2, 3, 4, 6, 7] and failed == [[5]]
    assert sizes[:3] == [8, 4, 2]
    with pytest.raises(KeyError):  # other errors propagate
        render_splitting(lambda part: {}[0], [1, 2])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> JobStore:
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis-jobs")).start()
    yield JobStore(redis.Redis.from_url(server.url, decode_responses=True))  # type: ignore[misc]
    server.stop()


def _plan(tmp_path: Path, units: list[int]):  # type: ignore[no-untyped-def]
    arch = Architecture(Registry().get("efficientnet_lite0"))
    req = JobRequest(model="efficientnet_lite0", layer="logits", units=units, steps=2, size=64)
    return plan_job(req, arch, LocalStore(tmp_path), batch_size=4)


@pytest.mark.integration
def test_units_count_once_and_the_job_finishes_exactly_once(jobs: JobStore, tmp_path: Path) -> None:
    plan = _plan(tmp_path, list(range(20)))
    assert [len(b) for b in plan.batches] == [4, 4, 4, 4, 4]
    jobs.create(plan)
    keys = [u.spec.key() for u in plan.units]
    finished: list[bool] = []
    lock = threading.Lock()

    def report(ks: list[str]) -> None:
        for k in ks:
            # every unit reported twice (a redelivered batch), from two threads
            r = jobs.mark(plan.job_id, k, True)
            with lock:
                finished.append(r)

    threads = [threading.Thread(target=report, args=(keys,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert finished.count(True) == 1
    s = jobs.summary(plan.job_id)
    assert s["state"] == "done" and s["totals"]["done"] == 20 and s["progress"] == 1.0


@pytest.mark.integration
def test_progress_never_goes_back_while_a_batch_files_its_units(jobs: JobStore, tmp_path: Path) -> None:
    """A batch of 4 finishes its optimization (4 units in flight at 100%), then
    its units are recorded one by one: the job's progress stays put or rises."""
    plan = _plan(tmp_path, [1, 2, 3, 4])
    jobs.create(plan)
    batch_id = "b0batch"
    jobs.set_progress(plan.job_id, batch_id, 4, 0.98)
    seen = [jobs.summary(plan.job_id)["progress"]]
    jobs.set_progress(plan.job_id, batch_id, 4, 1.0)
    seen.append(jobs.summary(plan.job_id)["progress"])
    for u in plan.units:
        jobs.mark(plan.job_id, u.spec.key(), True, batch_id=batch_id)
        seen.append(jobs.summary(plan.job_id)["progress"])
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.98) and seen[-1] == 1.0, seen
    # …and a later chunk that restarts the batch's fraction does not pull it back either
    plan2 = _plan(tmp_path, [5, 6, 7, 8])
    jobs.create(plan2)
    jobs.set_progress(plan2.job_id, batch_id, 2, 1.0)
    before = jobs.summary(plan2.job_id)["progress"]
    jobs.set_progress(plan2.job_id, batch_id, 2, 0.1)
    assert jobs.summary(plan2.job_id)["progress"] >= before == pytest.approx(0.5)


@pytest.mark.integration
def test_failures_then_success_and_cached_units(jobs: JobStore, tmp_path: Path) -> None:
    plan = _plan(tmp_path, [1, 2, 3])
    jobs.create(plan)
    k1, k2, k3 = (u.spec.key() for u in plan.units)
    assert not jobs.mark(plan.job_id, k1, True)
    assert not jobs.mark(plan.job_id, k2, False, "boom")
    assert jobs.mark(plan.job_id, k3, True)
    s = jobs.summary(plan.job_id)
    assert s["state"] == "done_with_failures" and s["failures"] == [{"key": k2, "error": "boom"}]
    jobs.reopen(plan.job_id)
    assert jobs.mark(plan.job_id, k2, True)
    assert jobs.summary(plan.job_id)["state"] == "done"
    # a job whose units are all in the bucket is planned as cached, with no batches
    store = LocalStore(tmp_path)
    for u in plan.units:
        from service import layout

        store.put(layout.render_sidecar_key(u.spec), b"{}", "application/json")
    again = _plan(tmp_path, [1, 2, 3])
    assert again.cached == {k1, k2, k3} and again.batches == []
