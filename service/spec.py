"""What to render, as data: one `RenderSpec` per image, and its content key.

The content key is the sha256 of the spec's canonical JSON. Everything that can
change the pixels is in the spec (and so in the key); everything that cannot
(the batch an image lands in, the worker, the wall clock) is not.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

# Bump whenever the engine's numerics change, so old renders are not reused as
# if they had been made by the new engine.
ENGINE_VERSION = "1"

ParamName = Literal["pixel", "fourier", "maco", "image"]
PARAM_NAMES: tuple[str, ...] = ("pixel", "fourier", "maco", "image")
TransformName = Literal["pad", "jitter", "scale", "rotate"]
MagnitudeName = Literal["power_law", "imagenet"]
TRANSFORM_NAMES: tuple[str, ...] = ("pad", "jitter", "scale", "rotate")
Direction = Literal["max", "min"]
# How `resize` treats the two axes: one factor for both (the aspect kept), or
# a factor for each (the aspect changes per step, as torch-dreams resizes).
ResizeAxes = Literal["together", "apart"]
PriorName = Literal["edge_energy", "tv", "l2", "none"]
PRIOR_NAMES: tuple[str, ...] = ("edge_energy", "tv", "l2", "none")
UnitKind = Literal["logit", "channel", "neuron"]
Precision = Literal["auto", "float32", "bfloat16", "float64"]

MAX_STEPS = 100_000
MAX_SAMPLES = 16
MIN_SEEN = 8
MAX_SIZE = 1024
MIN_SIZE = 16
MAX_RESIZE = 4.0
# `resize` draws the factor of each step from this many evenly spaced levels
# (a compiled forward sees at most this many input shapes).
RESIZE_LEVELS = 8


class PriorTerm(BaseModel):
    """One term of the prior h(x), with its weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PriorName
    weight: FiniteFloat = Field(1.0, ge=0)


DEFAULT_PRIOR: tuple[PriorTerm, ...] = (PriorTerm(name="edge_energy", weight=1.0),)


class Param(BaseModel):
    """How the image is made from what Adam optimizes.

    - `pixel`: the network's input itself (the lecture's);
    - `fourier`: a spectrum scaled by 1/f^decay, colours decorrelated, a sigmoid into [0, 1] (Lucid);
    - `maco`: the phase of a spectrum whose magnitude is fixed: to ImageNet's average spectrum
      (`magnitude` "imagenet", MaCo's, `service.spectrum`) or to a 1/f^decay power law ("power_law");
    - `image`: pixels in [0, 1] starting from a given image (`init_image`), optionally within
      `epsilon` of it (adversarial examples).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ParamName = "pixel"
    decay: FiniteFloat = Field(1.0, ge=0, le=4)
    decorrelate: bool = True
    # `fourier`: the frequency (cycles per image) below which the 1/f^decay
    # scale is flat (1: only the zero frequency is raised to the lowest
    # nonzero one). Left out of the content key at its default.
    flat_below: FiniteFloat = Field(1.0, ge=1, le=MAX_SIZE / 2)
    # `maco`: its fixed magnitude. Left out of the content key at its default
    # (the power law, which the maco renders before it had).
    magnitude: MagnitudeName = "power_law"

    @model_validator(mode="after")
    def _magnitude_is_macos(self) -> Param:
        if self.magnitude == "imagenet":
            if self.name != "maco":
                raise ValueError("magnitude 'imagenet' is MaCo's fixed magnitude: it needs param 'maco'")
            if self.decay != Param.model_fields["decay"].default:
                raise ValueError("decay is the power law's exponent: magnitude 'imagenet' has none")
        return self


class Transform(BaseModel):
    """One random transform applied before the network at every step, drawn per
    image from that image's own generator. `amount`: pad and jitter in pixels,
    scale as the largest relative change (0.1: factors in [0.9, 1.1]), rotate
    in degrees (uniform in ±amount)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TransformName
    amount: FiniteFloat = Field(gt=0, le=256)


PIXEL = Param()


class Recipe(BaseModel):
    """The optimization settings shared by every image of a batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior: tuple[PriorTerm, ...] = DEFAULT_PRIOR
    steps: int = Field(250, ge=1, le=MAX_STEPS)
    lr: FiniteFloat = Field(0.1, gt=0, le=100)
    size: int = Field(224, ge=MIN_SIZE, le=MAX_SIZE)
    init_scale: FiniteFloat = Field(0.01, ge=0, le=10)
    precision: Precision = "auto"
    # Beyond the lecture (each left out of the content key at its default, so
    # the lecture's renders keep their keys).
    param: Param = PIXEL
    transforms: tuple[Transform, ...] = ()
    direction: Direction = "max"
    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    diversity: FiniteFloat = Field(0.0, ge=0, le=1e6)
    diversity_layer: str | None = Field(None, min_length=1, max_length=128)
    epsilon: FiniteFloat | None = Field(None, gt=0, le=1)
    stop_margin: FiniteFloat | None = Field(None, ge=0, le=1e3)
    # (low, high): at each step the network sees the transformed image resized
    # by a factor in [low, high], the same for every image of the batch: a
    # function of the step only (`resize_factor`), so batch independence holds.
    resize: tuple[FiniteFloat, FiniteFloat] | None = None
    resize_axes: ResizeAxes = "together"
    # Each image's gradient rescaled to at most this L2 norm before Adam's
    # step (torch-dreams clips its one image's at 1): per image, so batch
    # independence holds; it evens out how much each step weighs in Adam's moments.
    grad_clip: FiniteFloat | None = Field(None, gt=0, le=1e6)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.epsilon is not None and self.param.name != "image":
            raise ValueError("epsilon bounds a perturbation of a given image: it needs param 'image'")
        if self.diversity > 0 and self.samples < 2:
            raise ValueError("diversity compares the samples of a unit: it needs samples >= 2")
        if (seen := transformed_size(self.transforms, self.size)) < MIN_SEEN:
            raise ValueError(f"the transforms leave a {seen}-pixel image of a {self.size}-pixel one: "
                             f"at least {MIN_SEEN} pixels must reach the network")  # fmt: skip
        if self.resize_axes != "together" and self.resize is None:
            raise ValueError("resize_axes says how resize treats height and width: it needs resize")
        if self.resize is not None:
            low, high = self.resize
            if not 0 < low <= high <= MAX_RESIZE:
                raise ValueError(f"resize is (low, high) with 0 < low <= high <= {MAX_RESIZE}, got {self.resize}")
            if (least := resized_side(seen, low)) < MIN_SEEN:
                raise ValueError(f"resize {low} leaves a {least}-pixel image: at least {MIN_SEEN} pixels must "
                                 "reach the network")  # fmt: skip
        return self

    @field_validator("prior")
    @classmethod
    def _canonical_prior(cls, terms: tuple[PriorTerm, ...]) -> tuple[PriorTerm, ...]:
        # "none" contributes nothing; dropping it (and sorting the rest) makes
        # equivalent priors give one key.
        kept = [t for t in terms if t.name != "none" and t.weight != 0]
        names = [t.name for t in kept]
        if len(set(names)) != len(names):
            raise ValueError(f"each prior term may appear once, got {names}")
        return tuple(sorted(kept, key=lambda t: t.name))


class RenderSpec(Recipe):
    """One feature visualization: a unit of a layer of a model, and the recipe."""

    model: str = Field(min_length=1, max_length=64)
    layer: str = Field(min_length=1, max_length=128)
    kind: UnitKind
    unit: int = Field(ge=0)
    # Spatial position of a neuron in the layer's activation map (row, col);
    # None means the centre, resolved by the engine from the map's shape.
    position: tuple[int, int] | None = None
    seed: int = Field(0, ge=0, le=2**63 - 1)
    random_weights: bool = False
    engine_version: str = ENGINE_VERSION
    # Which of the unit's `samples` diversity samples this image is.
    sample: int = Field(0, ge=0, lt=MAX_SAMPLES)
    # The content key (sha256) of the image `param` "image" starts from.
    init_image: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # A registered network's weights (service.zoo.registered): the same name
    # with other weights is another network, so another key. None for the
    # zoo's built-ins, whose keys stay as they were.
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _per_image_fields(self) -> RenderSpec:
        if self.position is not None and self.kind != "neuron":
            raise ValueError("position is only meaningful for kind 'neuron'")
        if self.sample >= self.samples:
            raise ValueError(f"sample {self.sample} of {self.samples}: samples are numbered from 0")
        if (self.init_image is None) != (self.param.name != "image"):
            raise ValueError("param 'image' starts from a given image: give init_image with it, and only with it")
        return self

    def recipe(self) -> Recipe:
        return Recipe(**{k: getattr(self, k) for k in Recipe.model_fields})

    def content(self) -> dict[str, object]:
        """What the key is made of: every field, except the ones added after the
        lecture while they hold their default (so that the lecture's renders keep
        their keys; any change still changes the key)."""
        data = self.model_dump(mode="json")
        for name in LATER_FIELDS:
            if getattr(self, name) == RenderSpec.model_fields[name].default:
                data.pop(name)
        if "param" in data:
            for name in LATER_PARAM_FIELDS:
                if getattr(self.param, name) == Param.model_fields[name].default:
                    data["param"].pop(name)
        return data

    def canonical_json(self) -> str:
        return canonical_json(self.content())

    # The keys are computed once per spec and kept in its __dict__ under names
    # no field or attribute can have: a job's planning, its record and its
    # batches ask for each spec's key several times, and one costs a whole
    # model_dump (tens of µs; a whole network is tens of thousands of specs).
    # pydantic ignores such entries in ==, hash, repr and dumps; a copy with
    # changed fields drops them (`model_copy`), and the fields are frozen.

    def key(self) -> str:
        cached: str | None = self.__dict__.get(_KEY)
        if cached is None:
            cached = self.__dict__[_KEY] = _sha256(self.content())
        return cached

    def batch_key(self) -> str:
        """Specs with equal batch keys may be rendered as one optimization:
        everything but what makes one image of a batch differ from another."""
        cached: str | None = self.__dict__.get(_BATCH_KEY)
        if cached is None:
            fields = {k: v for k, v in self.content().items() if k not in PER_IMAGE_FIELDS}
            cached = self.__dict__[_BATCH_KEY] = _sha256(fields)
        return cached

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        if update:  # other fields, other keys
            copied.__dict__.pop(_KEY, None)
            copied.__dict__.pop(_BATCH_KEY, None)
        return copied

    def for_units(self, units: Iterable[tuple[int, int]]) -> list[RenderSpec]:
        """Copies of this spec for other (unit, sample) pairs: what planning a
        layer makes of one validated spec (a whole network is tens of
        thousands). Neither field takes part in any validator but its own
        bounds (checked here), so the copies are not validated again; and
        their keys are not computed from scratch (a model_dump and a sorted
        JSON encoding each) but spliced: the canonical JSON is this spec's
        with the unit's digits in place of a stand-in unit."""
        batch_key = self.batch_key()  # unit and sample are per-image fields
        around: dict[int, tuple[str, str] | None] = {}  # sample → the canonical JSON before and after the unit
        out = []
        for unit, sample in units:
            if unit < 0 or not 0 <= sample < self.samples:
                raise ValueError(f"unit {unit} sample {sample}: units are >= 0, samples 0-{self.samples - 1}")
            if sample not in around:
                around[sample] = self._around_unit(sample)
            spec = self.model_copy(update={"unit": unit, "sample": sample})
            if (parts := around[sample]) is not None:
                spec.__dict__[_KEY] = hashlib.sha256(f"{parts[0]}{unit}{parts[1]}".encode()).hexdigest()
            spec.__dict__[_BATCH_KEY] = batch_key
            out.append(spec)
        for spec in out[:1] + out[-1:]:  # the splice gives the key computed from scratch, or this stops
            if spec.key() != _sha256(spec.content()):
                raise AssertionError(f"spliced content key of unit {spec.unit} differs from the computed one")
        return out

    def _around_unit(self, sample: int) -> tuple[str, str] | None:
        """This spec's canonical JSON (at `sample`) before and after its unit;
        None (keys computed one by one) if the stand-in is not found exactly once."""
        text = self.model_copy(update={"unit": _STAND_IN, "sample": sample}).canonical_json()
        token = f'"unit":{_STAND_IN}'
        if text.count(token) != 1:
            return None
        at = text.index(token)
        return text[: at + len('"unit":')], text[at + len(token) :]

    def group_key(self) -> tuple[object, ...]:
        """The diversity group: the samples of one unit, rendered in one batch."""
        return (self.unit, self.position, self.seed, self.init_image)

    def noise_seed(self) -> int:
        """Seed of this image's own random generator.

        Derived from what identifies the image (seed, unit, position, sample)
        but not from the recipe, so that the same unit starts from the same
        noise whatever the step count or prior: renders stay comparable.
        """
        ident: dict[str, object] = {"seed": self.seed, "unit": self.unit, "position": self.position,
                                    "model": self.model, "layer": self.layer}  # fmt: skip
        if self.sample:
            ident["sample"] = self.sample
        return int.from_bytes(hashlib.sha256(canonical_json(ident).encode()).digest()[:8], "big") >> 1


def transformed_size(transforms: Sequence[Transform], size: int) -> int:
    """The side of the image the network sees after `transforms`: padding
    grows the canvas on both sides, jitter crops it (as in Lucid)."""
    for t in transforms:
        if t.name == "pad":
            size += 2 * round(t.amount)
        elif t.name == "jitter":
            size -= round(t.amount)
    return size


def resize_factor(resize: tuple[float, float], step: int, axis: int = 0) -> float:
    """The `resize` factor of `step`: one of RESIZE_LEVELS evenly spaced levels
    of [low, high], visited in a low-discrepancy order (the golden ratio's
    multiples), so every stretch of steps sees the whole range. `axis` 1 (the
    width, with `resize_axes` "apart") walks the multiples of √2 - 1 instead:
    with 1 and the golden ratio rationally independent, the pairs of factors
    cover the square of (height, width) evenly too."""
    low, high = resize
    rate = 0.6180339887498949 if axis == 0 else 0.41421356237309515
    level = math.floor(((step * rate) % 1.0) * RESIZE_LEVELS)
    return low + (high - low) * level / (RESIZE_LEVELS - 1)


def resized_side(side: int, factor: float) -> int:
    return max(1, round(side * factor))


LATER_FIELDS = ("param", "transforms", "direction", "samples", "diversity", "diversity_layer", "epsilon",
                "stop_margin", "sample", "init_image", "resize", "resize_axes", "grad_clip",
                "weights_sha256")  # fmt: skip
# Fields of `param` added later, left out of the key at their default (so the
# renders of the recipes made before them keep their keys).
LATER_PARAM_FIELDS = ("flat_below", "magnitude")
PER_IMAGE_FIELDS = ("unit", "position", "seed", "sample", "init_image")


def canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _sha256(obj: object) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


# Where a spec keeps its keys (`RenderSpec.key`): not identifiers, so never a field's or attribute's name.
_KEY, _BATCH_KEY = "content key", "batch key"
#: A unit no layer has, whose digits appear nowhere else in a spec's JSON (`RenderSpec.for_units`).
_STAND_IN = 8_675_309_246_813_579_001
