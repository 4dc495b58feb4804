"""Named recipes: presets of `Recipe` fields, any of which a request may
override. A recipe's name is a label (kept in the sidecar); the pixels depend
only on the fields, which are all in the spec and so in the content key."""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError

from service.errors import DreamfarmError, one_line
from service.spec import Recipe
from service.validation import describe


def _transforms(scale: float, rotate: float) -> list[dict[str, Any]]:
    """Lucid's chain: pad 12, jitter 8, a random scale and rotation, jitter 4."""
    return [{"name": "pad", "amount": 12}, {"name": "jitter", "amount": 8}, {"name": "scale", "amount": scale},
            {"name": "rotate", "amount": rotate}, {"name": "jitter", "amount": 4}]  # fmt: skip


LUCID_TRANSFORMS = _transforms(scale=0.1, rotate=5)
# No padding (the resize zooms out), a random crop and a wider rotation.
VIVID_TRANSFORMS = [{"name": "jitter", "amount": 8}, {"name": "rotate", "amount": 15}, {"name": "jitter", "amount": 4}]
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
    # Whole objects at several sizes, in saturated colour (docs/recipes.md:
    # measured against torch-dreams on tuning classes): a steeper spectrum
    # (1/f^1.5), flat below a few cycles per image, wider rotation, the
    # network seeing the image resized by 0.6-1.2 (a factor per step, the
    # same for the batch), and each image's gradient clipped to norm 1 (its
    # norm is 10-50 here, so every step weighs alike in Adam's moments).
    # lr 0.022: torch-dreams' step in our scale (it has no 1/4 damping and a
    # 0.6× spectrum scale); 0.013 gave paler, hazier pictures (colourfulness
    # 31 against torch-dreams' 45 on the tuning classes; 0.022: 45, and the
    # best transfer of 0.013-0.032, docs/recipes.md).
    "vivid": {
        "param": {"name": "fourier", "decay": 1.5, "decorrelate": True, "flat_below": 5.4},
        "transforms": VIVID_TRANSFORMS,
        "resize": (0.6, 1.2),
        "grad_clip": 1.0,
        "prior": [],
        "lr": 0.022,
        "steps": 256,
    },
    # MaCo (Fel et al. 2023): only the phase is optimized; the magnitude is
    # fixed to ImageNet's average spectrum, MaCo's own (service/spectrum.py).
    "maco": {
        "param": {"name": "maco", "magnitude": "imagenet", "decorrelate": True},
        "transforms": ROBUST_TRANSFORMS,
        # vivid's resize and per-image clip (the phase's gradient norm is
        # 1-5): more recognizable on the tuning classes (docs/recipes.md).
        "resize": (0.6, 1.2),
        "grad_clip": 1.0,
        "prior": [],
        # The phase moves 4× faster than Lucid's spectrum: at 0.05 it stays
        # near its random start (clouds); docs/recipes.md has the trials.
        "lr": 0.2,
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
    "lecture": "the lecture's loop: pixel parameterization, multi-scale edge-energy prior",
    "lucid": "Lucid-style: Fourier basis with 1/f scaling, decorrelated colour, pad/jitter/scale/rotate",
    "vivid": (
        "the default: whole objects at several sizes in saturated colour (Fourier 1/f^1.5, rotate ±15°, "
        "resized 0.6-1.2×, gradient clipped per image)"
    ),
    "maco": (
        "MaCo: only the phase is optimized, the magnitude fixed to ImageNet's spectrum; wider scale and "
        "rotation, resized 0.6-1.2×"
    ),
    "adversarial": "from a photo (init_image), the smallest L-inf perturbation (epsilon) that makes the target top-1",
}


#: The recipe of a request that names none (`dreamfarm render`, `submit`, the API).
DEFAULT_RECIPE: Final = "vivid"
#: Not a preset: the recipe `dreamfarm tune` found for the model, kept in the
#: bucket (service.tuned_recipes), filled into the request where it is submitted.
TUNED = "tuned"
TUNED_DESCRIPTION = ("the recipe `dreamfarm tune` (POST /v1/tunes) found for this model and kind of unit, "
                     "kept in the bucket")  # fmt: skip


def names() -> list[str]:
    """Every name a request may give: the presets, and the tuned recipe."""
    return [*PRESETS, TUNED]


def recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The preset `name` with `overrides` (fields given explicitly) applied."""
    if name not in PRESETS and name != TUNED:
        raise DreamfarmError(f"unknown recipe {name!r}; valid recipes: {', '.join(names())}", field="recipe")
    # The tuned recipe's fields are all in `overrides` by now (service.tuned_recipes.apply).
    preset = PRESETS.get(name, {})
    fields = {**preset, **{k: v for k, v in (overrides or {}).items() if v is not None}}
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
