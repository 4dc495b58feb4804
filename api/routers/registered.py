"""Users' own networks: register one, upload its weights, delete it
(`service.user_models` does the work; `GET /v1/models` lists them).

A weights upload is the request body itself (application/octet-stream),
streamed to a temporary file with its sha256 computed on the way: never held
in memory, never stored before it is checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Services, services, writer
from api.schemas import ErrorBody, RegisteredModel, WeightsFromBucket
from service.config import Settings
from service.errors import BadChecksum, BadRequest, NotFound, PayloadTooLarge
from service.user_models import temp_path
from service.validation import describe
from service.zoo.registered import NAME, ModelRegistration

ERR: dict[str, Any] = {"model": ErrorBody}
#: The weights route, for the body limit (api.middleware.BodyLimit's `streamed`).
WEIGHTS_PATH = r"/v1/models/[^/]+/weights"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A JSON body ({"key": …}) is small; anything longer is not one.
MAX_JSON = 64 * 1024


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/models", tags=["models"])
    limit = settings.max_weights_bytes

    @r.post("", status_code=201, response_model=RegisteredModel,
            responses={400: ERR, 401: ERR, 409: ERR, 413: ERR, 422: ERR, 503: ERR})  # fmt: skip
    def register(
        body: ModelRegistration, s: Services = Depends(services), tenant: str = Depends(writer)
    ) -> RegisteredModel:  # fmt: skip
        """Register a network: checked on the meta device (no weights yet);
        its weights come next, with PUT /v1/models/{name}/weights."""
        return RegisteredModel.of(s.registered.register(body, s.registry, tenant))

    @r.put("/{name}/weights", response_model=RegisteredModel,
           responses={400: ERR, 401: ERR, 403: ERR, 404: ERR, 413: ERR, 422: ERR, 503: ERR},
           openapi_extra={"requestBody": {"content": {
               "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
               "application/json": {"schema": WeightsFromBucket.model_json_schema()}}}})  # fmt: skip
    async def put_weights(
        name: str, request: Request, s: Services = Depends(services), tenant: str = Depends(writer),
        x_content_sha256: str | None = Header(None, description="the body's sha256: a body that differs is refused"),
    ) -> RegisteredModel:  # fmt: skip
        """The network's weights: the raw file as the body (.safetensors, or a
        state dict torch.load reads with weights_only=True), or
        {"key": "<object in the bucket>"} as JSON."""
        _known_name(name)
        await run_in_threadpool(s.registered.owned, name, tenant)  # 404/403 before reading a large body
        if (request.headers.get("content-type") or "").split(";")[0].strip() == "application/json":
            ref = await _bucket_ref(request)
            m = await run_in_threadpool(s.registered.attach_object, name, tenant, ref.key, limit)
            return RegisteredModel.of(m)
        expected = (x_content_sha256 or "").strip().lower() or None
        if expected is not None and not SHA256.fullmatch(expected):
            raise BadRequest("X-Content-SHA256 must be 64 lowercase hex digits", field="X-Content-SHA256")
        path = temp_path()
        try:
            await _receive(request, path, limit, expected)
            m = await run_in_threadpool(s.registered.attach_weights, name, tenant, path)
        finally:
            path.unlink(missing_ok=True)
        return RegisteredModel.of(m)

    @r.delete("/{name}", status_code=204, response_class=Response,
              responses={401: ERR, 403: ERR, 404: ERR, 409: ERR, 503: ERR})  # fmt: skip
    def delete(name: str, s: Services = Depends(services), tenant: str = Depends(writer)) -> Response:
        """Delete a registered network; refused (409) while jobs of it are queued or running."""
        _known_name(name)
        s.registered.delete(name, tenant, s.jobs)
        return Response(status_code=204)

    return r


def _known_name(name: str) -> None:
    if not re.fullmatch(NAME, name):
        raise NotFound(f"no registered model {name[:64]!r}")


async def _receive(request: Request, path: Path, limit: int, expected: str | None) -> None:
    """The body into `path`, hashed as it comes; refused past `limit` bytes or
    if its sha256 is not `expected` (a truncated or corrupted upload)."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"weights over this server's limit of {limit} bytes "
                                      "(DREAMFARM_MAX_WEIGHTS_BYTES)")  # fmt: skip
            digest.update(chunk)
            f.write(chunk)
    if size == 0:
        raise BadRequest("no weights in the body: send the file as application/octet-stream, or "
                         '{"key": "<object in the bucket>"} as application/json', field="body")  # fmt: skip
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        raise BadChecksum(f"the body's sha256 is {actual[:16]}…, X-Content-SHA256 says {expected[:16]}…: "
                          f"{size} bytes arrived; a truncated or corrupted upload is refused")  # fmt: skip


async def _bucket_ref(request: Request) -> WeightsFromBucket:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON:
            raise PayloadTooLarge(f'a JSON body here is at most {MAX_JSON} bytes: {{"key": "…"}}')
    try:
        return WeightsFromBucket.model_validate(json.loads(body or b"null"))
    except (ValueError, ValidationError) as exc:
        detail = describe(exc) if isinstance(exc, ValidationError) else f"not JSON ({exc})"
        raise BadRequest(f'the body must be {{"key": "<object in the bucket>"}}: {detail}', field="key") from None
