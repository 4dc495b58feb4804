"""Response bodies of the HTTP API (request bodies are `service.request.JobRequest`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.zoo import ModelEntry
from service.zoo.registered import ModelManifest


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
    """`source`: where the architecture comes from (torchvision, timm,
    dreamfarm for EfficientNet-Lite) or "registered" (a user's own network,
    whose `state` is "awaiting_weights" until its weights are uploaded)."""

    name: str
    family: str
    description: str
    input_size: int
    bundled: bool
    source: str = "dreamfarm"
    state: str = "ready"
    public: bool | None = None
    weights_sha256: str | None = None

    @classmethod
    def of(cls, e: ModelEntry, manifest: ModelManifest | None = None) -> ModelSummary:
        mine = {} if manifest is None else {"state": manifest.state, "public": manifest.public,
                                            "weights_sha256": manifest.weights_sha256}  # fmt: skip
        return cls(name=e.name, family=e.family, description=e.description, input_size=e.input_size, bundled=e.bundled,
                   source=e.source, **mine)  # fmt: skip


class RegisteredModel(BaseModel):
    """A registered network: its manifest (`service.zoo.registered.ModelManifest`),
    and whether it has weights yet (`state`: "awaiting_weights" or "ready")."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arch: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int
    description: str
    public: bool
    tenant: str
    weights_sha256: str | None
    weights_bytes: int | None
    weights_format: str | None
    created_at: str
    updated_at: str | None
    state: Literal["ready", "awaiting_weights"]

    @classmethod
    def of(cls, m: ModelManifest) -> RegisteredModel:
        return cls(**m.model_dump(), state=m.state)


class WeightsFromBucket(BaseModel):
    """`PUT /v1/models/{name}/weights` with an object already in the bucket instead of a body."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9._/-]+$")


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
