"""A network's layers, their friendly aliases, unit kinds and unit counts.

Worked out from the architecture alone, by one forward pass on PyTorch's
"meta" device (shapes, no data, no weights), so the API host can validate a
job against the zoo without holding any weights.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
import torch.nn as nn

from service.errors import BadRequest, BadUnit, UnknownLayer
from service.spec import UnitKind
from service.zoo.registry import ModelEntry

# Modules whose output says nothing new about what the network sees.
_SKIP = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass(frozen=True)
class LayerInfo:
    path: str
    aliases: tuple[str, ...]
    module_type: str
    shape: tuple[int, ...]  # per image: (C, H, W) or (N,)
    kinds: tuple[UnitKind, ...]

    @property
    def units(self) -> int:
        return self.shape[0]

    @property
    def default_kind(self) -> UnitKind:
        return self.kinds[0]

    @property
    def name(self) -> str:
        return self.aliases[0] if self.aliases else self.path


class Architecture:
    """The layers of one zoo model, and name/unit resolution against them."""

    def __init__(self, entry: ModelEntry, size: int | None = None) -> None:
        self.entry = entry
        self.size = size or entry.input_size
        self.layers = _trace_layers(entry, self.size)
        self._by_name: dict[str, LayerInfo] = {}
        for layer in self.layers:
            self._by_name[layer.path] = layer
            for alias in layer.aliases:
                self._by_name[alias] = layer

    def layer(self, name: str) -> LayerInfo:
        try:
            return self._by_name[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self._by_name), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        aliases = [a for layer in self.layers for a in layer.aliases]
        raise UnknownLayer(
            f"unknown layer {name!r} for {self.entry.name}{hint}; valid layers: "
            f"{', '.join(aliases)}, or a module path such as {self.layers[0].path} "
            f"(`dreamfarm models {self.entry.name}` lists all {len(self.layers)})"
        )

    def kind(self, layer: LayerInfo, kind: str | None) -> UnitKind:
        if kind is None:
            return layer.default_kind
        if kind not in layer.kinds:
            raise BadUnit(
                f"unit kind {kind!r} does not apply to layer {layer.name} of {self.entry.name}; "
                f"valid kinds: {', '.join(layer.kinds)}"
            )
        return kind  # type: ignore[return-value]

    def unit(self, layer: LayerInfo, kind: UnitKind, unit: int | str) -> int:
        """A unit index from an index or (for logits) a class name."""
        if isinstance(unit, str) and not unit.strip().lstrip("-").isdigit():
            if kind != "logit":
                raise BadUnit(
                    f"unit {unit!r}: names are only for class logits; layer {layer.name} of "
                    f"{self.entry.name} takes a {kind} index 0-{layer.units - 1}"
                )
            return self.class_index(unit)
        try:
            index = int(unit)
        except (TypeError, ValueError):
            raise BadUnit(f"unit {unit!r} is neither an index nor a class name") from None
        if isinstance(unit, bool) or not 0 <= index < layer.units:
            raise BadUnit(
                f"unit {unit!r} out of range for layer {layer.name} of {self.entry.name}: "
                f"valid units are 0-{layer.units - 1}"
            )
        return index

    def class_index(self, name: str) -> int:
        wanted = " ".join(name.lower().replace("_", " ").split())
        for i, cls in enumerate(self.entry.classes):
            if cls.lower() == wanted:
                return i
        close = difflib.get_close_matches(wanted, [c.lower() for c in self.entry.classes], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise BadUnit(
            f"unknown class name {name!r} for {self.entry.name}{hint} "
            f"(`dreamfarm models {self.entry.name} --classes` lists all {len(self.entry.classes)})"
        )

    def label(self, layer: LayerInfo, kind: UnitKind, unit: int) -> str | None:
        if kind == "logit" and unit < len(self.entry.classes):
            return self.entry.classes[unit]
        return None

    def conv_layer(self, name: str | None, *, before: str) -> LayerInfo:
        """A conv layer (an activation map) for diversity's Gram matrices:
        `name`, or by default the aliased one about two thirds of the way to
        the layer `before` (the render's target)."""
        if name is not None:
            layer = self.layer(name)
            if len(layer.shape) != 3:
                raise BadRequest(f"diversity_layer {layer.name} has no activation map (shape {layer.shape}): "
                                 "name a conv layer", field="diversity_layer")  # fmt: skip
            return layer
        target = self.layers.index(self.layer(before))
        maps = [x for x in self.layers[: target + 1] if len(x.shape) == 3 and x.aliases]
        maps = maps or [x for x in self.layers[: target + 1] if len(x.shape) == 3]
        if not maps:
            raise BadRequest(f"no conv layer up to {before} to measure diversity at", field="diversity_layer")
        return maps[max(0, (2 * len(maps)) // 3 - 1)]

    def position(self, layer: LayerInfo, kind: UnitKind, position: tuple[int, int] | None) -> tuple[int, int] | None:
        """Validate a neuron position (None = centre, chosen by the engine)."""
        if position is None:
            return None
        if kind != "neuron" or len(layer.shape) != 3:
            raise BadUnit(f"a position applies only to neurons of conv layers, not to layer {layer.name}")
        _, h, w = layer.shape
        r, c = position
        if not (0 <= r < h and 0 <= c < w):
            raise BadUnit(f"position {position} outside the {h}x{w} map of layer {layer.name}")
        return (r, c)


def _trace_layers(entry: ModelEntry, size: int) -> list[LayerInfo]:
    with torch.device("meta"):
        net = entry.build()
    net.eval()
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    types: dict[str, str] = {}
    hooks = []
    for path, module in net.named_modules():
        if not path or isinstance(module, _SKIP):
            continue

        def hook(_m: nn.Module, _i: object, out: object, path: str = path) -> None:
            if isinstance(out, torch.Tensor) and out.dim() in (2, 4) and path not in outputs:
                outputs[path] = out
                order.append(path)

        types[path] = type(module).__name__
        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        final = net(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    # The logits layer is the innermost module that returns the network's output.
    logit_path = next((p for p in order if outputs[p] is final), None)

    counts = {"Conv2d": 0, "Conv2dSame": 0, "Linear": 0}
    conv_alias: dict[str, str] = {}
    n_conv = n_fc = 0
    for path, _module in net.named_modules():
        t = types.get(path)
        if path not in outputs or t not in counts:
            continue
        if t == "Linear":
            n_fc += 1
            conv_alias[path] = f"fc{n_fc}"
        else:
            n_conv += 1
            conv_alias[path] = f"conv{n_conv}"

    family_alias = _family_aliases(entry, order)
    layers: list[LayerInfo] = []
    for path in order:
        out = outputs[path]
        shape = tuple(int(s) for s in out.shape[1:])
        aliases: list[str] = []
        if path == logit_path:
            aliases.append("logits")
        if path in conv_alias:
            aliases.append(conv_alias[path])
        aliases += family_alias.get(path, [])
        if path == logit_path:
            kinds: tuple[UnitKind, ...] = ("logit",)
        elif out.dim() == 4:
            kinds = ("channel", "neuron")
        else:
            kinds = ("neuron",)
        layers.append(LayerInfo(path, tuple(aliases), types[path], shape, kinds))
    return layers


def _family_aliases(entry: ModelEntry, order: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if entry.family == "efficientnet_lite":
        for path in order:
            if path.startswith("_blocks.") and path.count(".") == 1:
                out.setdefault(path, []).append(f"block{int(path.split('.')[1]) + 1}")
        out.setdefault("_conv_head", []).append("head")
    return out
