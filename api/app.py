"""The HTTP API (FastAPI), versioned under /v1. (No `from __future__ import
annotations` here: FastAPI reads the route signatures, closures included.) A thin shell: validation and
planning are `service.jobs`, records are `service.jobs.JobStore`, results are
in the bucket (`service.s3`), work goes to Celery (`workers.celery_app`).

Every error body is JSON `{"detail": "<one printable line>", ...}` (`ErrorBody`);
`docs/api.md` describes routes, auth, tenants and limits."""

import hashlib
import hmac
import logging
import time
import uuid
from functools import lru_cache
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import OperationalError as BrokerError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import (
    Cancelled,
    ErrorBody,
    JobAccepted,
    JobStatus,
    LayerOut,
    ModelDetail,
    ModelSummary,
    Readiness,
    RenderPage,
)
from service import layout
from service.config import DEFAULT_TENANT, Settings
from service.errors import DreamfarmError, StorageError, one_line
from service.jobs import JOB_ID, PREFIX, JobRequest, JobStore, plan_job, specs_for_keys
from service.s3 import S3Store
from service.spec import RenderSpec
from service.storage import Store
from service.zoo import Architecture, Registry

log = logging.getLogger("dreamfarm.api")
bearer = HTTPBearer(auto_error=False, description="A tenant's API token (DREAMFARM_API_TOKEN / DREAMFARM_API_TOKENS).")
DEFAULT_API_BATCH = 32
ERR: dict[str, Any] = {"model": ErrorBody}
WWW_AUTH = {"WWW-Authenticate": "Bearer"}


def _error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail), **extra}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413,
    whether the client says its length (Content-Length) or streams it
    (chunked), reading at most `limit` bytes plus one chunk of it. The body
    read is handed on to the app as one message."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, size: str) -> JSONResponse:
        return _error(413, f"request body too large: {size} bytes, the limit is {self.limit} bytes",
                      headers={"Connection": "close"})  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _error(400, "malformed Content-Length header")(scope, receive, send)
                return
            if int(length) > self.limit:
                await self._too_large(str(int(length)))(scope, receive, send)
                return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(f"over {self.limit}")(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Auth:
    """Bearer tokens → tenants. Tokens are compared as sha256 digests with
    `hmac.compare_digest`, against every configured token (no early exit), so
    neither a token's content nor its length shows in the response time."""

    def __init__(self, settings: Settings) -> None:
        self._table = [
            (tenant, hashlib.sha256(token.get_secret_value().encode()).digest())
            for tenant, token in settings.tenant_tokens().items()
        ]

    @property
    def configured(self) -> bool:
        return bool(self._table)

    def tenant(self, creds: HTTPAuthorizationCredentials | None) -> str:
        if not self._table:
            raise HTTPException(401, "this server has no API token configured, so it accepts no requests that need "
                                "one (set DREAMFARM_API_TOKEN or DREAMFARM_API_TOKENS)", headers=WWW_AUTH)  # fmt: skip
        if creds is None or not creds.credentials:
            raise HTTPException(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                                headers=WWW_AUTH)  # fmt: skip
        digest = hashlib.sha256(creds.credentials.encode("utf-8", "replace")).digest()
        found = None
        for tenant, expected in self._table:
            if hmac.compare_digest(digest, expected):
                found = tenant
        if found is None:
            raise HTTPException(401, "invalid bearer token", headers=WWW_AUTH)
        return found


class InFlight:
    """Jobs each tenant has queued or running, for `max_jobs_in_flight`: a
    sorted set per tenant of job ids (scored by when they were added), pruned
    of finished jobs whenever it is counted. A job is added before it is
    created, then counted, and taken out again if over the limit, so that
    concurrent submits never overshoot (at worst both are refused)."""

    # A member without a job record is a submit in progress; after this long,
    # one that failed half-way.
    GRACE_S = 300.0

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    @staticmethod
    def key(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:inflight"

    def reserve(self, tenant: str, job_id: str, limit: int) -> int | None:
        """Count `job_id` in; None when that keeps the tenant within `limit`,
        else how many jobs it has in flight already (and `job_id` is out)."""
        r, key, now = self.jobs.r, self.key(tenant), time.time()
        r.zadd(key, {job_id: now})
        members: list[tuple[str, float]] = r.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        pipe = r.pipeline(transaction=False)
        for member, _ in members:
            pipe.hget(JobStore._k(member), "state")
        states = pipe.execute()
        live, stale = 0, []
        for (member, added), state in zip(members, states):
            if member == job_id or state in ("queued", "running") or (state is None and now - added < self.GRACE_S):
                live += 1
            else:
                stale.append(member)
        if stale:
            r.zrem(key, *stale)
        if live > limit:
            r.zrem(key, job_id)
            return live - 1
        return None

    def release(self, tenant: str, job_id: str) -> None:
        self.jobs.r.zrem(self.key(tenant), job_id)


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

    def architecture(self, model: str, size: int | None) -> Architecture:
        entry = self.registry.get(model)  # UnknownModel (422) names the valid models
        try:
            return self._architecture(model, size)
        except DreamfarmError:
            raise
        except Exception as exc:
            error = one_line(f"{type(exc).__name__}: {exc}", 160)
            if size is not None and size != entry.input_size and self._traces(model):
                raise DreamfarmError(
                    f"size {size} does not work for {model}: its layers cannot be computed at that size "
                    f"({error}); its native size is {entry.input_size}",
                    field="size",
                ) from None
            # The zoo cannot trace this network at all: a bug to fix there, not the client's.
            log.error("model %s cannot be traced: %s", model, error)
            raise DreamfarmError(
                f"model {model} cannot be used on this server: its layers could not be traced ({error})",
                field="model",
            ) from None

    def _traces(self, model: str) -> bool:
        try:
            self._architecture(model, None)
            return True
        except Exception:
            return False

    @lru_cache(maxsize=64)  # noqa: B019 - one Services per app, cache lives as long as it
    def _architecture(self, model: str, size: int | None) -> Architecture:
        entry = self.registry.get(model)
        return Architecture(entry, size or entry.input_size)


def _log_to_stderr() -> None:
    """The API's own log lines (job submitted, cancelled …) on stderr, next to
    uvicorn's, unless the process has configured logging itself."""
    ours = logging.getLogger("dreamfarm")
    if not ours.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    _log_to_stderr()
    svc = services or Services(settings)
    auth = Auth(settings)
    if not auth.configured:
        log.warning("no API token configured (DREAMFARM_API_TOKEN / DREAMFARM_API_TOKENS): every write is refused")

    app = FastAPI(
        title="dreamfarm",
        version="0.1.0",
        description="Distributed batch rendering of feature visualizations. See docs/api.md.",
        responses={422: ERR, 500: ERR},
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    schema_of = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated schema, plus the valid model names (the request
        model itself cannot know the zoo)."""
        if app.openapi_schema is None:
            spec = schema_of()
            model = spec.get("components", {}).get("schemas", {}).get("JobRequest", {}).get("properties", {})
            if "model" in model:
                model["model"]["enum"] = svc.registry.names()
        return app.openapi_schema or schema_of()

    app.openapi = openapi  # type: ignore[method-assign]

    def get_services() -> Services:
        return svc

    def writer(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return auth.tenant(creds)

    def protected_reader(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str | None:
        return auth.tenant(creds)

    def open_reader() -> str | None:
        return None  # anyone may read, and sees every job

    reader = protected_reader if settings.protect_reads else open_reader
    write_errors: dict[int | str, dict[str, Any]] = {401: ERR}
    read_errors: dict[int | str, dict[str, Any]] = {401: ERR} if settings.protect_reads else {}

    Svc = Annotated[Services, Depends(get_services)]
    Writer = Annotated[str, Depends(writer)]
    Reader = Annotated[str | None, Depends(reader)]

    @app.exception_handler(DreamfarmError)
    async def _user_error(_r: Request, exc: DreamfarmError) -> JSONResponse:
        if isinstance(exc, StorageError):
            log.warning("storage error: %s", one_line(str(exc)))
            return _error(503, f"storage unavailable: {exc}")
        return _error(422, str(exc), field=exc.field)

    @app.exception_handler(redis.RedisError)
    async def _redis_error(_r: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error: %s", one_line(repr(exc)))
        return _error(503, "job store unavailable, try again later")

    @app.exception_handler(BrokerError)
    async def _broker_error(_r: Request, exc: BrokerError) -> JSONResponse:
        log.warning("broker error: %s", one_line(repr(exc)))
        return _error(503, "job queue unavailable, try again later")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's own words
            detail = "the body could not be parsed as JSON (not UTF-8, or nested too deeply)"
        return _error(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(r: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %r: %s", r.method, r.url.path, one_line(repr(exc)), exc_info=exc)
        return _error(500, "internal error (logged on the server)")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e, svc.registry) for e in exc.errors()]
        detail = "; ".join(f"{x['field']}: {x['message']} (got {x['got']})" for x in errors)
        first = errors[0]["field"] if errors else None
        return _error(422, detail, field=first, errors=errors)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness, responses={503: {"model": Readiness}})
    def readyz(s: Svc) -> Any:
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
        return Readiness(status="ready")

    @app.get("/v1/models", response_model=list[ModelSummary], tags=["models"], responses=read_errors)
    def list_models(s: Svc, _t: Reader) -> list[ModelSummary]:
        out = []
        for name in s.registry.names():
            e = s.registry.get(name)
            out.append(ModelSummary(name=name, family=e.family, description=e.description, input_size=e.input_size,
                                    bundled=e.bundled))  # fmt: skip
        return out

    @app.get("/v1/models/{name}", response_model=ModelDetail, tags=["models"], responses={**read_errors, 404: ERR})
    def get_model(name: str, s: Svc, _t: Reader) -> ModelDetail:
        if name not in s.registry.names():
            raise HTTPException(404, f"unknown model {name[:64]!r}; valid models: {', '.join(s.registry.names())}")
        arch = s.architecture(name, None)
        e = arch.entry
        layers = [LayerOut(path=x.path, aliases=list(x.aliases), type=x.module_type, kinds=list(x.kinds),
                           units=x.units, shape=list(x.shape)) for x in arch.layers]  # fmt: skip
        return ModelDetail(name=name, family=e.family, description=e.description, input_size=e.input_size,
                           bundled=e.bundled, layers=layers, classes=list(e.classes))  # fmt: skip

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted, tags=["jobs"],
              responses={**write_errors, 400: ERR, 413: ERR, 429: ERR, 503: ERR})  # fmt: skip
    def submit(body: JobRequest, s: Svc, tenant: Writer) -> JobAccepted:
        _check_limits(body, settings)
        arch = s.architecture(body.model, body.size)
        batch = settings.batch_size or DEFAULT_API_BATCH
        plan = plan_job(body, arch, s.store, batch_size=batch, max_units=settings.max_units_per_job)
        inflight = InFlight(s.jobs)
        _reserve(inflight, tenant, plan.job_id, settings.max_jobs_in_flight)
        try:
            s.jobs.create(plan, tenant=tenant)
            labels = {u.spec.key(): u.label for u in plan.units}
            _enqueue(s, plan.job_id, plan.batches, labels)
        except Exception:
            _abandon(s, inflight, tenant, plan.job_id)
            raise
        log.info("job=%s tenant=%s submitted: %s %s, %d units, %d cached, %d batches", plan.job_id, tenant,
                 body.model, plan.units[0].spec.layer, len(plan.units), len(plan.cached),
                 len(plan.batches))  # fmt: skip
        return JobAccepted(id=plan.job_id, units=len(plan.units), cached=len(plan.cached),
                           enqueued_batches=len(plan.batches), status_url=f"/v1/jobs/{plan.job_id}")  # fmt: skip

    def _job_or_404(s: Services, job_id: str, tenant: str | None) -> dict[str, str]:
        """The job's record; 404 when there is none or (tenant not None) it is
        another tenant's: a tenant cannot even tell that another's job exists."""
        job = s.jobs.get(job_id) if JOB_ID.fullmatch(job_id) else {}  # fullmatch: no trailing newline
        if not job or (tenant is not None and job.get("tenant", DEFAULT_TENANT) != tenant):
            raise HTTPException(404, f"no job {job_id[:40]!r}")
        return job

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], responses={**read_errors, 404: ERR})
    def status(job_id: str, s: Svc, tenant: Reader) -> JobStatus:
        _job_or_404(s, job_id, tenant)
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
             responses={**read_errors, 404: ERR})  # fmt: skip
    def renders(
        job_id: str, s: Svc, tenant: Reader,
        offset: Annotated[int, Query(ge=0, le=10**7)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> RenderPage:  # fmt: skip
        job = _job_or_404(s, job_id, tenant)
        total = int(job["total"])
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

    @app.delete("/v1/jobs/{job_id}", response_model=Cancelled, tags=["jobs"], responses={**write_errors, 404: ERR})
    def cancel(job_id: str, s: Svc, tenant: Writer) -> Cancelled:
        _job_or_404(s, job_id, tenant)
        cancelled = s.jobs.cancel(job_id)
        if cancelled:
            InFlight(s.jobs).release(tenant, job_id)
            log.info("job=%s tenant=%s cancelled", job_id, tenant)
        return Cancelled(id=job_id, cancelled=cancelled, state=s.jobs.state(job_id))

    @app.post("/v1/jobs/{job_id}/retry", status_code=202, response_model=JobAccepted, tags=["jobs"],
              responses={**write_errors, 404: ERR, 409: ERR, 429: ERR, 503: ERR})  # fmt: skip
    def retry(job_id: str, s: Svc, tenant: Writer) -> JobAccepted:
        job = _job_or_404(s, job_id, tenant)
        failed = s.jobs.failed_keys(job_id)
        if job.get("state") != "done_with_failures" or not failed:
            raise HTTPException(409, "only a job that ended with failed units can be retried")
        try:
            request = JobRequest.model_validate_json(job["request"])
        except ValueError:
            raise HTTPException(409, "this job's request is no longer valid on this server; submit a new job") from None
        arch = s.architecture(request.model, request.size)
        units = specs_for_keys(request, arch, failed)
        inflight = InFlight(s.jobs)
        _reserve(inflight, tenant, job_id, settings.max_jobs_in_flight)
        s.jobs.reopen(job_id)
        from service.planning import batches

        groups = batches([u.spec for u in units], settings.batch_size or DEFAULT_API_BATCH)
        _enqueue(s, job_id, groups, {u.spec.key(): u.label for u in units})
        log.info("job=%s tenant=%s retried: %d failed units, %d batches", job_id, tenant, len(units), len(groups))
        return JobAccepted(id=job_id, units=int(job["total"]), cached=int(job["cached"]),
                           enqueued_batches=len(groups), status_url=f"/v1/jobs/{job_id}")  # fmt: skip

    return app


def _check_limits(body: JobRequest, settings: Settings) -> None:
    """This server's limits, tighter than the schema's (which are the engine's)."""
    if body.steps > settings.max_steps:
        raise DreamfarmError(f"steps {body.steps} over this server's limit of {settings.max_steps}", field="steps")
    if body.size is not None and body.size > settings.max_size:
        raise DreamfarmError(f"size {body.size} over this server's limit of {settings.max_size}", field="size")
    if isinstance(body.units, list) and len(body.units) > settings.max_units_per_job:
        raise DreamfarmError(f"{len(body.units)} units in one job; the limit is {settings.max_units_per_job} "
                             "(split the job)", field="units")  # fmt: skip


def _reserve(inflight: InFlight, tenant: str, job_id: str, limit: int) -> None:
    busy = inflight.reserve(tenant, job_id, limit)
    if busy is not None:
        raise HTTPException(429, f"too many jobs in flight: this token has {busy} jobs queued or running and the "
                            f"limit is {limit}; wait for some to finish or cancel some")  # fmt: skip


def _abandon(s: Services, inflight: InFlight, tenant: str, job_id: str) -> None:
    """A submit failed half-way (Redis or the broker went away): the job, if
    it was created, is cancelled (workers skip what was enqueued)."""
    try:
        inflight.release(tenant, job_id)
        if s.jobs.exists(job_id):
            s.jobs.cancel(job_id)
    except Exception as exc:
        log.warning("job=%s could not be cancelled after a failed submit: %s", job_id, one_line(repr(exc)))


def _field_error(e: Any, registry: Registry) -> dict[str, str]:
    """One pydantic error as {field, message, got}, every part one printable
    line (user input ends up in all three: a field name can be a client's
    dictionary key)."""
    loc = [p for p in e.get("loc", ()) if p != "body"]
    kind, got = e.get("type", ""), e.get("input")
    message = str(e.get("msg", "invalid"))
    if kind == "json_invalid":
        error = (e.get("ctx") or {}).get("error", "invalid JSON")
        pos = f" at character {loc[0]}" if loc else ""
        return {"field": "body", "message": one_line(f"not valid JSON: {error}{pos}"), "got": "the body"}
    message = message.removeprefix("Value error, ")
    if not loc and isinstance(got, bytes):
        message = "send a JSON object with the header 'Content-Type: application/json'"
    elif not loc and kind == "missing":
        message = "a JSON object is required"
    elif not loc:
        message = f"the body must be a JSON object, not {_json_type(got)}"
    elif loc == ["model"] and kind == "string_pattern_mismatch":
        message += f"; valid models: {', '.join(registry.names())}"
    elif loc == ["layer"] and kind == "string_pattern_mismatch":
        message += "; GET /v1/models/{model} lists the layers"
    shown = type(got).__name__ if isinstance(got, dict | list | bytes) else repr(got)
    return {
        "field": one_line(".".join(str(p) for p in loc) or "body", 120),
        "message": one_line(message, 600),
        "got": one_line(shown, 80),
    }


def _json_type(v: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}  # fmt: skip
    return names.get(type(v), type(v).__name__)


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
