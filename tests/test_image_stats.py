"""The benchmarks' vividness measures order pictures the way a person would."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from service.image_stats import colourfulness, rms_contrast


def test_greys_have_no_colour_and_flat_images_no_contrast() -> None:
    ramp = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 64, axis=0).repeat(3, axis=2)
    assert colourfulness(ramp) == 0.0
    assert rms_contrast(np.full((8, 8, 3), 128, np.uint8)) == 0.0
    assert rms_contrast(ramp) > 0.25


def test_pure_colour_stripes_are_highly_colourful() -> None:
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, 0::3, 0] = stripes[:, 1::3, 1] = stripes[:, 2::3, 2] = 255
    assert colourfulness(stripes) > 82  # Hasler-Süsstrunk's "extremely colourful"


@given(st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_washing_out_towards_grey_never_adds_colour_or_contrast(amount: float, seed: int) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (16, 16, 3)).astype(np.float64)
    faded = (rgb + amount * (128 - rgb)).round().astype(np.uint8)
    original = rgb.astype(np.uint8)
    # Rounding to 8 bits moves each value by at most 0.5.
    assert colourfulness(faded) <= colourfulness(original) + 1.0
    assert rms_contrast(faded) <= rms_contrast(original) + 0.5 / 255
