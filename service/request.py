"""A render job as clients ask for it: the one request shape that the API's
body, the CLI's flags and a retry's re-plan all become.

Every field is strict: JSON's types are taken at their word, so a boolean is
not an integer, a float is not an integer and a numeric string is not a
number (pydantic's lax mode would turn `true` into unit 1).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from service.errors import BadUnit
from service.recipes import DEFAULT_RECIPE
from service.spec import (
    MAX_SAMPLES,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    Direction,
    MagnitudeName,
    ParamName,
    PriorName,
    PriorTerm,
    ResizeAxes,
    TransformName,
    UnitKind,
)

STRICT = ConfigDict(extra="forbid", strict=True)
MAX_UNIT_INDEX = 10**7
#: Layers one request may list (a ResNet-152 has 155 conv layers and logits).
MAX_LAYERS = 512


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
RecipeName = Literal["lecture", "lucid", "vivid", "maco", "adversarial", "tuned"]
LayerName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")]
#: Several layers by name, or "all": the whole network (`service.planning.network_layers` says which).
Layers = Annotated[list[LayerName], Field(min_length=1, max_length=MAX_LAYERS)] | Literal["all"]


class ParamIn(BaseModel):
    model_config = STRICT
    name: ParamName
    decay: FiniteFloat = Field(1.0, ge=0, le=4)
    decorrelate: bool = True
    magnitude: MagnitudeName = "power_law"
    flat_below: FiniteFloat = Field(1.0, ge=1, le=MAX_SIZE / 2)


class TransformIn(BaseModel):
    model_config = STRICT
    name: TransformName
    amount: FiniteFloat = Field(gt=0, le=256)


# Fields a request may set to override its recipe's (None: the recipe's).
RECIPE_FIELDS = ("prior", "steps", "lr", "init_scale", "precision", "param", "transforms", "direction", "samples",
                 "diversity", "diversity_layer", "epsilon", "stop_margin", "resize", "resize_axes",
                 "grad_clip")  # fmt: skip


class JobRequest(BaseModel):
    """A render job: model, layer (or layers), units, and a recipe (the
    default recipe, `vivid`, unless it names one) whose fields may be overridden one by one; a field
    left out (or null) is the recipe's. `size` defaults to the model's input
    size. `layers` (a list of layer names, or "all": every aliased layer whose
    units are channels, and the logits) instead of `layer` renders `units`
    of each layer in one job, with progress and an atlas per layer."""

    model_config = STRICT

    # timm's networks are timm/<architecture> (service.zoo.registry).
    model: str = Field(min_length=1, max_length=64, pattern=r"^(?:timm/)?[a-z0-9_]+$")
    # Exactly one of the two (`_one_of_layer_and_layers`): one layer, or
    # several (each gets `units`), or "all".
    layer: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")
    layers: Layers | None = None
    units: Units
    kind: UnitKind | None = None
    # A JSON array of two: a list, since strict mode takes no list for a tuple.
    position: list[Coordinate] | None = Field(None, min_length=2, max_length=2)
    recipe: RecipeName = DEFAULT_RECIPE
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
    # [low, high]: the network sees the image resized by a factor in it, one per step.
    resize: list[FiniteFloat] | None = Field(None, min_length=2, max_length=2)
    # "apart": a factor for the height and one for the width (the aspect changes).
    resize_axes: ResizeAxes | None = None
    # Each image's gradient rescaled to at most this L2 norm before each step.
    grad_clip: FiniteFloat | None = Field(None, gt=0, le=1e6)
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

    @model_validator(mode="wrap")
    @classmethod
    def _one_of_layer_and_layers(cls, data: Any, handler: ModelWrapValidatorHandler[JobRequest]) -> JobRequest:
        """`layer` or `layers`, exactly one. Neither is refused as a missing
        `layer` (in the same words, and beside the other fields' errors, as
        when `layer` was the only way), both as a conflict on `layers`."""
        given = [name for name in ("layer", "layers") if isinstance(data, dict) and data.get(name) is not None]
        problem: InitErrorDetails | None = None
        if isinstance(data, dict) and not given:
            problem = InitErrorDetails(type="missing", loc=("layer",), input=data)
        elif len(given) == 2:
            message = "give either layer (one layer) or layers (several, or 'all'), not both"
            problem = InitErrorDetails(type=PydanticCustomError("layer_and_layers", message), loc=("layers",),
                                       input=data["layers"])  # fmt: skip
        try:
            request = handler(data)
        except ValidationError as exc:
            if problem is None:
                raise
            fields = list(cls.model_fields)  # the problems in the order of the fields they are about
            details = sorted([*_details(exc), problem], key=lambda d: _position(fields, d["loc"]))
            raise ValidationError.from_exception_data(exc.title, details) from None
        if problem is not None:
            raise ValidationError.from_exception_data(cls.__name__, [problem])
        return request

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, v: Layers | None) -> Layers | None:
        if isinstance(v, list):
            dupes = sorted({n for n in v if v.count(n) > 1})
            if dupes:
                raise ValueError(f"layers listed more than once: {', '.join(dupes)}")
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

    @property
    def several_layers(self) -> bool:
        """Whether the request names its layers with `layers` (even just one):
        its job then reports progress and files an atlas per layer."""
        return self.layers is not None

    def record_json(self) -> str:
        """The request as a job's record keeps it: without the one of `layer`
        and `layers` it does not use, so a single-layer job's record reads as
        it did before `layers` existed."""
        return self.model_dump_json(exclude={"layers"} if self.layers is None else {"layer"})

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


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    """A validation error's problems, to raise again with one more."""
    out: list[InitErrorDetails] = []
    for e in exc.errors():
        if e["type"] in _BUILT_IN_ERRORS:
            detail = InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"])
            if "ctx" in e:
                detail["ctx"] = e["ctx"]
        else:  # a custom error: its message as it was
            detail = InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"], input=e["input"])
        out.append(detail)
    return out


_BUILT_IN_ERRORS = frozenset(get_args(ErrorType))


def _position(fields: list[str], loc: tuple[int | str, ...]) -> int:
    return fields.index(loc[0]) if loc and loc[0] in fields else len(fields)
