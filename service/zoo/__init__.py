"""The model zoo: registry, architectures (layers and units), weights, networks.

The registry (names, descriptions, weights files, class names) is imported
at once and needs no torch; `Architecture`, `LayerInfo`, `WeightsConfig` and
`load_network` import torch, so they are loaded on first use (PEP 562): a
`dreamfarm models` or `--help` that never touches them never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from service.zoo.registry import IMAGENET_CLASSES, ModelEntry, Preprocessing, Registry

if TYPE_CHECKING:
    from service.zoo.layers import Architecture, LayerInfo
    from service.zoo.network import WeightsConfig, load_network

__all__ = [
    "IMAGENET_CLASSES",
    "Architecture",
    "LayerInfo",
    "ModelEntry",
    "Preprocessing",
    "Registry",
    "WeightsConfig",
    "load_network",
]

# name → the submodule that defines it (and imports torch)
_LAZY = {
    "Architecture": "service.zoo.layers",
    "LayerInfo": "service.zoo.layers",
    "WeightsConfig": "service.zoo.network",
    "load_network": "service.zoo.network",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
