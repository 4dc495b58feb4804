"""From a request (model, layer, units, recipe) to validated specs and batches,
and a job's plan: what the bucket already holds, and the rest in batches.

Validation needs only the architecture (no weights), so the API host can do
it. Every problem is a `DreamfarmError` naming the field and the valid choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from service import layout, recipes
from service.contract import new_job_id
from service.errors import BadRequest, BadUnit, DreamfarmError
from service.request import JobRequest
from service.spec import Recipe, RenderSpec, UnitKind
from service.storage import Store
from service.validation import describe
from service.zoo import Architecture, LayerInfo

UnitRef = int | str


@dataclass(frozen=True)
class UnitRange:
    """Units start, start+1, …, stop-1 (stop exclusive, like Python's range)."""

    start: int
    stop: int


UnitSelection = Sequence[UnitRef] | UnitRange | str  # a str here means "all"


@dataclass(frozen=True)
class PlannedUnit:
    spec: RenderSpec
    label: str | None

    @property
    def caption(self) -> str:
        base = self.label or str(self.spec.unit)
        return f"{base} #{self.spec.sample + 1}" if self.spec.samples > 1 else base


def expand_units(arch: Architecture, layer: LayerInfo, kind: UnitKind, units: UnitSelection) -> list[int]:
    if isinstance(units, str):
        if units != "all":
            raise BadUnit(f"units must be a list, a range or 'all', got {units!r}")
        return list(range(layer.units))
    if isinstance(units, UnitRange):
        if not 0 <= units.start < units.stop <= layer.units:
            raise BadUnit(
                f"unit range {units.start}-{units.stop - 1} out of range for layer {layer.name} of "
                f"{arch.entry.name}: valid units are 0-{layer.units - 1}"
            )
        return list(range(units.start, units.stop))
    if not units:
        raise BadUnit("no units given: name at least one unit, a range, or 'all'")
    indices = [arch.unit(layer, kind, u) for u in units]
    seen: set[int] = set()
    dupes = sorted({i for i in indices if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if dupes:
        raise BadUnit(f"units listed more than once: {dupes}")
    return indices


def plan_units(
    arch: Architecture,
    *,
    layer: str,
    units: UnitSelection,
    recipe: Recipe,
    kind: str | None = None,
    seed: int = 0,
    random_weights: bool = False,
    position: tuple[int, int] | None = None,
    init_image: str | None = None,
) -> list[PlannedUnit]:
    """Validate a unit selection against the architecture and expand it into
    specs: one per unit, or `recipe.samples` per unit, consecutive."""
    info = arch.layer(layer)
    unit_kind = arch.kind(info, kind)
    pos = arch.position(info, unit_kind, position)
    indices = expand_units(arch, info, unit_kind, units)
    out = []
    for u in indices:
        for k in range(recipe.samples):
            try:
                spec = RenderSpec(
                    model=arch.entry.name, layer=info.path, kind=unit_kind, unit=u, position=pos, seed=seed,
                    random_weights=random_weights, sample=k, init_image=init_image, **recipe.model_dump(),
                )  # fmt: skip
            except ValidationError as exc:
                raise DreamfarmError(describe(exc)) from None
            out.append(PlannedUnit(spec, arch.label(info, unit_kind, u)))
    return out


#: Lucid's diversity weight when samples are asked for without one.
DEFAULT_DIVERSITY = 10.0


def request_recipe(request: JobRequest, arch: Architecture) -> Recipe:
    """The request's recipe: the named preset, the request's overrides, the
    size (default: the model's), and for samples a diversity term at a conv
    layer (default: one about two thirds of the way to the target)."""
    fields = {**request.overrides(), "size": request.size or arch.entry.input_size}
    recipe = recipes.recipe(request.recipe, fields)
    if recipe.samples > 1 and request.diversity is None and not recipe.diversity:
        recipe = recipe.model_copy(update={"diversity": DEFAULT_DIVERSITY})
    if recipe.diversity:
        where = arch.conv_layer(recipe.diversity_layer, before=request.layer)
        recipe = recipe.model_copy(update={"diversity_layer": where.path})
    if recipe.param.name == "image" and request.init_image is None:
        raise BadRequest("this recipe starts from an image: give init_image (POST /v1/images; --init-image)",
                         field="init_image")  # fmt: skip
    if request.init_image is not None and recipe.param.name != "image":
        raise BadRequest(f"init_image needs param 'image' (recipe adversarial), not {recipe.param.name!r}",
                         field="init_image")  # fmt: skip
    return recipe


def selection(request: JobRequest) -> UnitSelection:
    rng = request.checked_range()
    if rng is not None:
        return UnitRange(rng.start, rng.stop)
    return request.units  # type: ignore[return-value]


def plan_request(request: JobRequest, arch: Architecture) -> list[PlannedUnit]:
    """The one way from a request to its specs: the API, a retry and the CLI all use it."""
    return plan_units(
        arch, layer=request.layer, units=selection(request), recipe=request_recipe(request, arch),
        kind=request.kind, seed=request.seed, random_weights=request.random_weights,
        position=request.position_tuple(), init_image=request.init_image,
    )  # fmt: skip


@dataclass
class JobPlan:
    job_id: str
    request: JobRequest
    units: list[PlannedUnit]
    cached: set[str]
    batches: list[list[RenderSpec]]

    def labels(self) -> dict[str, str | None]:
        return {u.spec.key(): u.label for u in self.units}


def existing_sidecars(store: Store, prefix: str) -> set[str]:
    """Keys of every sidecar under a model/layer: one listing, not one request
    per unit (1000 HEADs would take seconds; a listing is a few pages)."""
    return {k for k in store.list(prefix) if k.endswith(".json")}


def plan_job(
    request: JobRequest, arch: Architecture, store: Store, *, batch_size: int, max_units: int | None = None,
    job_id: str | None = None,
) -> JobPlan:  # fmt: skip
    """Plan a job: expand, drop what the bucket already holds, batch the rest."""
    units = plan_request(request, arch)
    if max_units is not None and len(units) > max_units:
        what = "units" if units[0].spec.samples == 1 else "renders (units × samples)"
        raise BadUnit(f"{len(units)} {what} in one job; the limit is {max_units} (split the job)")
    if request.init_image is not None and not store.exists(layout.image_key(request.init_image)):
        raise BadRequest(f"no image {request.init_image[:16]}… in the bucket: upload it first (POST /v1/images)",
                         field="init_image")  # fmt: skip
    present = existing_sidecars(store, layout.layer_prefix(units[0].spec)) if units else set()
    cached = {u.spec.key() for u in units if layout.render_sidecar_key(u.spec) in present}
    todo = [u.spec for u in units if u.spec.key() not in cached]
    return JobPlan(job_id or new_job_id(), request, units, cached, batches(todo, request.batch_size or batch_size))


def units_with_keys(request: JobRequest, arch: Architecture, keys: Sequence[str]) -> list[PlannedUnit]:
    """Re-plan a job and keep the units with these keys (for retries)."""
    wanted = set(keys)
    return [u for u in plan_request(request, arch) if u.spec.key() in wanted]


def batches(specs: Sequence[RenderSpec], batch_size: int) -> list[list[RenderSpec]]:
    """Group specs that can share one optimization, at most `batch_size` each,
    keeping the input order within a group. The samples of one unit (a
    diversity group) always share a batch, even one larger than `batch_size`."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    by_key: dict[str, list[list[RenderSpec]]] = {}
    for s in specs:
        groups = by_key.setdefault(s.batch_key(), [])
        if groups and groups[-1][0].group_key() == s.group_key():
            groups[-1].append(s)
        else:
            groups.append([s])
    out: list[list[RenderSpec]] = []
    for groups in by_key.values():
        current: list[RenderSpec] = []
        for group in groups:
            if current and len(current) + len(group) > batch_size:
                out.append(current)
                current = []
            current = current + group
        if current:
            out.append(current)
    return out
