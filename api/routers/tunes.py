"""Recipe searches: start one for a model (`POST /v1/tunes`), follow it
(`GET /v1/tunes/{id}`); its result is the model's `"recipe": "tuned"`."""

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.deps import Services, read_errors, reader_for, services, writer
from api.schemas import ErrorBody
from service.config import Settings
from service.contract import TuneTask
from service.errors import NotFound, one_line
from service.tune_jobs import TuneRuns
from service.tune_run import TuneRequest, tuned_layer
from service.tuned_recipes import registered_weights
from service.user_models import require_weights

ERR: dict[str, Any] = {"model": ErrorBody}


class TuneStatus(BaseModel):
    id: str
    state: str  # queued, running, done, failed
    request: dict[str, Any]
    done: int  # candidates rendered
    total: int
    best_score: float | None
    result: dict[str, Any] | None  # when done: the recipe's bucket key, score, base score, kept changes, fields
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    status_url: str


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/tunes", tags=["tunes"])
    reader = reader_for(settings)

    @r.post("", status_code=202, response_model=TuneStatus, responses={401: ERR, 400: ERR, 503: ERR})
    def start(body: TuneRequest, s: Services = Depends(services), tenant: str = Depends(writer)) -> TuneStatus:
        """Checks the model, layer and units now (a 4xx, not a failed run
        later); the same request again, while its run is queued, running or
        done, is that run."""
        arch = s.workflows.architectures_for(tenant, body.model).get(body.model, body.size)
        require_weights(arch.entry, body.random_weights)
        tuned_layer(body, arch)
        run_id = body.content_key(tenant, registered_weights(arch.entry))
        runs = TuneRuns(s.jobs.r)
        if runs.create(run_id, tenant, body):
            try:
                s.publisher.publish_tune(TuneTask(run_id=run_id, tenant=tenant, request=body))
            except Exception as exc:  # not queued: the same POST later must start it, not find a run stuck queued
                runs.fail(run_id, f"not queued: {one_line(str(exc))}")
                raise
        return _status(runs, run_id, tenant)

    @r.get("/{run_id}", response_model=TuneStatus, responses={**read_errors(settings, ErrorBody), 404: ERR})
    def status(run_id: str, s: Services = Depends(services), tenant: str | None = Depends(reader)) -> TuneStatus:
        return _status(TuneRuns(s.jobs.r), run_id, tenant)

    return r


def _status(runs: TuneRuns, run_id: str, tenant: str | None) -> TuneStatus:
    found = runs.get(run_id, tenant) if run_id.isalnum() and len(run_id) <= 64 else None
    if found is None:
        raise NotFound(f"no tuning run {run_id[:40]!r}")
    return TuneStatus(**found, status_url=f"/v1/tunes/{run_id}")
