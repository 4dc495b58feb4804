"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import Services, services
from api.schemas import Readiness
from service.errors import one_line

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(s: Services = Depends(services)) -> Any:
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
