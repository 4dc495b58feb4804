"""A network's layers, their friendly aliases, unit kinds and unit counts.

Worked out from the architecture alone, by one forward pass on PyTorch's
"meta" device (shapes, no data, no weights), so the API host can validate a
job against the zoo without holding any weights.

Every module whose output is, per image, a vector (C,), a feature map
(C, H, W) or (H, W, C), or a token sequence (L, D) is a layer
(`service.zoo.layouts` says which). Its units: `channel` = one feature
summed over all positions (all tokens), `neuron` = one feature at one
position (default: the centre; a token sequence's class token if it has
one), `logit` = one output of the classifier.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from service.errors import BadRequest, BadUnit, UnknownLayer
from service.spec import UnitKind
from service.zoo.layouts import NCHW, LayerLayout, channels, layout_of, spatial, token_info
from service.zoo.registry import ModelEntry

# Modules whose output says nothing new about what the network sees.
_SKIP = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass(frozen=True)
class LayerInfo:
    path: str
    aliases: tuple[str, ...]
    module_type: str
    shape: tuple[int, ...]  # per image: (C,), (C, H, W), (H, W, C) or (L, D), as `arrangement` says
    kinds: tuple[UnitKind, ...]
    arrangement: LayerLayout = field(default=NCHW)

    @property
    def layout(self) -> str:
        """NC, NCHW, NHWC or NLD (tokens)."""
        return self.arrangement.layout

    @property
    def units(self) -> int:
        return channels(self.arrangement, self.shape)

    @property
    def default_kind(self) -> UnitKind:
        return self.kinds[0]

    @property
    def name(self) -> str:
        return self.aliases[0] if self.aliases else self.path

    @property
    def has_positions(self) -> bool:
        return self.arrangement.has_positions

    def describe(self) -> str:
        """The shape with its axes named, e.g. 197 tokens x 192 (1 class token)."""
        dims = "x".join(map(str, self.shape))
        if self.layout == "NLD":
            lead = self.arrangement.prefix_tokens
            what = "class token" if self.arrangement.class_token else "prefix token"
            extra = f", {lead} {what}{'s' if lead > 1 else ''}" if lead else ""
            grid = self.arrangement.grid
            return f"{dims} (tokens x D{extra}{f', {grid[0]}x{grid[1]} patches' if grid else ''})"
        return {"NC": dims, "NCHW": f"{dims} (CxHxW)", "NHWC": f"{dims} (HxWxC)"}[self.layout]


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
        """A layer with positions (a feature map or token sequence) for
        diversity's Gram matrices: `name`, or by default the aliased one about
        two thirds of the way to the layer `before` (the render's target)."""
        if name is not None:
            layer = self.layer(name)
            if not layer.has_positions:
                raise BadRequest(f"diversity_layer {layer.name} has no activation map (shape {layer.shape}): "
                                 "name a conv layer or a token layer", field="diversity_layer")  # fmt: skip
            return layer
        target = self.layers.index(self.layer(before))
        candidates = self.layers[: target + 1]
        if self.entry.classic_aliases:
            # The networks the zoo had before token and channels-last layers
            # were told apart keep the choice they made then (every 3-d shape,
            # among the aliases they had), so their renders keep their keys.
            maps = [x for x in candidates if len(x.shape) == 3 and _classic(self.entry, x.aliases)]
            maps = maps or [x for x in candidates if len(x.shape) == 3]
        else:
            maps = [x for x in candidates if x.has_positions and x.aliases]
            maps = maps or [x for x in candidates if x.has_positions]
        if not maps:
            raise BadRequest(f"no conv layer up to {before} to measure diversity at", field="diversity_layer")
        return maps[max(0, (2 * len(maps)) // 3 - 1)]

    def position(self, layer: LayerInfo, kind: UnitKind, position: tuple[int, int] | None) -> tuple[int, int] | None:
        """Validate a neuron position (None = the default one, chosen by the
        engine): (row, col) in a feature map, or in a token sequence's patch grid."""
        if position is None:
            return None
        grid = spatial(layer.arrangement, layer.shape)
        if kind != "neuron" or grid is None:
            raise BadUnit(
                f"a position applies only to neurons of feature maps and of token sequences with a square "
                f"patch grid, not to layer {layer.name}"
            )
        h, w = grid
        r, c = position
        if not (0 <= r < h and 0 <= c < w):
            raise BadUnit(f"position {position} outside the {h}x{w} {'grid' if layer.layout == 'NLD' else 'map'} "
                          f"of layer {layer.name}")  # fmt: skip
        return (r, c)


_CLASSIC_ALIAS = re.compile(r"(conv|fc)\d+|logits")


def _classic(entry: ModelEntry, aliases: Iterable[str]) -> bool:
    """Whether a layer had an alias before family landmarks were added
    (EfficientNet-Lite had its landmarks from the start)."""
    names = list(aliases)
    if entry.family == "efficientnet_lite":
        return bool(names)
    return any(_CLASSIC_ALIAS.fullmatch(a) for a in names)


@dataclass
class _Trace:
    net: nn.Module
    outputs: dict[str, torch.Tensor]
    order: list[str]
    types: dict[str, str]
    layouts: dict[str, LayerLayout]
    final: object


_PATCH = threading.Lock()


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """The network with its parameters on the meta device (shapes only).

    Built there directly where its constructor allows. One that computes
    with tensors while it builds (torchvision's RegNet works out its widths
    with torch) runs on the CPU instead, each parameter moved to the meta
    device as it is registered, so that its weights are never all allocated
    nor initialized: a request naming the biggest network costs the API
    host no more than a small one."""
    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):
        pass
    register = nn.Module.register_parameter

    def to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    # The patch is process-wide while it lasts: one such build at a time.
    with _PATCH:
        nn.Module.register_parameter = to_meta  # type: ignore[method-assign,assignment]
        try:
            net = build()
        finally:
            nn.Module.register_parameter = register  # type: ignore[method-assign]
    return net.to("meta")


def _trace(entry: ModelEntry, size: int) -> _Trace:
    net = build_on_meta(entry.build)
    net.eval()
    tokens = token_info(net)
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    types: dict[str, str] = {}
    layouts: dict[str, LayerLayout] = {}
    hooks = []
    for path, module in net.named_modules():
        if not path or isinstance(module, _SKIP):
            continue

        def hook(m: nn.Module, _i: object, out: object, path: str = path) -> None:
            # Per-image outputs only: a batch of 1 that became several is a
            # reshuffle (attention windows, heads), not a layer of features.
            if not isinstance(out, torch.Tensor) or path in outputs or out.dim() < 2 or out.shape[0] != 1:
                return
            layout = layout_of(m, tuple(int(s) for s in out.shape[1:]), tokens)
            if layout is None:
                return
            outputs[path] = out
            order.append(path)
            layouts[path] = layout

        types[path] = type(module).__name__
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            final = net(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return _Trace(net, outputs, order, types, layouts, final)


def _trace_layers(entry: ModelEntry, size: int) -> list[LayerInfo]:
    t = _trace(entry, size)
    outputs, order, types = t.outputs, t.order, t.types
    logit_path = next((p for p in order if outputs[p] is t.final), None)
    if logit_path is None and entry.source in ("timm", "registered") and entry.num_classes:
        logit_path = _classifier(t, entry.num_classes)

    counts = {"Conv2d": 0, "Conv2dSame": 0, "Linear": 0}
    conv_alias: dict[str, str] = {}
    n_conv = n_fc = 0
    for path, _module in t.net.named_modules():
        ty = types.get(path)
        if path not in outputs or ty not in counts:
            continue
        if ty == "Linear":
            n_fc += 1
            conv_alias[path] = f"fc{n_fc}"
        else:
            n_conv += 1
            conv_alias[path] = f"conv{n_conv}"

    family_alias = (
        _family_aliases(entry, order) if entry.family == "efficientnet_lite" else _landmarks(t, entry.num_classes)
    )
    paths = set(order)
    # A landmark never hides a module path of the same name (timm calls its
    # classifier `head`: there `head` stays that module), and a numbered one
    # goes with all its numbers (ShuffleNet's modules are called stage2-4:
    # stage1 → stage2 would mislead).
    clash = {re.sub(r"\d+$", "", a) for names in family_alias.values() for a in names if a in paths}
    layers: list[LayerInfo] = []
    for path in order:
        out = outputs[path]
        shape = tuple(int(s) for s in out.shape[1:])
        aliases: list[str] = []
        if path == logit_path:
            # A timm backbone without a classifier ends in its pooled
            # features: its output, but no logits.
            aliases.append("logits" if entry.num_classes else "output")
        if path in conv_alias:
            aliases.append(conv_alias[path])
        aliases += [a for a in family_alias.get(path, []) if re.sub(r"\d+$", "", a) not in clash]
        layout = t.layouts[path]
        if path == logit_path and entry.num_classes:
            kinds: tuple[UnitKind, ...] = ("logit",)
        elif layout.has_positions:
            kinds = ("channel", "neuron")
        else:
            kinds = ("neuron",)
        layers.append(LayerInfo(path, tuple(aliases), types[path], shape, kinds, layout))
    return layers


def _classifier(t: _Trace, classes: int) -> str | None:
    """Where no module returns the network's output (it is computed after
    the last one: distilled DeiT and VOLO add a second head to the first,
    DLA and DPN flatten a 1x1 convolution's map), the classifier is the
    first layer as wide as the class list, a vector or a 1x1 map, after the
    last feature map of another width (the class head, not the
    distillation head nor VOLO's per-token one)."""

    def one_wide(p: str) -> bool:
        layout = t.layouts[p]
        shape = tuple(int(s) for s in t.outputs[p].shape[1:])
        return channels(layout, shape) == classes and (layout.layout == "NC" or spatial(layout, shape) == (1, 1))

    maps = [i for i, p in enumerate(t.order) if t.layouts[p].has_positions and _width(t, p) != classes]
    tail = t.order[maps[-1] + 1 :] if maps else t.order
    return next((p for p in tail if one_wide(p)), None)


def _family_aliases(entry: ModelEntry, order: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if entry.family == "efficientnet_lite":
        for path in order:
            if path.startswith("_blocks.") and path.count(".") == 1:
                out.setdefault(path, []).append(f"block{int(path.split('.')[1]) + 1}")
        out.setdefault("_conv_head", []).append("head")
    return out


# The repeated units of the torchvision and timm families: residual blocks,
# inverted residuals, transformer blocks, Inception modules, NASNet cells —
# by name, as their authors call them (…Block…, …Bottleneck, DlaBasic, …).
# torchvision's MaxVitBlock is a whole stage of MaxVitLayers, so it is not one.
_BLOCK_TYPES = frozenset({
    "_DenseLayer", "Inception", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "MBConv",
    "FusedMBConv", "MaxVitLayer", "Fire", "DepthwiseSeparableConv", "XceptionModule", "TransformerLayer",
})  # fmt: skip
_BLOCK_NAME = re.compile(r"Block|Bottleneck|Bottle2neck|Cell|(Basic|Residual)$")
_NOT_BLOCKS = frozenset({"MaxVitBlock"})
# Pooling that leaves one position: what stands between the last feature map and the classifier.
_POOL = re.compile(r"Pool")


def _is_block_type(name: str) -> bool:
    return name not in _NOT_BLOCKS and (name in _BLOCK_TYPES or bool(_BLOCK_NAME.search(name)))


def _landmarks(t: _Trace, classes: int) -> dict[str, list[str]]:
    """blockN, stageN, head and features, from the network's structure, the
    same rules for every torchvision and timm family:

    - blockN: the N-th outermost block (a module of a block type, above);
    - stageN: the N-th module made of nothing but blocks (a ResNet's layerN,
      a ConvNeXt's or Swin's stage), where there are at least two;
    - head, features, prepool: the last feature map or token sequence
      before the global pooling (or before the classifier, where nothing
      pools), other than a map of class scores: what the classifier sees. Where a module is called head or
      features (timm's classifier is `head`), the name stays the module's;
      `prepool` is always this layer.
    """
    modules = dict(t.net.named_modules())
    positional = [p for p in t.order if t.layouts[p].has_positions]
    out: dict[str, list[str]] = {}

    def inside(path: str, outer: str) -> bool:
        return path.startswith(outer + ".")

    blocks: list[str] = []
    for path in positional:  # in the order they ran, inner ones first
        if _is_block_type(t.types[path]):
            blocks = [b for b in blocks if not inside(b, path)]
            if not any(inside(path, b) for b in blocks):
                blocks.append(path)
    blocks.sort(key=t.order.index)
    for i, path in enumerate(blocks, start=1):
        out.setdefault(path, []).append(f"block{i}")

    block_set = set(blocks)
    stages: list[str] = []
    for path in positional:
        kids = _members(modules[path], path)
        if kids and all(k in block_set for k in kids):
            stages.append(path)
    if len(stages) >= 2:
        for i, path in enumerate(stages, start=1):
            out.setdefault(path, []).append(f"stage{i}")

    def pooled(p: str) -> bool:
        return bool(_POOL.search(t.types[p])) and _one_position(t, p)

    pools = [i for i, p in enumerate(t.order) if pooled(p)]
    end = pools[-1] if pools else len(t.order)
    # Neither a pool, nor a mere re-layout (timm pools in two steps,
    # torchvision's Swin permutes before it pools), nor a map of class
    # scores (SqueezeNet's last convolution, VOLO's per-token head).
    before = [p for p in t.order[:end] if t.layouts[p].has_positions and t.types[p] != "Permute" and not pooled(p)
              and _width(t, p) != classes]  # fmt: skip
    if before:
        last = t.outputs[before[-1]]
        same = [p for p in t.order if t.outputs[p] is last]
        head = min(same, key=lambda p: (p.count("."), t.order.index(p)))
        out.setdefault(head, []).extend(["head", "features", "prepool"])
    return out


def _members(module: nn.Module, path: str) -> list[str]:
    """A module's parts, looking through lists of modules (never called
    themselves) and leaving out what passes its input on unchanged."""
    kids: list[str] = []
    for name, child in module.named_children():
        if isinstance(child, _SKIP):
            continue
        if isinstance(child, nn.ModuleList):
            kids += [f"{path}.{name}.{n}" for n, c in child.named_children() if not isinstance(c, _SKIP)]
        else:
            kids.append(f"{path}.{name}")
    return kids


def _width(t: _Trace, path: str) -> int:
    return channels(t.layouts[path], tuple(int(s) for s in t.outputs[path].shape[1:]))


def _one_position(t: _Trace, path: str) -> bool:
    layout, shape = t.layouts[path], tuple(t.outputs[path].shape[1:])
    grid = spatial(layout, tuple(int(s) for s in shape))
    return layout.layout == "NC" or grid == (1, 1)
