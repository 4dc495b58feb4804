"""Every error as JSON `{"detail": "<one printable line>", ...}` (`ErrorBody`):
the exception handlers, and pydantic's validation errors made readable."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    BadChecksum,
    Conflict,
    DreamfarmError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StorageError,
    one_line,
)
from service.zoo import Registry
from service.zoo.registry import TIMM_PREFIX

log = logging.getLogger("dreamfarm.api")
STATUS: dict[type[DreamfarmError], int] = {NotFound: 404, Conflict: 409, QuotaExceeded: 429, StorageError: 503,
                                           Forbidden: 403, PayloadTooLarge: 413, BadChecksum: 400}  # fmt: skip


def error_response(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail), **extra}, status_code=status, headers=headers)


def install(app: FastAPI, registry: Registry) -> None:
    async def user_error(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DreamfarmError)
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 422)
        if status == 503:
            log.warning("storage error: %s", one_line(str(exc)))
            return error_response(503, f"storage unavailable: {exc}")
        return error_response(status, str(exc), field=exc.field) if status == 422 else error_response(status, str(exc))

    async def unavailable(_r: Request, exc: Exception) -> JSONResponse:
        what = "job store" if isinstance(exc, redis.RedisError) else "job queue"
        log.warning("%s error: %s", what, one_line(repr(exc)))
        return error_response(503, f"{what} unavailable, try again later")

    async def http_error(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's own words
            detail = "the body could not be parsed as JSON (not UTF-8, or nested too deeply)"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    async def internal_error(r: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %r: %s", r.method, r.url.path, one_line(repr(exc)), exc_info=exc)
        return error_response(500, "internal error (logged on the server)")

    async def validation_error(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [field_error(e, registry) for e in exc.errors()]
        detail = "; ".join(f"{x['field']}: {x['message']} (got {x['got']})" for x in errors)
        return error_response(422, detail, field=errors[0]["field"] if errors else None, errors=errors)

    app.add_exception_handler(DreamfarmError, user_error)
    app.add_exception_handler(redis.RedisError, unavailable)
    app.add_exception_handler(BrokerError, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def field_error(e: Any, registry: Registry) -> dict[str, str]:
    """One pydantic error as {field, message, got}, every part one printable
    line (user input ends up in all three: a field name can be a client's
    dictionary key)."""
    loc = [p for p in e.get("loc", ()) if p != "body"]
    kind, got = e.get("type", ""), e.get("input")
    if kind == "json_invalid":
        error = (e.get("ctx") or {}).get("error", "invalid JSON")
        pos = f" at character {loc[0]}" if loc else ""
        return {"field": "body", "message": one_line(f"not valid JSON: {error}{pos}"), "got": "the body"}
    message = _message(str(e.get("msg", "invalid")).removeprefix("Value error, "), loc, kind, got, registry)
    shown = type(got).__name__ if isinstance(got, dict | list | bytes) else repr(got)
    return {
        "field": one_line(".".join(str(p) for p in loc) or "body", 120),
        "message": one_line(message, 600),
        "got": one_line(shown, 80),
    }


def _message(message: str, loc: list[Any], kind: str, got: object, registry: Registry) -> str:
    if not loc and isinstance(got, bytes):
        return "send a JSON object with the header 'Content-Type: application/json'"
    if not loc and kind == "missing":
        return "a JSON object is required"
    if not loc:
        return f"the body must be a JSON object, not {_json_type(got)}"
    if loc == ["model"] and kind == "string_pattern_mismatch":
        builtins = [n for n in registry.names() if not n.startswith(TIMM_PREFIX)]
        return message + f"; valid models: {', '.join(builtins)}, or timm/<name> (GET /v1/models?family=timm)"
    if loc == ["layer"] and kind == "string_pattern_mismatch":
        return message + "; GET /v1/models/{model} lists the layers"
    return message


def _json_type(v: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}  # fmt: skip
    return names.get(type(v), type(v).__name__)
