"""The submit, retry and cancel workflows as plain functions (no HTTP), over
real Redis, a folder store and the real publisher: what they record, what
they enqueue, and that the message on the queue is the contract's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.publisher import CeleryPublisher
from devstack import RedisServer
from service import layout
from service.architectures import Architectures
from service.config import Settings
from service.contract import QUEUE, RENDER_TASK, RenderBatch
from service.errors import Conflict, NotFound, QuotaExceeded
from service.jobstore import JobStore
from service.request import JobRequest
from service.storage import LocalStore
from service.submission import Limits, Workflows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(data_dir=tmp_path_factory.mktemp("redis-wf")) as s:
        yield s


@pytest.fixture
def flows(server: RedisServer, tmp_path: Path) -> Iterator[Workflows]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    publisher = CeleryPublisher(Settings(redis_url=server.url))
    yield Workflows(JobStore(client), LocalStore(tmp_path), publisher, Architectures(), Limits(max_jobs_in_flight=2))


def _queued(flows: Workflows) -> list[RenderBatch]:
    # kombu pushes on the left and consumers pop from the right: oldest last.
    messages = [json.loads(m) for m in reversed(flows.jobs.r.lrange(QUEUE, 0, -1))]  # type: ignore[arg-type]
    assert all(m["headers"]["task"] == RENDER_TASK for m in messages)
    import base64

    from kombu.utils.encoding import bytes_to_str

    bodies = [json.loads(bytes_to_str(base64.b64decode(m["body"]))) for m in messages]
    return [RenderBatch.model_validate(args_kwargs[1]["batch"]) for args_kwargs in bodies]


def request(**kw: object) -> JobRequest:
    return JobRequest.model_validate({"model": "efficientnet_lite0", "layer": "logits", "units": [1, 2, 3], "steps": 2,
                                      "size": 64, "batch_size": 2, **kw})  # fmt: skip


def test_submit_records_and_enqueues_typed_batches(flows: Workflows) -> None:
    plan = flows.submit(request(), "acme")
    batches = _queued(flows)
    assert [len(b.items) for b in batches] == [2, 1] and {b.job_id for b in batches} == {plan.job_id}
    assert [i.spec.unit for b in batches for i in b.items] == [1, 2, 3]
    assert batches[0].items[0].label == "goldfish"
    assert flows.job(plan.job_id, "acme")["state"] == "queued"
    with pytest.raises(NotFound):
        flows.job(plan.job_id, "umbrella")  # another tenant cannot even see it


def test_cached_units_are_not_enqueued(flows: Workflows) -> None:
    first = flows.submit(request(), "acme")
    for u in first.units:
        flows.store.put(layout.render_sidecar_key(u.spec), b"{}", "application/json")
    flows.jobs.r.delete(QUEUE)
    again = flows.submit(request(), "acme")
    assert len(again.cached) == 3 and not again.batches and _queued(flows) == []
    assert flows.jobs.state(again.job_id) == "done"


def test_quota_cancel_and_retry(flows: Workflows) -> None:
    a, b = flows.submit(request(), "acme"), flows.submit(request(units=[4]), "acme")
    with pytest.raises(QuotaExceeded):
        flows.submit(request(units=[5]), "acme")
    assert flows.cancel(a.job_id, "acme") and not flows.cancel(a.job_id, "acme")
    flows.submit(request(units=[5]), "acme")  # a place was given back
    with pytest.raises(Conflict):
        flows.retry(b.job_id, "acme")  # nothing failed yet
    key = b.units[0].spec.key()
    flows.jobs.mark(b.job_id, key, False, "boom")
    flows.jobs.r.delete(QUEUE)
    flows.cancel(a.job_id, "acme")
    assert flows.retry(b.job_id, "acme") == 1
    assert [i.spec.key() for batch in _queued(flows) for i in batch.items] == [key]
    assert flows.jobs.state(b.job_id) == "running"
