"""Tuned recipes kept in the bucket, one per (model, layer kind), and what
`"recipe": "tuned"` makes of a request.

A request naming the tuned recipe is resolved once, where it is submitted:
the stored recipe's fields become the request's own (fields the request sets
itself win), so the job's record holds every field, a retry plans the same
specs, and the content keys are those of the fields, as for any recipe.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import layout
from service.errors import BadRequest
from service.recipes import TUNED
from service.request import RECIPE_FIELDS, JobRequest
from service.spec import Recipe, canonical_json
from service.storage import Store
from service.validation import describe
from service.zoo import ModelEntry

#: The command line's own searches (`dreamfarm tune` without --remote).
LOCAL_TENANT = "local"


class TrialRecord(BaseModel):
    change: str
    score: float
    kept: bool


class TunedRecipe(BaseModel):
    """The best recipe a search found for a model's units of one kind."""

    model_config = ConfigDict(extra="ignore")

    model: str
    #: whose: each tenant's searches are its own ("local": the command line's)
    tenant: str = LOCAL_TENANT
    #: a registered network's weights the search ran with (None: a built-in)
    weights_sha256: str | None = None
    kind: str  # "logit", "channel" or "neuron": what the units of the tuned layer are
    layer: str
    base: str  # the recipe the search started from
    fields: dict[str, Any]  # Recipe fields (JSON form, without size)
    score: float
    base_score: float
    metric: str
    units: list[int]
    judges: list[str] = Field(default_factory=list)
    budget: int
    steps: int
    size: int
    seed: int = 0
    seconds: float = 0.0
    trials: list[TrialRecord] = Field(default_factory=list)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def changes(self) -> list[str]:
        """The moves that were kept, in order: how the result differs from its base."""
        return [t.change for t in self.trials if t.kept and t.change != "base"]


def registered_weights(entry: ModelEntry) -> str | None:
    """A registered network's weights sha256 (what its tuned recipe is for); None for a built-in."""
    return entry.weights.sha256 if entry.source == "registered" else None


def save(store: Store, record: TunedRecipe) -> str:
    key = layout.tuned_recipe_key(record.tenant, record.model, record.kind)
    store.put(key, canonical_json(record.model_dump(mode="json")).encode(), "application/json")
    return key


def load(store: Store, model: str, kind: str, tenant: str = LOCAL_TENANT) -> TunedRecipe | None:
    key = layout.tuned_recipe_key(tenant, model, kind)
    if not store.exists(key):
        return None
    return TunedRecipe.model_validate_json(store.get(key))


def apply(request: JobRequest, record: TunedRecipe) -> JobRequest:
    """The request with the tuned recipe's fields filled in where it sets none."""
    data = json.loads(request.model_dump_json())
    defaults = Recipe().model_dump(mode="json")
    for name in RECIPE_FIELDS:
        value = record.fields.get(name)
        # A field at Recipe's default is left to the request's planning, which
        # fills some (a diversity term for samples) only where none is given.
        if data.get(name) is None and value is not None and value != defaults.get(name):
            data[name] = value
    if data.get("precision") == "float64":  # a request may not ask for float64 (the API's choices)
        data["precision"] = None
    try:
        return JobRequest.model_validate_json(json.dumps(data))
    except ValidationError as exc:  # a recipe kept by another version of the service, say
        raise BadRequest(f"the tuned recipe for {record.model} ({record.kind} units) does not fit this server's "
                         f"requests ({describe(exc)}): tune it again", field="recipe") from None  # fmt: skip


def resolve(
    request: JobRequest, kind: str, store: Store, how_to_tune: str, *, tenant: str = LOCAL_TENANT,
    weights_sha256: str | None = None,
) -> JobRequest:  # fmt: skip
    """`request` itself unless it names the tuned recipe; then the request
    with the tenant's stored recipe for (its model, `kind`) applied, or a 4xx
    saying how to make one (`how_to_tune`: the command or route). A recipe
    tuned for other weights of a registered network is not used."""
    if request.recipe != TUNED:
        return request
    record = load(store, request.model, kind, tenant)
    if record is None:
        raise BadRequest(f"no tuned recipe for {request.model} ({kind} units) yet: {how_to_tune}", field="recipe")
    if record.weights_sha256 != weights_sha256:
        raise BadRequest(f"the tuned recipe for {request.model} was found with other weights than its current "
                         f"ones: {how_to_tune}", field="recipe")  # fmt: skip
    return apply(request, record)
