"""Jobs: submit, follow, page through renders and events, cancel, retry."""

import logging
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.deps import Services, read_errors, reader_for, services, writer
from api.schemas import AtlasQueued, Cancelled, ErrorBody, EventPage, JobAccepted, JobStatus, RenderPage
from service import layout, logs
from service.config import Settings
from service.request import JobRequest

ERR: dict[str, Any] = {"model": ErrorBody}
log = logging.getLogger("dreamfarm.api")
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {401: ERR, 503: ERR}


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    reader = reader_for(settings)
    reads: dict[int | str, dict[str, Any]] = {**read_errors(settings, ErrorBody), 404: ERR}

    @r.post("", status_code=202, response_model=JobAccepted, responses={**WRITE_ERRORS, 400: ERR, 413: ERR, 429: ERR})
    def submit(body: JobRequest, s: Services = Depends(services), tenant: str = Depends(writer)) -> JobAccepted:
        plan = s.workflows.submit(body, tenant)
        s.metrics.submitted(plan)
        with logs.bound(plan.job_id):
            log.info("accepted: %d units, %d cached", len(plan.units), len(plan.cached))
        return JobAccepted(id=plan.job_id, units=len(plan.units), cached=len(plan.cached),
                           enqueued_batches=len(plan.batches), status_url=f"/v1/jobs/{plan.job_id}")  # fmt: skip

    @r.get("/{job_id}", response_model=JobStatus, responses=reads)
    def status(job_id: str, s: Services = Depends(services), tenant: str | None = Depends(reader)) -> JobStatus:
        s.workflows.job(job_id, tenant)
        summary = s.jobs.summary(job_id)
        for layer in summary["layers"] or []:
            layer["atlas_url"], layer["atlas_manifest_url"] = _atlas_urls(s, layer["atlas_key"])
        png_url, manifest_url = _atlas_urls(s, summary["atlas_key"])
        return JobStatus(**summary, atlas_url=png_url, atlas_manifest_url=manifest_url)

    @r.get("/{job_id}/renders", response_model=RenderPage, responses=reads)
    def renders(
        job_id: str, offset: int = Query(0, ge=0, le=10**7), limit: int = Query(100, ge=1, le=500),
        s: Services = Depends(services), tenant: str | None = Depends(reader),
    ) -> RenderPage:  # fmt: skip
        total = int(s.workflows.job(job_id, tenant)["total"])
        items = [_with_urls(s, u) for u in s.jobs.units(job_id, s.jobs.order(job_id, offset, offset + limit - 1))]
        nxt = offset + limit if offset + limit < total else None
        return RenderPage(job_id=job_id, offset=offset, limit=limit, total=total, next_offset=nxt, items=items)

    @r.get("/{job_id}/events", response_model=EventPage, responses=reads)
    def events(
        job_id: str, offset: int = Query(0, ge=0, le=10**7), limit: int = Query(1000, ge=1, le=5000),
        s: Services = Depends(services), tenant: str | None = Depends(reader),
    ) -> EventPage:  # fmt: skip
        s.workflows.job(job_id, tenant)
        total = s.jobs.event_count(job_id)
        return EventPage(job_id=job_id, offset=offset, total=total, items=s.jobs.events(job_id, offset, limit))

    @r.delete("/{job_id}", response_model=Cancelled, responses={**WRITE_ERRORS, 404: ERR})
    def cancel(job_id: str, s: Services = Depends(services), tenant: str = Depends(writer)) -> Cancelled:
        cancelled = s.workflows.cancel(job_id, tenant)
        return Cancelled(id=job_id, cancelled=cancelled, state=s.jobs.state(job_id))

    @r.post("/{job_id}/retry", status_code=202, response_model=JobAccepted,
            responses={**WRITE_ERRORS, 404: ERR, 409: ERR, 429: ERR})  # fmt: skip
    def retry(job_id: str, s: Services = Depends(services), tenant: str = Depends(writer)) -> JobAccepted:
        enqueued = s.workflows.retry(job_id, tenant)
        job = s.jobs.get(job_id)
        return JobAccepted(id=job_id, units=int(job["total"]), cached=int(job["cached"]), enqueued_batches=enqueued,
                           status_url=f"/v1/jobs/{job_id}")  # fmt: skip

    @r.post("/{job_id}/atlas", status_code=202, response_model=AtlasQueued,
            responses={**WRITE_ERRORS, 404: ERR, 409: ERR})  # fmt: skip
    def rebuild_atlas(job_id: str, s: Services = Depends(services), tenant: str = Depends(writer)) -> AtlasQueued:
        s.workflows.rebuild_atlas(job_id, tenant)
        return AtlasQueued(id=job_id, status_url=f"/v1/jobs/{job_id}")

    return r


def _atlas_urls(s: Services, atlas_key: str | None) -> tuple[str | None, str | None]:
    """Presigned URLs of an atlas's PNG and manifest (None, None before it exists)."""
    if not atlas_key:
        return None, None
    png, manifest = layout.atlas_keys(atlas_key)
    return s.url(png), s.url(manifest)


def _with_urls(s: Services, unit: dict[str, Any]) -> dict[str, Any]:
    ready = unit["state"] in ("done", "cached")
    return {**unit, "png_url": s.url(unit["png"]) if ready else None,
            "sidecar_url": s.url(unit["sidecar"]) if ready else None}  # fmt: skip
