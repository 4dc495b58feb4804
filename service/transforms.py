"""Random transforms applied to the image before the network at every step
(pad, jitter, scale, rotate), as in Lucid, but drawn per image from that
image's own generator: an image's render does not depend on its batch.

All transforms are affine, so a whole list becomes one affine map per image
and one `grid_sample` for the batch. Padding is the canvas growing around the
image, filled with `fill`; jitter is a random crop (the canvas shrinks by its
amount, as in Lucid); scale and rotate keep the canvas size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from service.input_sides import SideRule, any_side
from service.spec import Transform, resize_factor, resized_side, transformed_size


def output_size(steps: Sequence[Transform], size: int) -> int:
    """The side of the image the network sees after `steps` (a spec's recipe
    has checked it is large enough)."""
    return transformed_size(steps, size)


class RandomTransforms:
    def __init__(
        self, steps: Sequence[Transform], seeds: Sequence[int], size: int, fill: float,
        resize: tuple[float, float] | None = None, fit: SideRule = any_side, resize_axes: str = "together",
    ) -> None:  # fmt: skip
        self.steps = list(steps)
        self.size = size
        self.out_size = output_size(self.steps, size)
        self.fill = fill
        self.resize = resize
        self.apart = resize_axes == "apart"
        self.fit = fit
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def side(self, step: int) -> int:
        """The side of the image the network sees at `step` (its height where
        the axes are resized apart): the same for every image of the batch, a
        function of the recipe and the step only."""
        return self.shape(step)[0]

    def shape(self, step: int) -> tuple[int, int]:
        """(height, width) the network sees at `step`, a function of the step only."""
        if self.resize is None:
            side = self.fit(self.out_size)
            return side, side
        height = self.fit(resized_side(self.out_size, resize_factor(self.resize, step)))
        if not self.apart:
            return height, height
        return height, self.fit(resized_side(self.out_size, resize_factor(self.resize, step, axis=1)))

    def __call__(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        if not self.steps and self.resize is None:
            return x
        theta = torch.stack([self._theta(g) for g in self.generators]).to(device=x.device, dtype=x.dtype)
        # The same view of the canvas, sampled on a grid of height × width
        # pixels: a resize (stretched where the two differ).
        height, width = self.shape(step)
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], height, width], align_corners=False)
        # Outside the image is the fill: sample (x - fill) with zero padding.
        out = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out + self.fill

    def _theta(self, g: torch.Generator) -> torch.Tensor:
        """The affine map from output to input pixel coordinates (centred),
        as `affine_grid` wants it (normalized coordinates)."""
        a = torch.eye(2, dtype=torch.float64)
        t = torch.zeros(2, dtype=torch.float64)
        # Stage maps compose from the last (nearest the output) to the first.
        for step in reversed(self.steps):
            m, b = _stage(step, g)
            a, t = m @ a, m @ t + b
        theta = torch.empty(2, 3, dtype=torch.float64)
        theta[:, :2] = a * (self.out_size / self.size)
        theta[:, 2] = 2 * t / self.size
        return theta


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


def _stage(step: Transform, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, b): a point of this stage's output maps to M·p + b in its input."""
    eye, zero = torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    if step.name == "pad":
        return eye, zero
    if step.name == "jitter":
        d = round(step.amount)
        # A crop of side (canvas - d) at a random offset 0..d on each axis.
        offset = torch.randint(0, d + 1, (2,), generator=g).to(torch.float64)
        return eye, offset - d / 2
    if step.name == "scale":
        s = _uniform(g, 1 - step.amount, 1 + step.amount)
        return eye / max(s, 1e-3), zero
    angle = math.radians(_uniform(g, -step.amount, step.amount))
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, s], [-s, c]], dtype=torch.float64), zero
