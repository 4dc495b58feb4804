"""From a request (model, layer, units, recipe) to validated specs and batches,
and a job's plan: what the bucket already holds, and the rest in batches.

Validation needs only the architecture (no weights), so the API host can do
it. Every problem is a `DreamfarmError` naming the field and the valid choices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from service import layout
from service.contract import new_job_id
from service.errors import BadPrior, BadUnit, DreamfarmError, one_line
from service.request import JobRequest
from service.spec import PRIOR_NAMES, PriorTerm, Recipe, RenderSpec, UnitKind
from service.storage import Store
from service.zoo import Architecture, LayerInfo

UnitRef = int | str
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


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
        return self.label or str(self.spec.unit)


def parse_prior(items: Iterable[str]) -> tuple[PriorTerm, ...]:
    """CLI form: 'edge_energy', 'tv:0.5', 'none'."""
    terms = []
    for item in items:
        name, _, weight = item.partition(":")
        if name not in PRIOR_NAMES:
            raise BadPrior(f"unknown prior {name!r}; valid priors: {', '.join(PRIOR_NAMES)}")
        try:
            w = float(weight) if weight else 1.0
            terms.append(PriorTerm(name=name, weight=w))  # type: ignore[arg-type]
        except (ValueError, ValidationError):
            raise BadPrior(f"bad prior weight in {item!r}: give a finite number >= 0, e.g. {name}:0.5") from None
    return tuple(terms)


def parse_units_arg(values: Sequence[str]) -> UnitSelection:
    """CLI form: 'all', '0-15' (inclusive, as people write ranges), or indices/names."""
    if len(values) == 1 and values[0].strip().lower() == "all":
        return "all"
    if len(values) == 1 and (m := _RANGE.match(values[0])):
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise BadUnit(f"empty unit range {values[0]!r}: write low-high, e.g. 0-15")
        return UnitRange(a, b + 1)
    out: list[UnitRef] = []
    for v in values:
        out.extend(int(p) if p.strip().isdigit() else p.strip() for p in [v])
    return out


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
) -> list[PlannedUnit]:
    """Validate a unit selection against the architecture and expand it into specs."""
    info = arch.layer(layer)
    unit_kind = arch.kind(info, kind)
    pos = arch.position(info, unit_kind, position)
    indices = expand_units(arch, info, unit_kind, units)
    out = []
    for u in indices:
        try:
            spec = RenderSpec(
                model=arch.entry.name, layer=info.path, kind=unit_kind, unit=u, position=pos, seed=seed,
                random_weights=random_weights, **recipe.model_dump(),
            )  # fmt: skip
        except ValidationError as exc:
            raise DreamfarmError(one_line(str(exc))) from exc
        out.append(PlannedUnit(spec, arch.label(info, unit_kind, u)))
    return out


def request_recipe(request: JobRequest, default_size: int) -> Recipe:
    try:
        return Recipe(
            prior=tuple(p.term() for p in request.prior), steps=request.steps, lr=request.lr,
            size=request.size or default_size, init_scale=request.init_scale, precision=request.precision,
        )  # fmt: skip
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        msg = errors[0]["msg"] if errors else str(exc)
        cls = BadPrior if where.startswith("prior") else DreamfarmError
        raise cls(one_line(f"{where or 'request'}: {msg}"), field=where or None) from None


def selection(request: JobRequest) -> UnitSelection:
    rng = request.checked_range()
    if rng is not None:
        return UnitRange(rng.start, rng.stop)
    return request.units  # type: ignore[return-value]


def plan_request(request: JobRequest, arch: Architecture) -> list[PlannedUnit]:
    """The one way from a request to its specs: the API, a retry and the CLI all use it."""
    return plan_units(
        arch, layer=request.layer, units=selection(request), recipe=request_recipe(request, arch.entry.input_size),
        kind=request.kind, seed=request.seed, random_weights=request.random_weights,
        position=request.position_tuple(),
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
        raise BadUnit(f"{len(units)} units in one job; the limit is {max_units} (split the job)")
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
    keeping the input order within a group."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    groups: dict[str, list[RenderSpec]] = {}
    for s in specs:
        groups.setdefault(s.batch_key(), []).append(s)
    out: list[list[RenderSpec]] = []
    for group in groups.values():
        out.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    return out
