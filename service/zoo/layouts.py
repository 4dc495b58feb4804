"""How a layer's output is laid out, so that a unit means the same on every
kind of network.

Per image, a layer gives one of:

- `NC`   (C,)        a vector: a pooled feature, a logit;
- `NCHW` (C, H, W)   a feature map, channels first (convolutions);
- `NHWC` (H, W, C)   a feature map, channels last (Swin, ConvNeXt's inner
                     layers, a timm ViT's patch embedding);
- `NLD`  (L, D)      a token sequence (transformers), maybe led by non-patch
                     tokens (a class token, a distillation token, registers).

The layout is decided from the output's shape and the module alone, the same
way when the zoo traces a network on the meta device and when the engine
reads a real activation (`service.objectives`), so both always agree. The
input is square, so a map's two spatial sides are equal and its channel count
is the odd one out; only where all three are equal does the module's type
decide (a Linear or LayerNorm works on the last dimension).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

Layout = Literal["NC", "NCHW", "NHWC", "NLD"]

# Modules whose output is their input, reshaped or not at all: they say
# nothing about the layout, their neighbours do.
_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass(frozen=True)
class LayerLayout:
    layout: Layout
    #: NLD: the leading tokens that are not patches (class, distillation, register tokens)
    prefix_tokens: int = 0
    #: NLD: token 0 is a class token
    class_token: bool = False
    #: NLD: the patch grid (rows, cols) the tokens after the prefix form, if they form a square one
    grid: tuple[int, int] | None = None

    def canonical(self, act: torch.Tensor) -> torch.Tensor:
        """(B, C, *positions): the channels second, as a convolution's (a view)."""
        if self.layout == "NHWC":
            return act.permute(0, 3, 1, 2)
        if self.layout == "NLD":
            return act.transpose(1, 2)
        return act

    @property
    def has_positions(self) -> bool:
        return self.layout != "NC"


NC = LayerLayout("NC")
NCHW = LayerLayout("NCHW")


def by_dims(dims: int) -> LayerLayout:
    """Without a module to look at (a network the zoo did not build): what
    the engine always assumed, (N, C) and (N, C, H, W); (N, L, D) as tokens."""
    if dims == 3:
        return LayerLayout("NLD")
    return NCHW if dims == 4 else NC


@dataclass(frozen=True)
class TokenInfo:
    """What a network says about its token sequences (timm and torchvision
    ViTs): how many tokens lead the patches, and whether the first is a class
    token."""

    prefix: int = 0
    class_token: bool = False


def token_info(net: nn.Module) -> TokenInfo:
    prefix = getattr(net, "num_prefix_tokens", None)  # timm's convention
    if isinstance(prefix, int):
        has_cls = getattr(net, "cls_token", None) is not None or bool(getattr(net, "has_class_token", False))
        return TokenInfo(prefix, has_cls and prefix > 0)
    if isinstance(getattr(net, "class_token", None), torch.Tensor):  # torchvision's VisionTransformer
        return TokenInfo(1, True)
    return TokenInfo()


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side > 0 and side * side == n else None


def _channels_last_hint(module: nn.Module) -> bool | None:
    """Whether this module's 4-d output is channels last, by what it is; None
    if its type does not say. A container answers as its last module does."""
    name = type(module).__name__
    if name in ("LayerNorm2d", "LayerNormAct2d", "GroupNorm1", "GroupNorm"):
        return False  # normalize over channels of an NCHW map (torchvision's and timm's)
    if isinstance(module, nn.Linear | nn.LayerNorm):
        return True  # both work on the last dimension
    if isinstance(module, nn.modules.conv._ConvNd | nn.modules.batchnorm._BatchNorm) or "Pool" in name:
        return False
    dims = getattr(module, "dims", None)  # torchvision.ops.Permute
    if name == "Permute" and isinstance(dims, list | tuple):
        return list(dims) == [0, 2, 3, 1]
    children = [m for m in module.children() if not isinstance(m, _PASS_THROUGH)]
    for child in reversed(children):
        hint = _channels_last_hint(child)
        if hint is not None:
            return hint
    return None


def layout_of(module: nn.Module, shape: tuple[int, ...], tokens: TokenInfo) -> LayerLayout | None:
    """The layout of `module`'s output of per-image `shape`, or None if it is
    no feature vector, map or token sequence (attention's inner tensors)."""
    if len(shape) == 1:
        return NC
    if len(shape) == 2:
        length = shape[0]
        if tokens.prefix:
            side = _square_side(length - tokens.prefix)
            if side is not None:
                return LayerLayout("NLD", tokens.prefix, tokens.class_token, (side, side))
        side = _square_side(length)
        return LayerLayout("NLD", 0, False, (side, side) if side is not None else None)
    if len(shape) == 3:
        a, b, c = shape
        if b == c and a != b:
            return NCHW
        if a == b and b != c:
            return LayerLayout("NHWC")
        if a == b == c:
            return LayerLayout("NHWC") if _channels_last_hint(module) else NCHW
    return None


def channels(layout: LayerLayout, shape: tuple[int, ...]) -> int:
    """How many units of kind channel (or logit, or vector neuron) the layer has."""
    return shape[-1] if layout.layout in ("NHWC", "NLD") else shape[0]


def spatial(layout: LayerLayout, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (rows, cols) a neuron's position is given in: the map's, or the
    patch grid of a token sequence."""
    if layout.layout == "NCHW":
        return shape[1], shape[2]
    if layout.layout == "NHWC":
        return shape[0], shape[1]
    if layout.layout == "NLD":
        return layout.grid
    return None


def default_token(layout: LayerLayout, length: int) -> int:
    """The token a neuron of a sequence is read at by default: the class token
    if there is one, else the centre patch (the grid's centre, or the middle
    of a sequence that forms no square grid)."""
    if layout.class_token and layout.prefix_tokens:
        return 0
    if layout.grid is not None:
        rows, cols = layout.grid
        return layout.prefix_tokens + (rows // 2) * cols + cols // 2
    return length // 2
