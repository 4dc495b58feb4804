"""The HTTP API (FastAPI), versioned under /v1. (No `from __future__ import
annotations` here: FastAPI reads the route signatures, closures included.) A thin shell: validation and
planning are `service.jobs`, records are `service.jobs.JobStore`, results are
in the bucket (`service.s3`), work goes to Celery (`workers.celery_app`)."""

import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.middleware.base import BaseHTTPMiddleware

from api.schemas import (
    ErrorBody,
    JobAccepted,
    JobStatus,
    LayerOut,
    ModelDetail,
    ModelSummary,
    RenderPage,
)
from service import layout
from service.config import Settings
from service.errors import DreamfarmError, one_line
from service.jobs import JOB_ID, JobRequest, JobStore, plan_job, specs_for_keys
from service.s3 import S3Store
from service.spec import RenderSpec
from service.storage import Store
from service.zoo import Architecture, Registry

log = logging.getLogger("dreamfarm.api")
bearer = HTTPBearer(auto_error=False)
DEFAULT_API_BATCH = 32


class BodyLimit(BaseHTTPMiddleware):
    """Refuse oversized bodies before parsing them."""

    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
        if request.method in ("POST", "PUT", "PATCH") and length is None:
            body = await request.body()
            if len(body) > self.limit:
                return JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
        return await call_next(request)


class Services:
    """Everything the routes need, made once per app."""

    def __init__(self, settings: Settings, store: Store | None = None, jobs: JobStore | None = None) -> None:
        self.settings = settings
        self.registry = Registry()
        self._store = store
        self._jobs = jobs
        self._celery: Any = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = S3Store.from_settings(self.settings)
        return self._store

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore.from_url(self.settings.redis_url)
        return self._jobs

    @property
    def celery(self) -> Any:
        if self._celery is None:
            from workers.celery_app import make_celery

            self._celery = make_celery(self.settings)
        return self._celery

    @lru_cache(maxsize=64)  # noqa: B019 - one Services per app, cache lives as long as it
    def architecture(self, model: str, size: int | None) -> Architecture:
        entry = self.registry.get(model)
        return Architecture(entry, size or entry.input_size)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    svc = services or Services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="dreamfarm",
        version="0.1.0",
        description="Distributed batch rendering of feature visualizations.",
        lifespan=lifespan,
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    def get_services() -> Services:
        return svc

    def _check_token(creds: HTTPAuthorizationCredentials | None) -> str:
        expected = settings.api_token.get_secret_value() if settings.api_token else None
        if expected is None:
            return "default"
        given = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return "default"

    def writer(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return _check_token(creds)

    def reader(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return _check_token(creds) if settings.protect_reads else "default"

    Svc = Annotated[Services, Depends(get_services)]

    @app.exception_handler(DreamfarmError)
    async def _user_error(_r: Request, exc: DreamfarmError) -> JSONResponse:
        return JSONResponse({"detail": one_line(str(exc)), "field": exc.field}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            got = e.get("input")
            shown = repr(got)[:80] if not isinstance(got, dict | list) else type(got).__name__
            errors.append({"field": loc, "message": e.get("msg", "invalid"), "got": shown})
        detail = "; ".join(f"{x['field']}: {x['message']} (got {x['got']})" for x in errors)
        return JSONResponse({"detail": one_line(detail), "errors": errors}, status_code=422)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorBody}})
    def readyz(s: Svc) -> JSONResponse:
        problems = {}
        try:
            s.jobs.ping()
        except Exception as exc:
            problems["redis"] = one_line(str(exc), 200)
        try:
            ping = getattr(s.store, "ping", None)
            if ping is not None:
                ping()
        except Exception as exc:
            problems["bucket"] = one_line(str(exc), 200)
        if problems:
            return JSONResponse({"status": "unavailable", "detail": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/v1/models", response_model=list[ModelSummary], tags=["models"])
    def list_models(s: Svc, _t: Annotated[str, Depends(reader)]) -> list[ModelSummary]:
        out = []
        for name in s.registry.names():
            e = s.registry.get(name)
            out.append(ModelSummary(name=name, family=e.family, description=e.description, input_size=e.input_size,
                                    bundled=e.bundled))  # fmt: skip
        return out

    @app.get("/v1/models/{name}", response_model=ModelDetail, tags=["models"], responses={404: {"model": ErrorBody}})
    def get_model(name: str, s: Svc, _t: Annotated[str, Depends(reader)]) -> ModelDetail:
        if name not in s.registry.names():
            raise HTTPException(
                404, one_line(f"unknown model {name[:64]!r}; valid models: {', '.join(s.registry.names())}")
            )
        arch = s.architecture(name, None)
        e = arch.entry
        layers = [LayerOut(path=x.path, aliases=list(x.aliases), type=x.module_type, kinds=list(x.kinds),
                           units=x.units, shape=list(x.shape)) for x in arch.layers]  # fmt: skip
        return ModelDetail(name=name, family=e.family, description=e.description, input_size=e.input_size,
                           bundled=e.bundled, layers=layers, classes=list(e.classes))  # fmt: skip

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted, tags=["jobs"])
    def submit(body: JobRequest, s: Svc, tenant: Annotated[str, Depends(writer)]) -> JobAccepted:
        if body.steps > settings.max_steps:
            raise DreamfarmError(f"steps {body.steps} over this server's limit of {settings.max_steps}", field="steps")
        if body.size is not None and body.size > settings.max_size:
            raise DreamfarmError(f"size {body.size} over this server's limit of {settings.max_size}", field="size")
        arch = s.architecture(body.model, body.size)
        batch = settings.batch_size or DEFAULT_API_BATCH
        plan = plan_job(body, arch, s.store, batch_size=batch, max_units=settings.max_units_per_job)
        s.jobs.create(plan, tenant=tenant)
        labels = {u.spec.key(): u.label for u in plan.units}
        _enqueue(s, plan.job_id, plan.batches, labels)
        log.info("job=%s submitted: %s %s, %d units, %d cached, %d batches", plan.job_id, body.model,
                 plan.units[0].spec.layer, len(plan.units), len(plan.cached), len(plan.batches))  # fmt: skip
        return JobAccepted(id=plan.job_id, units=len(plan.units), cached=len(plan.cached),
                           enqueued_batches=len(plan.batches), status_url=f"/v1/jobs/{plan.job_id}")  # fmt: skip

    def _job_or_404(s: Services, job_id: str) -> None:
        if not JOB_ID.match(job_id) or not s.jobs.exists(job_id):
            raise HTTPException(404, f"no job {job_id[:40]!r}")

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], responses={404: {"model": ErrorBody}})
    def status(job_id: str, s: Svc, _t: Annotated[str, Depends(reader)]) -> JobStatus:
        _job_or_404(s, job_id)
        summary = s.jobs.summary(job_id)
        atlas_url = manifest_url = None
        if summary["atlas_key"]:
            png, man = layout.atlas_keys(summary["atlas_key"])
            atlas_url, manifest_url = (
                s.store.url(png, settings.presign_expires_s),
                s.store.url(man, settings.presign_expires_s),
            )
        return JobStatus(**summary, atlas_url=atlas_url, atlas_manifest_url=manifest_url)

    @app.get("/v1/jobs/{job_id}/renders", response_model=RenderPage, tags=["jobs"],
             responses={404: {"model": ErrorBody}})  # fmt: skip
    def renders(
        job_id: str, s: Svc, _t: Annotated[str, Depends(reader)],
        offset: Annotated[int, Query(ge=0, le=10**7)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> RenderPage:  # fmt: skip
        _job_or_404(s, job_id)
        total = int(s.jobs.get(job_id)["total"])
        keys = s.jobs.order(job_id, offset, offset + limit - 1)
        items = []
        for u in s.jobs.units(job_id, keys):
            ready = u["state"] in ("done", "cached")
            items.append(
                {
                    **u,
                    "png_url": s.store.url(u["png"], settings.presign_expires_s) if ready else None,
                    "sidecar_url": s.store.url(u["sidecar"], settings.presign_expires_s) if ready else None,
                }
            )
        nxt = offset + limit if offset + limit < total else None
        return RenderPage(job_id=job_id, offset=offset, limit=limit, total=total, next_offset=nxt, items=items)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], responses={404: {"model": ErrorBody}})
    def cancel(job_id: str, s: Svc, _t: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        _job_or_404(s, job_id)
        cancelled = s.jobs.cancel(job_id)
        return {"id": job_id, "cancelled": cancelled, "state": s.jobs.state(job_id)}

    @app.post("/v1/jobs/{job_id}/retry", status_code=202, response_model=JobAccepted, tags=["jobs"],
              responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})  # fmt: skip
    def retry(job_id: str, s: Svc, _t: Annotated[str, Depends(writer)]) -> JobAccepted:
        _job_or_404(s, job_id)
        failed = s.jobs.failed_keys(job_id)
        if s.jobs.state(job_id) != "done_with_failures" or not failed:
            raise HTTPException(409, "only a job that ended with failed units can be retried")
        job = s.jobs.get(job_id)
        request = JobRequest.model_validate_json(job["request"])
        arch = s.architecture(request.model, request.size)
        units = specs_for_keys(request, arch, failed)
        s.jobs.reopen(job_id)
        from service.planning import batches

        groups = batches([u.spec for u in units], settings.batch_size or DEFAULT_API_BATCH)
        _enqueue(s, job_id, groups, {u.spec.key(): u.label for u in units})
        return JobAccepted(id=job_id, units=int(job["total"]), cached=int(job["cached"]),
                           enqueued_batches=len(groups), status_url=f"/v1/jobs/{job_id}")  # fmt: skip

    return app


def _enqueue(s: Services, job_id: str, groups: list[list[RenderSpec]], labels: dict[str, str | None]) -> None:
    from workers.celery_app import QUEUE, RENDER_TASK

    with s.celery.producer_or_acquire() as producer:
        for group in groups:
            batch_id = uuid.uuid4().hex[:12]
            s.celery.send_task(
                RENDER_TASK, queue=QUEUE, producer=producer,
                kwargs={"job_id": job_id, "batch_id": batch_id, "specs": [x.model_dump(mode="json") for x in group],
                        "labels": [labels.get(x.key()) for x in group]},
            )  # fmt: skip
