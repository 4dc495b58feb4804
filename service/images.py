"""PNG encoding and decoding of rendered images."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def png_bytes(rgb: torch.Tensor | np.ndarray) -> bytes:
    """(H, W, 3) uint8 → PNG bytes."""
    arr = rgb.numpy() if isinstance(rgb, torch.Tensor) else rgb
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), mode="RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def read_png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")
