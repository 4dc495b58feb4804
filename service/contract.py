"""The message between the API (which publishes work) and the workers (which
consume it), defined once: queue and task names and the typed batch message.

The API publishes with `Publisher`, the workers receive `RenderBatch` (Celery
validates it with pydantic), and the local stack and tests name the same
queue. Nothing here knows Celery: an implementation of `Publisher` does.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from service.spec import RenderSpec
from service.tune_run import TuneRequest

QUEUE = "render"
RENDER_TASK = "dreamfarm.render_batch"
ATLAS_TASK = "dreamfarm.build_atlas"
TUNE_TASK = "dreamfarm.tune_recipe"

JOB_ID_PATTERN = r"^[a-z0-9]{8,40}$"
JOB_ID = re.compile(JOB_ID_PATTERN)


class RenderItem(BaseModel):
    """One image to render, with the label its atlas tile and sidecar show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: RenderSpec
    label: str | None = None
    recipe: str | None = None  # the preset it came from (a label: the pixels depend on the spec only)


class RenderBatch(BaseModel):
    """Specs that share one optimization (equal batch keys), for one job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    batch_id: str = Field(pattern=r"^[a-z0-9]{6,40}$")
    items: tuple[RenderItem, ...] = Field(min_length=1)

    @property
    def specs(self) -> list[RenderSpec]:
        return [i.spec for i in self.items]

    def label_of(self) -> dict[str, str | None]:
        return {i.spec.key(): i.label for i in self.items}


def new_job_id() -> str:
    return secrets.token_hex(8)


def new_batch_id() -> str:
    return secrets.token_hex(6)


def make_batches(
    job_id: str, groups: Sequence[Sequence[RenderSpec]], labels: dict[str, str | None], recipe: str | None = None
) -> list[RenderBatch]:
    return [
        RenderBatch(job_id=job_id, batch_id=new_batch_id(),
                    items=tuple(RenderItem(spec=s, label=labels.get(s.key()), recipe=recipe) for s in group))
        for group in groups
    ]  # fmt: skip


class TuneTask(BaseModel):
    """A recipe search for one worker (service.tune_run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    tenant: str
    request: TuneRequest


class Publisher(Protocol):
    """Puts work on the queue (the API's side of the contract)."""

    def publish(self, batches: Sequence[RenderBatch]) -> None: ...

    def publish_atlas(self, job_id: str) -> None: ...

    def publish_tune(self, task: TuneTask) -> None: ...
