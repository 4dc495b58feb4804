"""What a render looks like on disk: the 8-bit image that is saved.

- `pixel` (the lecture's): its display normalization 0.5 + 0.1·(x − mean)/std;
- images in [0, 1] (fourier, maco, image): the image itself, rounded;
- within `epsilon` of an 8-bit original: rounded so that no 8-bit value moves
  more than floor(epsilon·255) levels from the original's, whatever the
  rounding (what users get is the PNG, and the bound must hold for it).
"""

from __future__ import annotations

import math

import torch


def lecture_uint8(x: torch.Tensor) -> torch.Tensor:
    """The lecture's display normalization per image, as 8-bit (B, H, W, 3)."""
    x = x.detach().to(torch.float64)
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    shown = (0.5 + 0.1 * (x - mean) / std).clamp(0, 1)
    return to_uint8(shown)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → (B, H, W, 3) uint8 on the CPU."""
    q = (pixels.detach().to(torch.float64).clamp(0, 1) * 255).round()
    return q.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def bounded_uint8(pixels: torch.Tensor, original: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`pixels` as 8-bit, each value within floor(epsilon·255) levels of the
    (8-bit-exact) `original`'s."""
    levels = math.floor(epsilon * 255 + 1e-9)
    o = (original.detach().to(torch.float64) * 255).round()
    d = ((pixels.detach().to(torch.float64) * 255).round() - o).clamp(-levels, levels)
    q = (o + d).clamp(0, 255)
    return q.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def as_pixels(display: torch.Tensor) -> torch.Tensor:
    """8-bit (B, H, W, 3) → (B, 3, H, W) float in [0, 1]: a saved image read back."""
    return display.permute(0, 3, 1, 2).to(torch.float32) / 255
