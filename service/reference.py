"""The lecture's loop, transcribed literally. Kept slow on purpose.

This is the yardstick: the fidelity tests check the engine against it, and the
benchmark measures the engine's speed-up over it. Do not optimize it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiScaleEdgeEnergy(nn.Module):
    """h(x) as the lecture writes it: every channel its own grey image, two
    convolutions' worth of work per scale, a Python loop over channels."""

    def __init__(self) -> None:
        super().__init__()
        t = torch.arange(-2.0, 3.0)
        g = torch.exp(-(t**2) / 2)
        g = g[:, None] * g[None, :]
        g = g / g.sum()
        self.register_buffer("kernel", g[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = x.new_zeros(())
        kernel = self.get_buffer("kernel").to(x.dtype)
        for c in range(x.shape[1]):
            u = x[:, c : c + 1]
            while min(u.shape[-2], u.shape[-1]) > 5:
                blurred = F.conv2d(u, kernel, padding=2)
                energy = energy + ((u - blurred) ** 2).sum()
                u = F.avg_pool2d(u, 2, padding=1)
        return energy


def lecture_render(
    unit_value: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    steps: int = 250,
    lr: float = 0.1,
    prior: nn.Module | None = None,
) -> torch.Tensor:
    """Gradient ascent on one image, as in the lecture.

    `unit_value(x)` returns f(x), the scalar to maximize (the model runs inside
    it, with its weights requiring grad as in the lecture). `x0` is the starting
    noise, shape (1, 3, H, W). Returns the optimized image.
    """
    h = (prior if prior is not None else MultiScaleEdgeEnergy()).to(x0.device)
    x = x0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = h(x) - unit_value(x)
        loss.backward()
        optimizer.step()
    return x.detach()


def lecture_display(x: torch.Tensor) -> torch.Tensor:
    """The lecture's display normalization: 0.5 + 0.1·(x − mean)/std, clamped."""
    return (0.5 + 0.1 * (x - x.mean()) / x.std()).clamp(0, 1)
