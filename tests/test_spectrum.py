"""MaCo's ImageNet magnitude spectrum: the packaged file and its checks, the
resampling to other sizes, and the maco parameterization that uses it."""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from service import engine, recipes, spectrum
from service.spec import Param, RenderSpec
from service.zoo import Registry

ROOT = Path(__file__).resolve().parents[1]
MODEL = "efficientnet_lite0"


def _freqs(n: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(n, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(n, dtype=torch.float64)[None, :]
    return torch.sqrt(fx**2 + fy**2)


def _profile(mag: torch.Tensor, edges: torch.Tensor) -> list[torch.Tensor | None]:
    """Mean log magnitude per channel in each ring of frequency (None: < 4 coefficients)."""
    f, log = _freqs(mag.shape[1]), torch.log(mag.to(torch.float64))
    rings = [(f >= a) & (f < b) for a, b in itertools.pairwise(edges)]
    return [log[:, r].mean(1) if int(r.sum()) >= 4 else None for r in rings]


def _slope(mag: torch.Tensor, low: float, high: float) -> float:
    f = _freqs(mag.shape[1])
    ring = (f >= low) & (f <= high)
    x, y = torch.log(f[ring]), torch.log(mag.to(torch.float64)[0][ring])
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


# --- the file ---------------------------------------------------------------


def test_the_pinned_dependency_ships_the_published_spectrum() -> None:
    assert spectrum.SPECTRUM_PATH.parts[-3:] == ("dreamlens", "data", "clean_decorrelated.npy")
    raw = spectrum.SPECTRUM_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == spectrum.SPECTRUM_SHA256
    source = spectrum.load_source()
    assert source.shape == (3, 512, 257) and source.dtype == np.float64


def test_the_project_pins_the_package_and_ships_no_copy() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dreamlens==0.1.1" in config["project"]["dependencies"]
    assert not list((ROOT / "service").rglob("*.npy"))  # the array stays under its authors' terms: not copied


def test_a_corrupted_copy_is_refused(tmp_path: Path) -> None:
    raw = bytearray(spectrum.SPECTRUM_PATH.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one magnitude
    bad = tmp_path / "maco_spectrum.npy"
    bad.write_bytes(bytes(raw))
    with pytest.raises(spectrum.SpectrumError, match=r"sha256 [0-9a-f]{64} is not the expected a4810ea0"):
        spectrum.load_source(bad)
    with pytest.raises(spectrum.SpectrumError, match="cannot be read"):
        spectrum.load_source(tmp_path / "missing.npy")


def _saved(tmp_path: Path, array: Any, **kw: Any) -> tuple[Path, str]:
    path = tmp_path / "other.npy"
    np.save(path, array, **kw)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_with_its_own_hash_is_still_checked(tmp_path: Path) -> None:
    """Shape, dtype, values and no pickles, whatever hash it is checked against."""
    path, digest = _saved(tmp_path, np.ones((3, 64, 33), np.float32))
    with pytest.raises(spectrum.SpectrumError, match=r"shape \(3, 64, 33\)"):
        spectrum.load_source(path, digest)
    path, digest = _saved(tmp_path, np.zeros(spectrum.SOURCE_SHAPE, np.float32))
    with pytest.raises(spectrum.SpectrumError, match="finite and positive"):
        spectrum.load_source(path, digest)
    path, digest = _saved(tmp_path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(spectrum.SpectrumError, match=r"not a plain \.npy array"):
        spectrum.load_source(path, digest)


# --- resampling -------------------------------------------------------------


def test_resampling_is_exact_where_the_frequencies_coincide() -> None:
    source = torch.from_numpy(spectrum.load_source()) / spectrum.SOURCE_SIZE
    assert torch.allclose(spectrum.magnitude(512, torch.float64), source, rtol=1e-12)
    # 256 px: every frequency k/256 is the source's 2k/512.
    assert torch.allclose(spectrum.magnitude(256, torch.float64), source[:, ::2, ::2], rtol=1e-12)


# Every small side (where the rings hold few coefficients) and a spread of
# larger ones: a fixed list, so every run checks the same sizes (a random
# draw once found 34 px, the worst of all 993 sizes from 32 to 1024).
SIZES = [*range(32, 65), 96, 100, 128, 160, 200, 224, 240, 256, 300, 384, 500, 511, 513, 640, 777, 1000, 1024]


def test_resampling_keeps_the_radial_profile() -> None:
    """The mean log magnitude in rings of frequency (cycles per pixel) is the
    512-pixel spectrum's, within 0.45 (a factor 1.6, of a profile that spans
    a factor 10⁵: the rings are sampled at other frequencies; 0.37 at worst
    over every size from 32 to 1024), and the power-law slope of the mid
    frequencies (0.02-0.2) within 0.15 of it (0.2 below 40 px, where that
    band holds few coefficients: 0.154 at 34 px)."""
    source = spectrum.magnitude(512, torch.float64)
    for size in SIZES:
        mag = spectrum.magnitude(size, torch.float64)
        assert mag.shape == (3, size, size // 2 + 1) and bool((mag > 0).all())
        low = 2 / min(size, 512)
        edges = torch.logspace(math.log10(low), math.log10(0.5), 9, dtype=torch.float64)
        for got, want in zip(_profile(mag, edges), _profile(source, edges)):
            if got is not None and want is not None:
                assert float((got - want).abs().max()) < 0.45, size
        slack = 0.2 if size < 40 else 0.15
        assert abs(_slope(mag, 0.02, 0.2) - _slope(source, 0.02, 0.2)) < slack, size


def test_the_spectrum_is_cached_per_size_dtype_and_device() -> None:
    a = spectrum.magnitude(96, torch.float32, torch.device("cpu"))
    assert spectrum.magnitude(96, torch.float32, torch.device("cpu")) is a
    assert spectrum.magnitude(96, torch.float64, torch.device("cpu")).dtype == torch.float64


# --- the parameterization -------------------------------------------------


def _specs(units: list[int], **kw: Any) -> list[RenderSpec]:
    fields = {**recipes.recipe("maco").model_dump(), "steps": 4, "size": 64, **kw}
    return [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, **fields) for u in units]


def test_the_maco_recipe_uses_the_imagenet_spectrum_and_old_keys_hold() -> None:
    assert recipes.recipe("maco").param.magnitude == "imagenet"
    old = _specs([1], param=Param(name="maco", decay=1.5))[0]
    assert "magnitude" not in old.content()["param"]  # a power-law maco keeps its key
    new = _specs([1], param=Param(name="maco", magnitude="imagenet"))[0]
    assert new.content()["param"]["magnitude"] == "imagenet" and new.key() != old.key()
    with pytest.raises(ValueError, match="needs param 'maco'"):
        Param(name="fourier", magnitude="imagenet")
    with pytest.raises(ValueError, match="has none"):
        Param(name="maco", magnitude="imagenet", decay=1.5)


def test_maco_imagenet_batch_independence_float64(registry: Registry) -> None:
    from service.zoo import load_network

    net = load_network(registry.get(MODEL)).double()
    prep = registry.get(MODEL).preprocessing
    batch = _specs([258, 700, 121])
    together = engine.render(net, "_fc", batch, preprocessing=prep, precision="float64")
    for i, spec in enumerate(batch):
        alone = engine.render(net, "_fc", [spec], preprocessing=prep, precision="float64")
        assert (alone.images[0] - together.images[i]).abs().max().item() < 1e-8


def test_maco_imagenet_climbs(lite0: nn.Module, registry: Registry) -> None:
    specs = _specs([258, 700, 29], steps=10, size=96)
    res = engine.render(lite0, "_fc", specs, preprocessing=registry.get(MODEL).preprocessing, precision="float32")
    first, last = res.trace[0].activation, res.trace[-1].activation
    assert all(b > a + 0.5 for a, b in zip(first, last)), (first, last)
    assert res.images.min() >= 0 and res.images.max() <= 1
