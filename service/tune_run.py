"""One tuning run, from its request to the record kept in the bucket: the part
the CLI (`dreamfarm tune`) and the worker (`POST /v1/tunes`) share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.errors import BadRequest
from service.recipes import DEFAULT_RECIPE, PRESETS
from service.recipes import recipe as preset_recipe
from service.spec import MAX_SIZE, MIN_SIZE, UnitKind, canonical_json
from service.tuned_recipes import LOCAL_TENANT, TrialRecord, TunedRecipe, registered_weights

if TYPE_CHECKING:
    from service.renderer import Renderer
    from service.spec import RenderSpec
    from service.tuning import ProgressFn
    from service.zoo import Architecture

#: Presets a search cannot start from: the adversarial one needs a photo.
NOT_TUNABLE = ("adversarial",)
MAX_TUNE_UNITS = 16
MAX_BUDGET = 64
MAX_TUNE_STEPS = 1024


class TuneRequest(BaseModel):
    """A search for a model's best recipe (the API's body, the CLI's flags).

    Cost: `budget` candidates, each rendering `count` units (or `units`) for
    `steps` steps: budget × count × steps image-steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=64, pattern=r"^(?:timm/)?[a-z0-9_]+$")
    layer: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$",
                              description="default: the logits")  # fmt: skip
    kind: UnitKind | None = None
    units: list[int] | None = Field(None, min_length=1, max_length=MAX_TUNE_UNITS)
    count: int = Field(4, ge=1, le=MAX_TUNE_UNITS, description="units drawn (seeded) when `units` is not given")
    budget: int = Field(8, ge=1, le=MAX_BUDGET, description="candidate recipes rendered, the base included")
    recipe: str | None = Field(None, max_length=32, description="the preset the search starts from (default: the "
                               "default recipe)")  # fmt: skip
    steps: int | None = Field(None, ge=1, le=MAX_TUNE_STEPS,
                              description="steps per candidate in the search (default: the recipe's); the tuned "
                              "recipe keeps the recipe's own step count")  # fmt: skip
    size: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE)
    seed: int = Field(0, ge=0, le=2**31)
    random_weights: bool = Field(False, description="benchmarks and tests only: the scores mean nothing")

    @field_validator("recipe")
    @classmethod
    def _tunable(cls, name: str | None) -> str | None:
        if name is not None and (name not in PRESETS or name in NOT_TUNABLE):
            valid = ", ".join(n for n in PRESETS if n not in NOT_TUNABLE)
            raise ValueError(f"a search starts from one of the presets {valid}, not {name!r}")
        return name

    def base(self) -> str:
        return self.recipe or DEFAULT_RECIPE

    def image_steps(self) -> int:
        steps = self.steps or preset_recipe(self.base()).steps
        return self.budget * (len(self.units) if self.units else self.count) * steps

    def content_key(self, tenant: str, weights_sha256: str | None = None) -> str:
        """Equal requests of one tenant, on the same weights, are one run (a
        second POST finds the first)."""
        data = {"tenant": tenant, "weights": weights_sha256, **self.model_dump(mode="json")}
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:24]


def tuned_layer(request: TuneRequest, arch: Architecture) -> tuple[str, UnitKind, tuple[int, ...]]:
    """The layer's module path, the kind of its units and the units to tune on."""
    from service.tuning import sample_units

    name = request.layer or ("logits" if _has(arch, "logits") else arch.layers[-1].path)
    info = arch.layer(name)
    kind = arch.kind(info, request.kind)
    if request.units is not None:
        bad = [u for u in request.units if not 0 <= u < info.units]
        if bad:
            raise BadRequest(f"units {bad[:5]} are not in layer {info.name} of {arch.entry.name} "
                             f"(0-{info.units - 1})", field="units")  # fmt: skip
        units = tuple(sorted(set(request.units)))
    else:
        units = sample_units(request.count, info.units, request.seed)
    return info.path, kind, units


def _has(arch: Architecture, name: str) -> bool:
    return any(name in x.aliases for x in arch.layers)


def run(
    request: TuneRequest, arch: Architecture, renderer_for: Callable[[RenderSpec], Renderer],
    progress: ProgressFn | None = None, *, tenant: str = LOCAL_TENANT,
) -> TunedRecipe:  # fmt: skip
    """The search, on the renderer `renderer_for` gives for the model; the
    record to keep (service.tuned_recipes.save)."""
    from service import tuning

    base_name = request.base()
    size = request.size or arch.entry.input_size
    base = preset_recipe(base_name, {"steps": request.steps, "size": size})
    layer, kind, units = tuned_layer(request, arch)
    weights = registered_weights(arch.entry)
    target = tuning.Target(model=arch.entry.name, layer=layer, kind=kind, units=units, size=size, seed=request.seed,
                          random_weights=request.random_weights, weights_sha256=weights)  # fmt: skip
    renderer = renderer_for(tuning.specs_for(target, tuning.recipe_fields(base))[0])
    result = tuning.tune(lambda specs: renderer.render(specs), target, base_name, base, entry=renderer.entry,
                         net=renderer.net, judges=renderer.judges, budget=request.budget, seed=request.seed,
                         progress=progress)  # fmt: skip
    # A search may run fewer steps per candidate than the recipe renders with.
    fields = {**result.fields, "steps": preset_recipe(base_name).steps}
    return TunedRecipe(
        model=arch.entry.name, tenant=tenant, weights_sha256=weights, kind=kind, layer=layer, base=base_name,
        fields=fields,
        score=round(result.score, 6), base_score=round(result.base_score, 6), metric=result.metric,
        units=list(units), judges=[j.entry.name for j in renderer.judges if j.entry.classes == renderer.entry.classes],
        budget=request.budget, steps=base.steps, size=size, seed=request.seed, seconds=round(result.seconds, 2),
        trials=[TrialRecord(change=t.change, score=round(t.score, 6), kept=t.kept) for t in result.trials],
    )  # fmt: skip
