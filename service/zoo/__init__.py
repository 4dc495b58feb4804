"""The model zoo: registry, architectures (layers and units), weights, networks."""

from service.zoo.layers import Architecture, LayerInfo
from service.zoo.network import WeightsConfig, load_network
from service.zoo.registry import IMAGENET_CLASSES, ModelEntry, Preprocessing, Registry

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
