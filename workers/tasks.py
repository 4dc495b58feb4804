"""Celery tasks: thin shells around `service/`.

`render_batch` is idempotent by content: a spec whose sidecar is already in
the bucket is not rendered again, whoever rendered it and whenever. It can be
delivered twice (a lease lost to a stalled worker, a redelivery after a kill)
and the bucket still ends up with one render per key.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Task
from celery.exceptions import Reject

from service import layout
from service.atlas import Tile, atlas_key, build_atlas, manifest_bytes
from service.errors import DreamfarmError, StorageError, one_line
from service.retry import with_retries
from service.spec import RenderSpec, canonical_json
from service.splitting import InjectedOutOfMemory, render_splitting
from workers.celery_app import ATLAS_TASK, RENDER_TASK, app
from workers.lease import leased
from workers.runtime import Runtime, runtime

log = logging.getLogger("dreamfarm.worker")


def _storage(rt: Runtime, what: str, fn: Any) -> Any:
    s = rt.settings
    return with_retries(
        fn, retries=s.storage_retries, base_s=s.storage_backoff_s, cap_s=s.storage_backoff_cap_s,
        on_retry=lambda n, exc, d: log.warning("storage error (%s), retry %d in %.1fs: %s", what, n, d, exc),
    )  # fmt: skip


def _fault_oom_above() -> int | None:
    """Fault injection for tests: batches larger than this 'run out of memory'."""
    v = os.environ.get("DREAMFARM_FAULT_OOM_ABOVE")
    return int(v) if v else None


def _fault_sleep_per_step() -> float:
    """Fault injection for tests: slow each step down, to kill a worker mid-batch."""
    return float(os.environ.get("DREAMFARM_FAULT_STEP_SLEEP", "0") or 0)


@app.task(bind=True, name=RENDER_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=10)
def render_batch(self: Task, job_id: str, batch_id: str, specs: list[dict[str, Any]], labels: list[str | None]) -> None:
    try:
        _render_batch(self, job_id, batch_id, specs, labels)
    except Reject:
        raise
    except Exception as exc:
        # A failed task is acked like a finished one: an unexpected error must
        # not drop the batch. Re-publish it with backoff; give up (recording
        # every unit as failed) only after max_retries.
        if self.request.retries >= (self.max_retries or 0):
            log.exception("job=%s batch=%s failed for good", job_id, batch_id)
            reason = f"batch failed: {one_line(str(exc))}"
            for s in specs:
                _finish_unit(runtime(), job_id, batch_id, RenderSpec.model_validate(s).key(), ok=False, reason=reason)
            return
        log.warning("job=%s batch=%s error, retrying: %s", job_id, batch_id, one_line(str(exc)))
        raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from exc


def _render_batch(
    self: Task, job_id: str, batch_id: str, specs: list[dict[str, Any]], labels: list[str | None]
) -> None:
    rt = runtime()
    ctx = f"job={job_id} batch={batch_id}"
    try:
        state = rt.jobs.start(job_id)
    except Exception as exc:  # Redis down: put the batch back, do not lose it
        raise Reject(f"job store unreachable: {exc}", requeue=True) from exc
    if state is None or state == "cancelled":
        log.info("%s skipped: job %s", ctx, "cancelled" if state else "unknown")
        return
    parsed = [RenderSpec.model_validate(s) for s in specs]
    label_of = {s.key(): lab for s, lab in zip(parsed, labels)}

    todo: list[RenderSpec] = []
    for spec in parsed:
        key = spec.key()
        if _storage(rt, f"exists {key[:12]}", lambda spec=spec: rt.store.exists(layout.render_sidecar_key(spec))):
            log.info("%s unit=%s key=%s already rendered", ctx, spec.unit, key[:12])
            _finish_unit(rt, job_id, batch_id, key, ok=True)
        else:
            todo.append(spec)
    if not todo:
        return

    with leased(rt.jobs.r, self.request.id, rt.settings.lease_renew_s):
        try:
            renderer = rt.renderer(todo[0])
        except DreamfarmError as exc:  # missing weights, …: every unit fails, with the reason
            for spec in todo:
                _finish_unit(rt, job_id, batch_id, spec.key(), ok=False, reason=one_line(str(exc)))
            log.error("%s failed: %s", ctx, one_line(str(exc)))
            return
        rt.prepare_precision(renderer, todo)
        chunk = rt.settings.batch_size or renderer_batch_size(rt, todo[0])
        oom_above, step_sleep = _fault_oom_above(), _fault_sleep_per_step()
        last = [0.0]

        def render(part: list[RenderSpec]) -> Any:
            if oom_above is not None and len(part) > oom_above:
                raise InjectedOutOfMemory(f"injected: batch of {len(part)} > {oom_above}")

            def progress(step: int, total: int) -> None:
                if step_sleep:
                    time.sleep(step_sleep)
                now = time.monotonic()
                if now - last[0] > 1.0 or step == total:
                    last[0] = now
                    rt.jobs.set_progress(job_id, batch_id, len(part), step / total)

            return renderer.render(part, progress)

        def split_note(n: int, half: int) -> None:
            log.warning("%s out of memory with %d units; retrying in halves of %d", ctx, n, half)

        # Uploads of one chunk overlap the rendering of the next: the device
        # never waits on the bucket, except for the last chunk.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as uploads:
            pending: list[Future[None]] = []
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                t0 = time.perf_counter()
                for piece in render_splitting(render, part, on_split=split_note, after_oom=_free_device_memory):
                    if piece.result is None:
                        for spec in piece.specs:
                            _finish_unit(rt, job_id, batch_id, spec.key(), ok=False, reason=piece.error or "failed")
                        continue
                    pending.append(uploads.submit(_store_piece, rt, renderer, job_id, batch_id, ctx, piece.specs,
                                                  piece.result, label_of))  # fmt: skip
                log.info("%s rendered %d units in %.1fs", ctx, len(part), time.perf_counter() - t0)
            for f in pending:
                f.result()


def renderer_batch_size(rt: Runtime, spec: RenderSpec) -> int:
    from service.device_profile import default_batch_size

    return default_batch_size(rt.device, spec.size)


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _store_piece(
    rt: Runtime, renderer: Any, job_id: str, batch_id: str, ctx: str, specs: list[RenderSpec], result: Any,
    label_of: dict[str, str | None],
) -> None:  # fmt: skip
    for i, spec in enumerate(specs):
        key = spec.key()
        try:
            _storage(rt, f"upload {key[:12]}", lambda i=i, spec=spec, key=key: renderer.store_result(
                rt.store, [spec], _one(result, i), [label_of.get(key)]))  # fmt: skip
        except StorageError as exc:
            log.error("%s unit=%s key=%s upload failed for good: %s", ctx, spec.unit, key[:12], exc)
            _finish_unit(rt, job_id, batch_id, key, ok=False, reason=f"upload failed: {one_line(str(exc))}")
            continue
        log.info("%s unit=%s key=%s done", ctx, spec.unit, key[:12])
        _finish_unit(rt, job_id, batch_id, key, ok=True)


def _one(result: Any, i: int) -> Any:
    """The i-th image of a batch result, as a batch of one."""
    from dataclasses import replace

    from service.engine import TracePoint

    return replace(
        result, images=result.images[i : i + 1], display=result.display[i : i + 1],
        activation=result.activation[i : i + 1], prior=result.prior[i : i + 1],
        trace=[TracePoint(t.step, [t.activation[i]], [t.prior[i]]) for t in result.trace],
    )  # fmt: skip


def _finish_unit(rt: Runtime, job_id: str, batch_id: str, key: str, *, ok: bool, reason: str = "") -> None:
    last_of_batch = batch_id  # clears this batch's partial progress once its units are counted
    if rt.jobs.mark(job_id, key, ok, reason, last_of_batch):
        log.info("job=%s finished; building its atlas", job_id)
        build_atlas_task.apply_async(args=[job_id], queue="render")


@app.task(bind=True, name=ATLAS_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=8)
def build_atlas_task(self: Task, job_id: str) -> None:
    rt = runtime()
    job = rt.jobs.summary(job_id)
    keys = rt.jobs.order(job_id)
    units = [u for u in rt.jobs.units(job_id, keys) if u["state"] in ("done", "cached")]
    record: dict[str, Any] = dict(job)
    try:
        if units:
            tiles = [Tile(_storage(rt, "atlas tile", lambda u=u: rt.store.get(u["png"])), u["caption"], u["unit"],
                          u["key"], u.get("label")) for u in units]  # fmt: skip
            title = job.get("title") or f"{job['model']} · {job['layer']}"
            png, manifest = build_atlas(tiles, title=title)
            akey = atlas_key([u["key"] for u in units])
            png_key, json_key = layout.atlas_keys(akey)
            _storage(rt, "atlas png", lambda: rt.store.put(png_key, png, "image/png", {"job": job_id}))
            _storage(
                rt,
                "atlas manifest",
                lambda: rt.store.put(json_key, manifest_bytes(manifest), "application/json", {"job": job_id}),
            )
            rt.jobs.set_fields(job_id, atlas_key=akey)
            record["atlas_key"] = akey
        record["units"] = rt.jobs.units(job_id, keys)
        _storage(
            rt,
            "job record",
            lambda: rt.store.put(layout.job_record_key(job_id), canonical_json(record).encode(), "application/json"),
        )
    except StorageError as exc:
        log.warning("job=%s atlas: storage error, retrying: %s", job_id, exc)
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc
    log.info("job=%s atlas %s written", job_id, record.get("atlas_key"))
