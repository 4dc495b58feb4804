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
from service.spec import MAX_SIZE, MAX_STEPS, MIN_SIZE, PriorName, PriorTerm, UnitKind

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


class JobRequest(BaseModel):
    """A render job. Every field but model, layer and units has the lecture's
    default; `size` defaults to the model's input size."""

    model_config = STRICT

    model: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    layer: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")
    units: Units
    kind: UnitKind | None = None
    # A JSON array of two: a list, since strict mode takes no list for a tuple.
    position: list[Coordinate] | None = Field(None, min_length=2, max_length=2)
    prior: list[PriorIn] = Field(default_factory=lambda: [PriorIn(name="edge_energy", weight=1.0)], max_length=4)
    steps: int = Field(250, ge=1, le=MAX_STEPS)
    lr: FiniteFloat = Field(0.1, gt=0, le=100)
    size: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    init_scale: FiniteFloat = Field(0.01, ge=0, le=10)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    random_weights: bool = False
    batch_size: int | None = Field(None, ge=1, le=1024)
    title: Title | None = None

    @field_validator("prior")
    @classmethod
    def _distinct_priors(cls, v: list[PriorIn]) -> list[PriorIn]:
        names = [p.name for p in v]
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
