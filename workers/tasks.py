"""Celery tasks: thin shells around `service/` (via `workers.batch`).

`render_batch` is idempotent by content: a spec whose sidecar is already in
the bucket is not rendered again, whoever rendered it and whenever. It can be
delivered twice (a lease lost to a stalled worker, a redelivery after a kill)
and the bucket still ends up with one render per key.

No error ever drops a batch: Redis or broker trouble puts the message back
on the queue (`Reject(requeue=True)`; if even that cannot reach Redis, the
lease brings it back); any other error is retried with backoff and, after
`max_retries`, its units are recorded as failed with the reason.
"""

from __future__ import annotations

import logging

import redis
from celery import Task
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError

from service import logs
from service.contract import ATLAS_TASK, RENDER_TASK, TUNE_TASK, RenderBatch, TuneTask
from service.errors import StorageError, one_line
from service.job_atlas import write_job_atlas
from service.tune_jobs import TuneRuns
from workers import presence
from workers.batch import fail_batch, run_batch
from workers.celery_app import app
from workers.lease import leased
from workers.runtime import runtime
from workers.tune import run_tune

log = logging.getLogger("dreamfarm.worker")
INFRASTRUCTURE = (redis.RedisError, OperationalError)


@app.task(bind=True, name=RENDER_TASK, pydantic=True, acks_late=True, reject_on_worker_lost=True, max_retries=10)
def render_batch(self: Task, batch: RenderBatch) -> None:  # type: ignore[type-arg]
    ctx = f"job={batch.job_id} batch={batch.batch_id}"
    try:
        with logs.bound(batch.job_id, batch.batch_id), presence.busy(app):
            run_batch(runtime(), batch, self.request.id, self.request.hostname)
    except (Reject, Retry):
        raise
    except INFRASTRUCTURE as exc:
        log.warning("%s: job store or broker unreachable, batch back on the queue: %s", ctx, one_line(str(exc)))
        raise Reject(f"infrastructure: {exc}", requeue=True) from exc
    except Exception as exc:
        if self.request.retries >= (self.max_retries or 0):
            log.exception("%s failed for good", ctx)
            _fail_for_good(batch, f"batch failed: {one_line(str(exc))}")
            return
        log.warning("%s error, retrying: %s", ctx, one_line(str(exc)))
        _retry(self, exc, countdown=min(60, 2 ** (self.request.retries + 1)))


def _fail_for_good(batch: RenderBatch, reason: str) -> None:
    try:
        fail_batch(runtime(), batch, reason)
    except INFRASTRUCTURE as exc:
        raise Reject(f"infrastructure: {exc}", requeue=True) from exc


def _retry(task: Task, exc: Exception, countdown: float) -> None:  # type: ignore[type-arg]
    """`Task.retry`, except that a retry that cannot be published puts the
    message back instead of dropping it (Celery rejects it without requeue)."""
    try:
        raise task.retry(exc=exc, countdown=countdown)
    except Reject as rejected:
        raise Reject(f"retry not published: {rejected.reason}", requeue=True) from exc


@app.task(bind=True, name=ATLAS_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=8)
def build_atlas_task(self: Task, job_id: str) -> None:  # type: ignore[type-arg]
    try:
        akey = write_job_atlas(job_id, runtime().jobs, runtime().store())
    except StorageError as exc:
        log.warning("job=%s atlas: storage error, retrying: %s", job_id, exc)
        _retry(self, exc, countdown=min(60, 2**self.request.retries))
        return
    except INFRASTRUCTURE as exc:
        raise Reject(f"infrastructure: {exc}", requeue=True) from exc
    log.info("job=%s atlas %s written", job_id, akey)


@app.task(bind=True, name=TUNE_TASK, pydantic=True, acks_late=True, reject_on_worker_lost=True, max_retries=3)
def tune_recipe(self: Task, task: TuneTask) -> None:  # type: ignore[type-arg]
    """A search is deterministic (seeded): one redelivered after a lost worker
    runs again and stores the same recipe."""
    rt = runtime()
    try:
        # A search runs for minutes: its lease is renewed like a batch's, or
        # the broker would hand the message to another worker mid-search.
        with leased(rt.jobs.r, self.request.id, rt.settings.lease_renew_s), presence.busy(app):
            run_tune(rt, task)
    except INFRASTRUCTURE as exc:
        raise Reject(f"infrastructure: {exc}", requeue=True) from exc
    except StorageError as exc:
        if self.request.retries >= (self.max_retries or 0):
            TuneRuns(runtime().jobs.r).fail(task.run_id, f"storage: {one_line(str(exc))}")
            return
        _retry(self, exc, countdown=min(60, 2 ** (self.request.retries + 1)))
    except Exception as exc:  # a bad request or a network that cannot render: no retry will help
        log.exception("tune=%s failed", task.run_id)
        TuneRuns(runtime().jobs.r).fail(task.run_id, one_line(str(exc)))
