"""PNG encoding and decoding of rendered images."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


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


MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs before decoding


def decode_image(data: bytes) -> Image.Image:
    """A PNG or JPEG as RGB; ValueError (one line) for anything else."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ("PNG", "JPEG"):
            raise ValueError(f"a PNG or JPEG image is needed, got {img.format or 'an unknown format'}")
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{img.width}x{img.height} is too many pixels: at most {MAX_IMAGE_PIXELS:,}")
        img.load()
    except UnidentifiedImageError:
        raise ValueError("not a readable PNG or JPEG image (unrecognized data)") from None
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"not a readable PNG or JPEG image ({type(exc).__name__}: {exc})") from None
    return img.convert("RGB")


def square_pixels(img: Image.Image, size: int) -> torch.Tensor:
    """Centre-cropped to a square, resized to `size`, as (3, size, size) in
    [0, 1] holding exact 8-bit values (what a saved PNG would hold)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(square, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255
