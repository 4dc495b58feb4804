"""Parameterizations: what Adam optimizes, and the image made from it.

As in Lucent, a parameterization is a set of tensors and a function that
makes the image from them. Ours are built from the specs (data), draw their
starting values per image from that image's own generator, and say which
space their image lives in: the network's input (`pixel`, the lecture's) or
pixels in [0, 1] (the others), which the model's preprocessing maps to the
input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from service import spectrum
from service.spec import RenderSpec

# The square root of ImageNet's colour correlation matrix (from Lucid): a
# direction in "decorrelated" space maps to RGB through it, so that Adam's
# steps move colours the way natural images vary. Columns scaled to norm ≤ 1.
COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
COLOR = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()
# Lucid's constant: the Fourier image is divided by it before the sigmoid
# (a larger value gives less saturated images).
FOURIER_DAMPING = 4.0
# MaCo's image is normalized to unit variance: this spreads it over the
# sigmoid's range (1 gives washed-out greys; 2 is chosen by the transfer to
# other networks, bench/quality.py). With the power-law magnitude.
MACO_CONTRAST = 2.0
# The same with ImageNet's magnitude (the "maco" recipe's): 3 gives the most
# saturated pictures and the best transfer of 2 and 3 on tuning classes
# (seed 4242, docs/recipes.md).
MACO_IMAGENET_CONTRAST = 3.0


@dataclass
class Parameterized:
    params: list[torch.Tensor]  # what Adam optimizes
    image: Callable[[], torch.Tensor]  # (B, 3, H, W) in `space`
    space: Literal["input", "pixels"]
    project: Callable[[], None] = field(default=lambda: None)  # after each step (the epsilon ball)
    original: torch.Tensor | None = None  # param "image": the starting image, in pixels


def generators(specs: Sequence[RenderSpec]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s.noise_seed()) for s in specs]


def frequencies(size: int) -> torch.Tensor:
    """|f| of each coefficient of a (size × size) real 2-D FFT, cycles per pixel."""
    fy = torch.fft.fftfreq(size, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(size, dtype=torch.float64)[None, :]
    return torch.sqrt(fx**2 + fy**2)


def power_law(size: int, decay: float, flat_below: float = 1.0) -> torch.Tensor:
    """1/f^decay, flat below `flat_below` cycles per image (1: the zero
    frequency treated as the lowest nonzero one)."""
    return 1.0 / frequencies(size).clamp_min(flat_below / size) ** decay


def to_rgb(t: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    """Decorrelated colour → RGB, then a sigmoid into [0, 1]."""
    if decorrelate:
        t = torch.einsum("bchw,rc->brhw", t, COLOR.to(t))
    return torch.sigmoid(t)


def pixel(
    specs: Sequence[RenderSpec], dtype: torch.dtype, device: torch.device, init: torch.Tensor | None
) -> Parameterized:
    """The lecture's: the network input itself, from N(0, init_scale²) noise."""
    x0 = init if init is not None else initial_noise(specs)
    x = x0.to(device=device, dtype=dtype).clone().requires_grad_(True)
    return Parameterized([x], lambda: x, "input")


def initial_noise(specs: Sequence[RenderSpec], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Each image's starting noise N(0, init_scale²) from its own generator,
    drawn on the CPU so that it is the same on every device."""
    out = [
        torch.randn(1, 3, s.size, s.size, generator=g, dtype=torch.float64) * s.init_scale
        for s, g in zip(specs, generators(specs))
    ]
    return torch.cat(out).to(dtype)


def fourier(specs: Sequence[RenderSpec], dtype: torch.dtype, device: torch.device) -> Parameterized:
    """Lucid's: a spectrum N(0, init_scale²), scaled by 1/f^decay, inverse FFT."""
    spec0 = specs[0]
    size = spec0.size
    shape = (3, size, size // 2 + 1, 2)
    coeffs = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) * s.init_scale
                          for s, g in zip(specs, generators(specs))])  # fmt: skip
    spectrum = coeffs.to(device=device, dtype=dtype).requires_grad_(True)
    scale = power_law(size, spec0.param.decay, spec0.param.flat_below)
    scale = scale.to(device=device, dtype=dtype)[None, None, :, :, None]

    def image() -> torch.Tensor:
        t = torch.fft.irfftn(torch.view_as_complex((scale * spectrum).contiguous()), s=(size, size), norm="ortho")
        return to_rgb(t / FOURIER_DAMPING, spec0.param.decorrelate)

    return Parameterized([spectrum], image, "pixels")


def maco(specs: Sequence[RenderSpec], dtype: torch.dtype, device: torch.device) -> Parameterized:
    """MaCo's: only the phase is optimized; the magnitude is fixed, to
    ImageNet's average spectrum (`magnitude` "imagenet", MaCo's own, per
    decorrelated channel, resampled to the size: `service.spectrum`) or to the
    power law 1/f^decay for all three channels ("power_law"). Each image is
    normalized to zero mean and unit variance (over its three channels, as in
    MaCo) before the colour map, so the magnitude's overall scale is moot."""
    spec0 = specs[0]
    size = spec0.size
    shape = (3, size, size // 2 + 1)
    phase0 = torch.stack([(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
                          for g in generators(specs)])  # fmt: skip
    phase = phase0.to(device=device, dtype=dtype).requires_grad_(True)
    if spec0.param.magnitude == "imagenet":
        magnitude = spectrum.magnitude(size, dtype, device)[None]
        contrast = MACO_IMAGENET_CONTRAST
    else:
        magnitude = power_law(size, spec0.param.decay).to(device=device, dtype=dtype)[None, None]
        contrast = MACO_CONTRAST

    def image() -> torch.Tensor:
        t = torch.fft.irfftn(torch.polar(magnitude.expand_as(phase), phase), s=(size, size), norm="ortho")
        flat = t.flatten(1)
        t = (t - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-8)
        return to_rgb(t * contrast, spec0.param.decorrelate)

    return Parameterized([phase], image, "pixels")


def image(
    specs: Sequence[RenderSpec], dtype: torch.dtype, device: torch.device, originals: torch.Tensor
) -> Parameterized:
    """Pixels in [0, 1] from given images; with `epsilon`, kept within that
    L∞ distance of them (projected after every step)."""
    x0 = originals.to(device=device, dtype=dtype)
    delta = torch.zeros_like(x0).requires_grad_(True)
    eps = specs[0].epsilon

    def project() -> None:
        with torch.no_grad():
            if eps is not None:
                delta.clamp_(-eps, eps)
            delta.copy_((x0 + delta).clamp(0, 1) - x0)

    return Parameterized([delta], lambda: (x0 + delta).clamp(0, 1), "pixels", project, x0)


def build(
    specs: Sequence[RenderSpec], dtype: torch.dtype, device: torch.device, *, init: torch.Tensor | None = None,
    originals: torch.Tensor | None = None,
) -> Parameterized:  # fmt: skip
    name = specs[0].param.name
    if name == "pixel":
        return pixel(specs, dtype, device, init)
    if name == "fourier":
        return fourier(specs, dtype, device)
    if name == "maco":
        return maco(specs, dtype, device)
    if originals is None:
        raise ValueError("param 'image' needs the starting images (originals)")
    return image(specs, dtype, device, originals)
