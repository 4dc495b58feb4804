"""A render job as clients ask for it: the one request shape that the API's
body, the CLI's flags and a retry's re-plan all become.

Every field is strict: JSON's types are taken at their word, so a boolean is
not an integer, a float is not an integer and a numeric string is not a
number (pydantic's lax mode would turn `true` into unit 1).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints, field_validator

from service.errors import BadUnit
from service.spec import (
    MAX_SAMPLES,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    Direction,
    ParamName,
    PriorName,
    PriorTerm,
    TransformName,
    UnitKind,
)

STRICT = ConfigDict(extra="forbid", strict=True)
MAX_UNIT_INDEX = 10**7


def printable(v: str) -> str:
    """Refuse text that would break a log line or a terminal: control and
    format characters, line separators, lone surrogates (the pattern in the
    schema catches only ASCII controls)."""
    if not v.isprintable():
        bad = next(ch for ch in v if not ch.isprintable())
        raise ValueError(f"must be printable text, without control or separator characters (found U+{ord(bad):04X})")
    return v


def not_a_number(v: str) -> str:
    if v.strip().lstrip("+-").isdigit():
        raise ValueError(f"a unit index must be a JSON number, not the string {v!r}")
    return v


ClassName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"),
    AfterValidator(printable),
    AfterValidator(not_a_number),
]
Title = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(printable)]
UnitIndex = Annotated[int, Field(ge=0, le=MAX_UNIT_INDEX)]
Coordinate = Annotated[int, Field(ge=0, le=4096)]


class PriorIn(BaseModel):
    model_config = STRICT
    name: PriorName
    weight: FiniteFloat = Field(1.0, ge=0, le=1e6)

    def term(self) -> PriorTerm:
        return PriorTerm(name=self.name, weight=self.weight)


class UnitRangeIn(BaseModel):
    """Units start … stop-1 (stop exclusive, like Python's range)."""

    model_config = STRICT
    start: int = Field(ge=0, le=MAX_UNIT_INDEX)
    stop: int = Field(ge=1, le=MAX_UNIT_INDEX)


Units = list[UnitIndex | ClassName] | UnitRangeIn | Literal["all"]
# The presets of service.recipes (a test checks that the two agree).
RecipeName = Literal["lecture", "lucid", "maco", "adversarial"]
LayerName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")]


class ParamIn(BaseModel):
    model_config = STRICT
    name: ParamName
    decay: FiniteFloat = Field(1.0, ge=0, le=4)
    decorrelate: bool = True


class TransformIn(BaseModel):
    model_config = STRICT
    name: TransformName
    amount: FiniteFloat = Field(gt=0, le=256)


# Fields a request may set to override its recipe's (None: the recipe's).
RECIPE_FIELDS = ("prior", "steps", "lr", "init_scale", "precision", "param", "transforms", "direction", "samples",
                 "diversity", "diversity_layer", "epsilon", "stop_margin")  # fmt: skip


class JobRequest(BaseModel):
    """A render job: model, layer, units, and a recipe (the lecture's by
    default) whose fields may be overridden one by one; a field left out (or
    null) is the recipe's. `size` defaults to the model's input size."""

    model_config = STRICT

    model: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    layer: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")
    units: Units
    kind: UnitKind | None = None
    # A JSON array of two: a list, since strict mode takes no list for a tuple.
    position: list[Coordinate] | None = Field(None, min_length=2, max_length=2)
    recipe: RecipeName = "lecture"
    prior: list[PriorIn] | None = Field(None, max_length=4)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    lr: FiniteFloat | None = Field(None, gt=0, le=100)
    size: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    init_scale: FiniteFloat | None = Field(None, ge=0, le=10)
    precision: Literal["auto", "float32", "bfloat16"] | None = None
    param: ParamIn | None = None
    transforms: list[TransformIn] | None = Field(None, max_length=8)
    direction: Direction | None = None
    samples: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    diversity: FiniteFloat | None = Field(None, ge=0, le=1e6)
    diversity_layer: LayerName | None = None
    init_image: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    epsilon: FiniteFloat | None = Field(None, gt=0, le=1)
    stop_margin: FiniteFloat | None = Field(None, ge=0, le=1e3)
    random_weights: bool = False
    batch_size: int | None = Field(None, ge=1, le=1024)
    title: Title | None = None

    @field_validator("prior")
    @classmethod
    def _distinct_priors(cls, v: list[PriorIn] | None) -> list[PriorIn] | None:
        names = [p.name for p in v or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each prior term may appear once; repeated: {', '.join(dupes)}")
        return v

    @field_validator("units")
    @classmethod
    def _not_empty(cls, v: Units) -> Units:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one unit, a range {start, stop} or 'all'")
        return v

    def checked_range(self) -> UnitRangeIn | None:
        if not isinstance(self.units, UnitRangeIn):
            return None
        if self.units.stop <= self.units.start:
            raise BadUnit(f"empty unit range: stop ({self.units.stop}) must be > start ({self.units.start})")
        return self.units

    def position_tuple(self) -> tuple[int, int] | None:
        return (self.position[0], self.position[1]) if self.position is not None else None

    def listed_units(self) -> int | None:
        """How many units the request lists explicitly (None for a range or 'all')."""
        return len(self.units) if isinstance(self.units, list) else None

    def overrides(self) -> dict[str, object]:
        """The recipe fields this request sets, as `Recipe` takes them."""
        out: dict[str, object] = {}
        for name in RECIPE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "prior":
                value = tuple(p.term() for p in value)
            elif isinstance(value, BaseModel):
                value = value.model_dump()
            elif name == "transforms":
                value = [t.model_dump() for t in value]
            out[name] = value
        return out
