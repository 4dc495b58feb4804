"""What to render, as data: one `RenderSpec` per image, and its content key.

The content key is the sha256 of the spec's canonical JSON. Everything that can
change the pixels is in the spec (and so in the key); everything that cannot
(the batch an image lands in, the worker, the wall clock) is not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

# Bump whenever the engine's numerics change, so old renders are not reused as
# if they had been made by the new engine.
ENGINE_VERSION = "1"

PriorName = Literal["edge_energy", "tv", "l2", "none"]
PRIOR_NAMES: tuple[str, ...] = ("edge_energy", "tv", "l2", "none")
UnitKind = Literal["logit", "channel", "neuron"]
Precision = Literal["auto", "float32", "bfloat16", "float64"]

MAX_STEPS = 100_000
MAX_SIZE = 1024
MIN_SIZE = 16


class PriorTerm(BaseModel):
    """One term of the prior h(x), with its weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PriorName
    weight: FiniteFloat = Field(1.0, ge=0)


DEFAULT_PRIOR: tuple[PriorTerm, ...] = (PriorTerm(name="edge_energy", weight=1.0),)


class Recipe(BaseModel):
    """The optimization settings shared by every image of a batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior: tuple[PriorTerm, ...] = DEFAULT_PRIOR
    steps: int = Field(250, ge=1, le=MAX_STEPS)
    lr: FiniteFloat = Field(0.1, gt=0, le=100)
    size: int = Field(224, ge=MIN_SIZE, le=MAX_SIZE)
    init_scale: FiniteFloat = Field(0.01, ge=0, le=10)
    precision: Precision = "auto"

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

    @model_validator(mode="after")
    def _position_only_for_neurons(self) -> RenderSpec:
        if self.position is not None and self.kind != "neuron":
            raise ValueError("position is only meaningful for kind 'neuron'")
        return self

    def recipe(self) -> Recipe:
        return Recipe(**{k: getattr(self, k) for k in Recipe.model_fields})

    def canonical_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))

    def key(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def batch_key(self) -> str:
        """Specs with equal batch keys may be rendered as one optimization."""
        fields = self.model_dump(mode="json", exclude={"unit", "position", "seed"})
        return hashlib.sha256(canonical_json(fields).encode()).hexdigest()

    def noise_seed(self) -> int:
        """Seed of this image's own random generator.

        Derived from what identifies the image (seed, unit, position) but not
        from the recipe, so that the same unit starts from the same noise
        whatever the step count or prior: renders stay comparable.
        """
        ident = canonical_json(
            {"seed": self.seed, "unit": self.unit, "position": self.position, "model": self.model, "layer": self.layer}
        )
        return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:8], "big") >> 1


def canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
