"""How vivid a picture looks, in two numbers a person would agree with:
colourfulness (Hasler & Süsstrunk 2003, the measure that best matched
people's ratings in their study) and RMS contrast of the lightness. Used by the
benchmarks to compare renderers' pictures beside the judges' verdicts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Rec. 601 luma weights: the lightness a person sees in an sRGB pixel.
LUMA = np.array([0.299, 0.587, 0.114])


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler-Süsstrunk M of an (H, W, 3) uint8 image, on 0-255 values: 0 for
    greys; about 15 for a muted photo, 33 moderately, 59 quite, 82+ highly
    colourful (their scale)."""
    a = rgb.astype(np.float64)
    rg = a[..., 0] - a[..., 1]
    yb = 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    spread = np.hypot(rg.std(), yb.std())
    centre = np.hypot(rg.mean(), yb.mean())
    return float(spread + 0.3 * centre)


def rms_contrast(rgb: np.ndarray) -> float:
    """The standard deviation of the lightness of an (H, W, 3) uint8 image, in
    [0, 0.5]: 0 for a flat image; photos are about 0.2-0.3."""
    lightness = rgb.astype(np.float64) @ LUMA / 255
    return float(lightness.std())


def looks(images: Iterable[np.ndarray]) -> dict[str, float]:
    """The mean colourfulness and RMS contrast of a set of (H, W, 3) uint8 images."""
    listed = list(images)
    return {"colourfulness": float(np.mean([colourfulness(a) for a in listed])),
            "rms_contrast": float(np.mean([rms_contrast(a) for a in listed]))}  # fmt: skip
