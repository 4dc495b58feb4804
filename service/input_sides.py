"""Which image sides a network accepts: what the random transforms and
`resize` must deliver to it. Most take any side; a vision transformer's patch
embedding takes multiples of its patch (timm's, built with a dynamic image
size) or its one image size (timm's strict ones, torchvision's ViT)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

SideRule = Callable[[int], int]


def any_side(side: int) -> int:
    return side


def side_rule(net: nn.Module) -> SideRule:
    """The accepted side nearest to a wanted one."""
    embed = getattr(net, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if embed is not None and patch is not None and not getattr(embed, "dynamic_img_pad", False):
        if getattr(embed, "strict_img_size", False) and getattr(embed, "img_size", None) is not None:
            return _fixed(int(embed.img_size[0]))
        multiple = math.lcm(*(int(p) for p in (patch if isinstance(patch, tuple | list) else (patch,))))
        return lambda side: max(multiple, round(side / multiple) * multiple)
    # torchvision's VisionTransformer asserts its image_size.
    image_size, patch = getattr(net, "image_size", None), getattr(net, "patch_size", None)
    if isinstance(image_size, int) and isinstance(patch, int):
        return _fixed(image_size)
    return any_side


def _fixed(size: int) -> SideRule:
    return lambda _side: size
