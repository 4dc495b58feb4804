"""One batch in a worker: `service.batch_render` into the bucket, with the
job's records kept up to date in Redis.

Redis and the bucket fail independently, and finished work must survive a
Redis blip: progress and events are best effort (a failed update is skipped),
while each unit's outcome must be recorded. An outcome Redis refused is
recorded again at the end of the batch, with backoff; if Redis is still away
then, the error reaches the task, which puts the batch back on the queue
whole. The redelivered batch finds its renders in the bucket and only records
them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis
import torch
from kombu.exceptions import OperationalError

from service.batch_render import Callbacks, Faults, RenderPlan, UnitOutcome, render_into_store
from service.contract import ATLAS_TASK, QUEUE, RenderBatch
from service.devices import default_batch_size
from service.errors import one_line
from service.gallery.index import Entry, RedisIndex
from service.retry import backoff_delays
from workers import metrics
from workers.celery_app import app
from workers.lease import leased
from workers.runtime import Runtime

log = logging.getLogger("dreamfarm.worker")
#: Redis (records) or the broker (the atlas request) out of reach.
UNREACHABLE = (redis.RedisError, OperationalError)
#: Waits between attempts to record outcomes Redis refused during the batch.
RECORD_RETRY_DELAYS = backoff_delays(8, 0.5, 8.0)


class JobReporter:
    """The job store's view of one batch, fed by the render workflow's callbacks."""

    def __init__(self, rt: Runtime, batch: RenderBatch) -> None:
        self.rt, self.batch = rt, batch
        first = batch.items[0]
        self.model, self.recipe, self.steps = first.spec.model, first.recipe or "custom", first.spec.steps
        self.ctx = f"job={batch.job_id} batch={batch.batch_id}"
        self.unrecorded: list[UnitOutcome] = []
        self._lock = threading.Lock()
        self._last_progress = 0.0

    def callbacks(self) -> Callbacks:
        return Callbacks(progress=self.progress, unit=self.unit, split=self.split, batch_done=self.batch_done,
                         probing=lambda: self.event("bf16_probe"),
                         precision_note=lambda note: self.event("precision", note=note))  # fmt: skip

    def event(self, kind: str, **fields: str | int | float | None) -> None:
        try:
            self.rt.jobs.add_event(self.batch.job_id, kind, batch=self.batch.batch_id, **fields)
        except redis.RedisError as exc:
            log.warning("%s event %s not recorded: %s", self.ctx, kind, one_line(str(exc)))

    def progress(self, images: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < 1.0 and step != steps:
            return
        self._last_progress = now
        try:
            self.rt.jobs.set_progress(self.batch.job_id, self.batch.batch_id, images, step / steps)
        except redis.RedisError as exc:  # a progress bar may lag; the render must not stop
            log.warning("%s progress not recorded: %s", self.ctx, one_line(str(exc)))

    def unit(self, outcome: UnitOutcome) -> None:
        key = outcome.spec.key()
        metrics.RENDERS.labels(self.model, self.recipe, outcome.status).inc()
        if outcome.status == "failed":
            metrics.FAILURES.labels(metrics.failure_reason(outcome.reason)).inc()
        log.info("%s unit=%s key=%s %s %s", self.ctx, outcome.spec.unit, key[:12], outcome.status, outcome.reason)
        try:
            self.record(outcome)
        except UNREACHABLE as exc:
            log.warning("%s unit %s not recorded yet: %s", self.ctx, key[:12], one_line(str(exc)))
            with self._lock:
                self.unrecorded.append(outcome)
            return
        self.event(f"unit_{outcome.status}", key=key, unit=outcome.spec.unit, reason=outcome.reason or None)
        if outcome.sidecar is not None:
            try:
                RedisIndex(self.rt.jobs.r).add([Entry.from_sidecar(outcome.sidecar)])
            except redis.RedisError as exc:  # the gallery can be reindexed from the bucket
                log.warning("%s gallery index not updated: %s", self.ctx, one_line(str(exc)))

    def record(self, outcome: UnitOutcome) -> None:
        jobs, b = self.rt.jobs, self.batch
        if jobs.mark(b.job_id, outcome.spec.key(), outcome.ok, outcome.reason, b.batch_id, outcome.ranks):
            log.info("job=%s finished; building its atlas", b.job_id)
            try:
                app.send_task(ATLAS_TASK, kwargs={"job_id": b.job_id}, queue=QUEUE)
            except Exception:
                with contextlib.suppress(redis.RedisError):
                    jobs.atlas_unclaim(b.job_id)  # the batch's redelivery asks again
                raise

    def split(self, images: int, half: int) -> None:
        metrics.OOM_SPLITS.inc()
        log.warning("%s out of memory with %d units; retrying in halves of %d", self.ctx, images, half)
        self.event("oom_split", units=images, half=half)

    def storage_retry(self, what: str, attempt: int, exc: BaseException, delay: float) -> None:
        metrics.UPLOAD_RETRIES.inc()
        self.event("storage_retry", operation=what.split(" ", 1)[0], attempt=attempt, error=one_line(str(exc), 200))

    def batch_done(self, images: int, seconds: float) -> None:
        log.info("%s rendered %d units in %.1fs", self.ctx, images, seconds)
        metrics.BATCH_SECONDS.labels(self.model).observe(seconds)
        metrics.IMAGE_STEPS.labels(self.model).set(images * self.steps / max(seconds, 1e-9))
        chunk = self.rt.settings.batch_size or default_batch_size(self.rt.device, self.batch.items[0].spec.size)
        metrics.BATCH_FILL.observe(min(1.0, images / chunk))

    def flush(self) -> None:
        """Record what Redis refused during the batch; raises if it still cannot."""
        for delay in [*RECORD_RETRY_DELAYS, None]:
            with self._lock:
                left, self.unrecorded = self.unrecorded, []
            try:
                while left:
                    self.record(left[0])
                    left.pop(0)
                return
            except UNREACHABLE:
                with self._lock:
                    self.unrecorded = left + self.unrecorded
                if delay is None:
                    raise
                time.sleep(delay)


def run_batch(rt: Runtime, batch: RenderBatch, task_id: str | None, worker: str | None = None) -> None:
    """Render a batch into the bucket and record every unit; Redis errors propagate."""
    state = rt.jobs.start(batch.job_id)
    if state is None or state == "cancelled":
        log.info("job=%s batch=%s skipped: job %s", batch.job_id, batch.batch_id, state or "unknown")
        return
    reporter = JobReporter(rt, batch)
    reporter.event("batch_started", units=len(batch.items), worker=worker)
    log.info("job=%s batch=%s started: %d units", batch.job_id, batch.batch_id, len(batch.items))
    store = rt.store(on_retry=reporter.storage_retry)
    plan = RenderPlan(
        store=store,
        renderer_for=rt.renderer,
        verdicts=store,
        chunk_size=rt.settings.batch_size,
        callbacks=reporter.callbacks(),
        faults=Faults.from_env(),
        free_memory=_free_device_memory,
        autotune=rt.settings.autotune,
    )
    with leased(rt.jobs.r, task_id, rt.settings.lease_renew_s):
        render_into_store(batch.items, plan)
    reporter.flush()


def fail_batch(rt: Runtime, batch: RenderBatch, reason: str) -> None:
    """Record every unit of a batch that failed for good."""
    reporter = JobReporter(rt, batch)
    for item in batch.items:
        reporter.record(UnitOutcome(item.spec, "failed", reason))


def _free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
