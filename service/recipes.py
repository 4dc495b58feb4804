"""Named recipes: presets of `Recipe` fields, any of which a request may
override. A recipe's name is a label (kept in the sidecar); the pixels depend
only on the fields, which are all in the spec and so in the content key."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from service.errors import DreamfarmError, one_line
from service.spec import Recipe
from service.validation import describe


def _transforms(scale: float, rotate: float) -> list[dict[str, Any]]:
    """Lucid's chain: pad 12, jitter 8, a random scale and rotation, jitter 4."""
    return [{"name": "pad", "amount": 12}, {"name": "jitter", "amount": 8}, {"name": "scale", "amount": scale},
            {"name": "rotate", "amount": rotate}, {"name": "jitter", "amount": 4}]  # fmt: skip


LUCID_TRANSFORMS = _transforms(scale=0.1, rotate=5)
# MaCo's own augmentations are stronger (large random crops): wider scale and rotation.
ROBUST_TRANSFORMS = _transforms(scale=0.3, rotate=10)

PRESETS: dict[str, dict[str, Any]] = {
    # The lecture's loop: pixels, multi-scale edge energy, Adam 0.1, 250 steps.
    "lecture": {},
    # Lucid's recipe: a decorrelated Fourier basis and robustness to small
    # transformations, no explicit prior.
    "lucid": {
        "param": {"name": "fourier", "decay": 1.0, "decorrelate": True},
        "transforms": LUCID_TRANSFORMS,
        "prior": [],
        "lr": 0.05,
        "steps": 256,
    },
    # MaCo (Fel et al. 2023): only the phase is optimized; the magnitude is a
    # fixed power law 1/f^1.5 (no image set here: docs/recipes.md).
    "maco": {
        "param": {"name": "maco", "decay": 1.5, "decorrelate": True},
        "transforms": ROBUST_TRANSFORMS,
        "prior": [],
        "lr": 0.05,
        "steps": 256,
    },
    # The lecture's second half: from a photo, a perturbation within
    # epsilon (L∞, 8-bit levels) that makes the network answer the target.
    "adversarial": {
        "param": {"name": "image"},
        "prior": [],
        "epsilon": 8 / 255,
        "lr": 0.005,
        "steps": 200,
        "stop_margin": 2.0,
        "precision": "float32",
    },
}

DESCRIPTIONS = {
    "lecture": "the lecture's loop: pixel parameterization, multi-scale edge-energy prior (the default)",
    "lucid": "Lucid-style: Fourier basis with 1/f scaling, decorrelated colour, pad/jitter/scale/rotate",
    "maco": "MaCo: only the phase is optimized, the magnitude fixed to 1/f^1.5; wider scale and rotation",
    "adversarial": "from a photo (init_image), the smallest L-inf perturbation (epsilon) that makes the target top-1",
}


def names() -> list[str]:
    return list(PRESETS)


def recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The preset `name` with `overrides` (fields given explicitly) applied."""
    if name not in PRESETS:
        raise DreamfarmError(f"unknown recipe {name!r}; valid recipes: {', '.join(PRESETS)}", field="recipe")
    fields = {**PRESETS[name], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return Recipe.model_validate(fields)
    except ValidationError as exc:
        raise DreamfarmError(one_line(f"recipe {name}: {describe(exc)}"), field="recipe") from None


def listing() -> list[dict[str, Any]]:
    """Every recipe with its description and all its fields (defaults filled in)."""
    return [
        {"name": n, "description": DESCRIPTIONS[n], "fields": recipe(n).model_dump(mode="json", exclude={"size"})}
        for n in PRESETS
    ]
