"""The HTTP API (FastAPI), versioned under /v1: a thin shell. Requests are
`service.request.JobRequest`, workflows are `service.submission`, records are
`service.jobstore`, results are in the bucket, and work goes on the queue
through `api.publisher`. `docs/api.md` describes routes, auth, tenants and
limits."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from api import errors
from api.deps import Services, reader_for
from api.middleware import BodyLimit
from api.routers import gallery, health, images, jobs, models, recipes, registered, tunes
from api.schemas import ErrorBody
from service import logs
from service.config import Settings
from service.zoo.registry import TIMM_PREFIX

log = logging.getLogger("dreamfarm.api")


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    logs.configure(settings.log_format)
    svc = services or Services(settings)
    if not svc.auth.configured:
        log.warning("no API token configured (DREAMFARM_API_TOKEN / DREAMFARM_API_TOKENS): every write is refused")
    app = FastAPI(title="dreamfarm", version="0.2.0", responses={422: {"model": ErrorBody}, 500: {"model": ErrorBody}},
                  description="Distributed batch rendering of feature visualizations. See docs/api.md.")  # fmt: skip
    app.state.services = svc
    # A registration lists its class names: tens of thousands of them are more than a job body's limit.
    per_path = {"/v1/images": settings.max_image_bytes, "/v1/models": max(settings.max_body_bytes, 4 << 20)}
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, per_path=per_path,
                       streamed={registered.WEIGHTS_PATH: settings.max_weights_bytes})  # fmt: skip
    errors.install(app, svc.registry)
    app.include_router(health.router)
    app.include_router(models.router(settings))
    app.include_router(registered.router(settings))
    app.include_router(jobs.router(settings))
    app.include_router(recipes.router(settings))
    app.include_router(tunes.router(settings))
    app.include_router(images.router)
    app.include_router(gallery.router(settings))
    svc.metrics.install(app, reader_for(settings))
    _list_models_in_schema(app, svc)
    return app


def _list_models_in_schema(app: FastAPI, svc: Services) -> None:
    """The generated schema, plus the valid model names (the request model
    itself cannot know the zoo)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            props = spec.get("components", {}).get("schemas", {}).get("JobRequest", {}).get("properties", {})
            if "model" in props:
                # The built-in families' names; timm's 1,371 (`timm/<name>`, all valid too)
                # would make the schema 67 KB: GET /v1/models?family=timm lists them.
                props["model"]["enum"] = [n for n in svc.registry.names() if not n.startswith(TIMM_PREFIX)]
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
