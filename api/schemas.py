"""Response bodies of the HTTP API (request bodies are `service.request.JobRequest`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.zoo import ModelEntry


class FieldError(BaseModel):
    field: str
    message: str
    got: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: `detail` is one printable line that names the
    problem (and the valid choices, where there are choices)."""

    detail: str
    field: str | None = None
    errors: list[FieldError] | None = None


class Readiness(BaseModel):
    status: str
    detail: dict[str, str] | None = None


class Cancelled(BaseModel):
    id: str
    cancelled: bool
    state: str | None


class ModelSummary(BaseModel):
    name: str
    family: str
    description: str
    input_size: int
    bundled: bool

    @classmethod
    def of(cls, e: ModelEntry) -> ModelSummary:
        return cls(name=e.name, family=e.family, description=e.description, input_size=e.input_size, bundled=e.bundled)


class LayerOut(BaseModel):
    path: str
    aliases: list[str]
    type: str
    kinds: list[str]
    units: int
    shape: list[int]


class ModelDetail(ModelSummary):
    layers: list[LayerOut]
    classes: list[str]


class JobAccepted(BaseModel):
    id: str
    units: int
    cached: int
    enqueued_batches: int
    status_url: str


class Totals(BaseModel):
    units: int
    cached: int
    done: int
    failed: int
    pending: int
    batches: int


class Failure(BaseModel):
    key: str
    error: str


class LayerStatus(BaseModel):
    """One layer of a job with `layers`: its units' counts, its progress (its
    finished units and its running batches' steps) and, once the job is
    finished, its atlas."""

    layer: str
    path: str
    kind: str
    units: int
    cached: int
    done: int
    failed: int
    pending: int
    progress: float
    atlas_key: str | None
    atlas_url: str | None = None
    atlas_manifest_url: str | None = None


class JobStatus(BaseModel):
    """`layer` is the job's layer's module path (for a job with `layers`,
    its first's); `layers` is None for a single-layer job. A job with
    `layers` has an atlas per layer (`layers[].atlas_url`); its `atlas_url`
    is its first layer's (the first that has one)."""

    id: str
    state: str
    model: str
    layer: str
    title: str | None
    totals: Totals
    progress: float
    failures: list[Failure]
    atlas_key: str | None
    recipe: str = "lecture"
    samples: int = 1
    quality: dict[str, dict[str, int]] = {}
    atlas_url: str | None
    atlas_manifest_url: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    request: dict[str, Any]
    layers: list[LayerStatus] | None = None


class RenderItem(BaseModel):
    key: str
    unit: int
    sample: int = 0
    label: str | None
    caption: str
    state: str
    error: str | None
    png: str
    sidecar: str
    png_url: str | None
    sidecar_url: str | None


class RenderPage(BaseModel):
    job_id: str
    offset: int
    limit: int
    total: int
    next_offset: int | None
    items: list[RenderItem]


class EventPage(BaseModel):
    """A job's events, oldest first: each has `at` (unix time), `type`
    (submitted, batch_started, unit_rendered, unit_exists, unit_failed,
    oom_split, atlas_written, cancelled, retried) and the type's fields."""

    job_id: str
    offset: int
    total: int
    items: list[dict[str, Any]]


class RecipeOut(BaseModel):
    name: str
    description: str
    fields: dict[str, Any]


class ImageStored(BaseModel):
    """An uploaded image; a job names it by `key` (`"init_image": key`)."""

    key: str
    width: int
    height: int
    bytes: int
    content_type: str


class AtlasQueued(BaseModel):
    """The atlas will be rebuilt; `atlas_key` in the job's status changes when it is."""

    id: str
    status_url: str
