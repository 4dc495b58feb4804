"""From a request (model, layer or layers, units, recipe) to validated specs
and batches, and a job's plan: what the bucket already holds, and the rest in
batches.

Validation needs only the architecture (no weights), so the API host can do
it. Every problem is a `DreamfarmError` naming the field and the valid choices.

A request names one `layer`, or several `layers` (or "all", the whole network:
`network_layers`); its `units` apply to each layer. Specs are planned layer
after layer, and batches never mix layers (the layer is part of the batch key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from service import layout, recipes
from service.contract import new_job_id
from service.errors import BadRequest, BadUnit, DreamfarmError, OverLimit, UnknownLayer
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
    return _specs(arch, info, unit_kind, indices, recipe, seed=seed, random_weights=random_weights, position=pos,
                  init_image=init_image)  # fmt: skip


def _specs(
    arch: Architecture, info: LayerInfo, kind: UnitKind, indices: Sequence[int], recipe: Recipe, *, seed: int,
    random_weights: bool, position: tuple[int, int] | None, init_image: str | None,
) -> list[PlannedUnit]:  # fmt: skip
    """One spec per unit and sample: the first validated, the others its
    copies (`RenderSpec.for_units`: a whole network is tens of thousands)."""
    if not indices:
        return []
    try:
        first = RenderSpec(
            model=arch.entry.name, layer=info.path, kind=kind, unit=indices[0], position=position, seed=seed,
            random_weights=random_weights, sample=0, init_image=init_image, **recipe.model_dump(),
            weights_sha256=arch.entry.weights.sha256 if arch.entry.source == "registered" else None,
        )  # fmt: skip
    except ValidationError as exc:
        raise DreamfarmError(describe(exc)) from None
    specs = first.for_units((u, k) for u in indices for k in range(recipe.samples))
    labels = {u: arch.label(info, kind, u) for u in indices}
    return [PlannedUnit(spec, labels[spec.unit]) for spec in specs]


def network_layers(arch: Architecture) -> list[LayerInfo]:
    """What `"layers": "all"` renders: every layer the zoo gives an alias
    (conv1…convN for each conv, and a family's own such as block1…, head)
    whose units are channels, then the logits. Unaliased layers (batch norms,
    activations, pooling, a block's inner modules) repeat the channels of
    the conv before them, and fc layers other than the logits have neurons
    only; both stay nameable one by one."""
    maps = [x for x in arch.layers if x.aliases and "channel" in x.kinds]
    logits = [x for x in arch.layers if "logit" in x.kinds]
    return maps + [x for x in logits if x not in maps]


@dataclass(frozen=True)
class LayerPlan:
    """One layer of a job: the name it goes by (as the request named it, or
    for "all" the zoo's first alias), its module path and unit kind, and
    where its units are in the job's list: `units[start:stop]`."""

    name: str
    path: str
    kind: UnitKind
    start: int
    stop: int

    @property
    def units(self) -> int:
        return self.stop - self.start


def request_layers(request: JobRequest, arch: Architecture) -> list[tuple[str, LayerInfo]]:
    """The request's layers as (the name they go by, the layer), in order;
    an unknown one refused naming it and the valid layers, two names of one
    layer refused too (its units would be planned twice)."""
    if request.layers is None:
        name = request.layer or ""
        return [(name, arch.layer(name))]
    if request.layers == "all":
        every = network_layers(arch)
        if not every:
            raise BadRequest(f"{arch.entry.name} has no aliased layer of channels and no logits for 'all': name its "
                             f"layers (`dreamfarm models {arch.entry.name}` lists them)", field="layers")  # fmt: skip
        return [(info.name, info) for info in every]
    out: list[tuple[str, LayerInfo]] = []
    seen: dict[str, str] = {}
    for name in request.layers:
        try:
            info = arch.layer(name)
        except UnknownLayer as exc:
            raise UnknownLayer(f"layers: {exc}", field="layers") from None
        if info.path in seen:
            raise BadRequest(f"layers {seen[info.path]} and {name} are the same layer ({info.path}) of "
                             f"{arch.entry.name}: name it once", field="layers")  # fmt: skip
        seen[info.path] = name
        out.append((name, info))
    return out


#: Lucid's diversity weight when samples are asked for without one.
DEFAULT_DIVERSITY = 10.0


def request_recipe(request: JobRequest, arch: Architecture, target: LayerInfo | None = None) -> Recipe:
    """The request's recipe for its layer `target` (default: its first): the
    named preset, the request's overrides, the size (default: the model's),
    and for samples a diversity term at a conv layer (default: one about two
    thirds of the way to the target, so each layer of a job has its own)."""
    if request.recipe == recipes.TUNED and request.steps is None:
        # Only service.tuned_recipes.resolve fills in the tuned recipe (it sets every field).
        raise BadRequest("recipe 'tuned' is resolved where a job is submitted; this request was not",
                         field="recipe")  # fmt: skip
    fields = {**request.overrides(), "size": request.size or arch.entry.input_size}
    recipe = recipes.recipe(request.recipe, fields)
    if recipe.samples > 1 and request.diversity is None and not recipe.diversity:
        recipe = recipe.model_copy(update={"diversity": DEFAULT_DIVERSITY})
    if recipe.diversity:
        target = target or request_layers(request, arch)[0][1]
        where = arch.conv_layer(recipe.diversity_layer, before=target.path)
        recipe = recipe.model_copy(update={"diversity_layer": where.path})
    if recipe.param.name == "image" and request.init_image is None:
        raise BadRequest("this recipe starts from an image: give init_image (POST /v1/images; --init-image)",
                         field="init_image")  # fmt: skip
    if request.init_image is not None and recipe.param.name != "image":
        raise BadRequest(f"init_image needs param 'image' (recipe adversarial), not {recipe.param.name!r}",
                         field="init_image")  # fmt: skip
    return recipe


def first_kind(request: JobRequest, arch: Architecture) -> UnitKind:
    """The kind of unit of the request's (first) layer: which tuned recipe it gets."""
    info = request_layers(request, arch)[0][1]
    return arch.kind(info, request.kind)


def selection(request: JobRequest) -> UnitSelection:
    rng = request.checked_range()
    if rng is not None:
        return UnitRange(rng.start, rng.stop)
    return request.units  # type: ignore[return-value]


def plan_request(request: JobRequest, arch: Architecture) -> list[PlannedUnit]:
    """The one way from a request to its specs: the API, a retry and the CLI all use it."""
    return plan_layers(request, arch)[0]


def plan_layers(
    request: JobRequest, arch: Architecture, *, max_units: int | None = None
) -> tuple[list[PlannedUnit], list[LayerPlan]]:
    """The request's specs, layer after layer, and where each layer's are.
    Every layer is validated (kind, position, units: a unit out of range for
    one layer is refused naming that layer) and the total counted against
    `max_units` before any spec is made, so a request over the limit costs
    next to nothing."""
    # In the order a single-layer request has always been checked in: the
    # unit range, the recipe, then the layer, its kind, position and units.
    chosen = selection(request)
    recipe = request_recipe(request, arch)
    picked: list[tuple[str, LayerInfo, UnitKind, tuple[int, int] | None, list[int], Recipe]] = []
    total = 0
    for name, info in request_layers(request, arch):
        kind = arch.kind(info, request.kind)
        position = arch.position(info, kind, request.position_tuple())
        indices = expand_units(arch, info, kind, chosen)
        # A default diversity layer is chosen below each layer.
        mine = request_recipe(request, arch, info) if recipe.diversity and picked else recipe
        picked.append((name, info, kind, position, indices, mine))
        total += len(indices) * mine.samples
    if max_units is not None and total > max_units:
        samples = picked[0][5].samples
        what = "units" if samples == 1 else "renders (units × samples)"
        where = f" over {len(picked)} layers" if request.several_layers else ""
        raise OverLimit(f"{total} {what} in one job{where}; the limit is {max_units} (split the job)", field="units")
    units: list[PlannedUnit] = []
    layers: list[LayerPlan] = []
    for name, info, kind, position, indices, recipe in picked:
        start = len(units)
        units += _specs(arch, info, kind, indices, recipe, seed=request.seed, random_weights=request.random_weights,
                        position=position, init_image=request.init_image)  # fmt: skip
        layers.append(LayerPlan(name, info.path, kind, start, len(units)))
    return units, layers


@dataclass
class JobPlan:
    job_id: str
    request: JobRequest
    units: list[PlannedUnit]
    cached: set[str]
    batches: list[list[RenderSpec]]
    #: The job's layers in order (one for a `layer` request), each with its span of `units`.
    layers: list[LayerPlan] = field(default_factory=list)

    def labels(self) -> dict[str, str | None]:
        return {u.spec.key(): u.label for u in self.units}

    def layer_index(self) -> dict[str, int]:
        """Module path → the layer's place in `layers` (a job names a layer once)."""
        return {layer.path: i for i, layer in enumerate(self.layers)}


def existing_sidecars(store: Store, prefix: str) -> set[str]:
    """Keys of every sidecar under a model/layer: one listing, not one request
    per unit (1000 HEADs would take seconds; a listing is a few pages)."""
    return {k for k in store.list(prefix) if k.endswith(".json")}


def plan_job(
    request: JobRequest, arch: Architecture, store: Store, *, batch_size: int, max_units: int | None = None,
    job_id: str | None = None,
) -> JobPlan:  # fmt: skip
    """Plan a job: expand, drop what the bucket already holds, batch the rest."""
    units, layers = plan_layers(request, arch, max_units=max_units)
    if request.init_image is not None and not store.exists(layout.image_key(request.init_image)):
        raise BadRequest(f"no image {request.init_image[:16]}… in the bucket: upload it first (POST /v1/images)",
                         field="init_image")  # fmt: skip
    present: set[str] = set()
    for layer in layers:
        if layer.units:
            present |= existing_sidecars(store, layout.layer_prefix_of(arch.entry.name, layer.path))
    cached = {u.spec.key() for u in units if layout.render_sidecar_key(u.spec) in present}
    todo = [u.spec for u in units if u.spec.key() not in cached]
    return JobPlan(job_id or new_job_id(), request, units, cached, batches(todo, request.batch_size or batch_size),
                   layers)  # fmt: skip


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
