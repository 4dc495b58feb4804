"""Unit selection for a whole batch, with the forward pass cut short.

What a unit is on each layout (NCHW, NHWC, tokens) is `UnitSelector`'s doc;
the layout itself is decided as the zoo decides it (`service.zoo.layouts`).

`LayerProbe` runs a network only as far as the target layer: a forward hook on
that layer raises as soon as its output exists, so nothing deeper is computed
(for VGG16 `conv4`, that skips about 85% of the network's FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from service.spec import UnitKind
from service.zoo.layouts import LayerLayout, by_dims, default_token, layout_of, token_info


class _Reached(Exception):
    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


class Activations(dict[str, torch.Tensor]):
    """Layer path → its output, and how each output is laid out (NCHW, NHWC,
    tokens …), so that a unit means the same whatever the layer's layout."""

    def __init__(self, layouts: dict[str, LayerLayout]) -> None:
        super().__init__()
        self.layouts = layouts


def layout_in(acts: dict[str, torch.Tensor], path: str) -> LayerLayout:
    """How `acts[path]` is laid out: as the probe that read it says, else by
    its number of dimensions (what a plain dict of activations always meant)."""
    layouts = acts.layouts if isinstance(acts, Activations) else {}
    return layouts.get(path) or by_dims(acts[path].dim())


class LayerProbe:
    """Callable: input batch → the activations of the layers asked for, the
    forward stopped as soon as the last of them is computed."""

    def __init__(self, net: nn.Module, layer_paths: str | Sequence[str]) -> None:
        self.net = net
        self.paths = [layer_paths] if isinstance(layer_paths, str) else list(dict.fromkeys(layer_paths))
        modules = dict(net.named_modules())
        for path in self.paths:
            if path not in modules:
                raise KeyError(path)
        self.modules = [modules[p] for p in self.paths]
        self._tokens = token_info(net)
        # Decided once per output shape, by the rule the zoo's tracing uses
        # (service.zoo.layouts), so the engine reads a layer as it was listed.
        self._layouts: dict[tuple[str, tuple[int, ...]], LayerLayout] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's activations (the target's)."""
        return self.all(x)[self.paths[0]]

    def all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen = Activations({})

        def hook(path: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
            def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
                seen[path] = out
                if len(seen) == len(self.paths):
                    raise _Reached(out)

            return keep

        handles = [m.register_forward_hook(hook(p)) for p, m in zip(self.paths, self.modules)]
        try:
            self.net(x)
        except _Reached:
            seen.layouts.update({p: self._layout(p, m, seen[p]) for p, m in zip(self.paths, self.modules)})
            return seen
        finally:
            for h in handles:
                h.remove()
        raise RuntimeError(f"layers {self.paths} were not all reached")  # pragma: no cover

    def _layout(self, path: str, module: nn.Module, out: torch.Tensor) -> LayerLayout:
        shape = tuple(int(s) for s in out.shape[1:])
        key = (path, shape)
        if key not in self._layouts:
            self._layouts[key] = layout_of(module, shape, self._tokens) or by_dims(out.dim())
        return self._layouts[key]


class UnitSelector:
    """f(x) for every image of a batch: one unit per image, one kind per batch.

    - `channel`: the unit's feature summed over every position of the map
      (H x W, channels first or last) or every token of the sequence, class
      and register tokens included;
    - `neuron`: the feature at one position: (row, col) of the map or of the
      patch grid of the tokens; by default the centre, or for a sequence with
      a class token that token;
    - `logit` (and neurons of a vector layer): the unit's output.

    All by index tensors over the whole batch: no Python loop over images.
    """

    def __init__(
        self,
        kind: UnitKind,
        units: Sequence[int],
        positions: Sequence[tuple[int, int] | None] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.kind = kind
        self.units = torch.tensor(list(units), dtype=torch.long, device=device)
        self.rows = torch.arange(len(units), device=device)
        self.positions = list(positions) if positions is not None else [None] * len(units)
        self._given = torch.tensor([p is not None for p in self.positions], dtype=torch.bool, device=device)
        self._r = torch.tensor([p[0] if p else 0 for p in self.positions], dtype=torch.long, device=device)
        self._c = torch.tensor([p[1] if p else 0 for p in self.positions], dtype=torch.long, device=device)
        self._index: dict[tuple[object, ...], torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, act: torch.Tensor, layout: LayerLayout | None = None) -> torch.Tensor:
        arrangement = (layout or by_dims(act.dim())).layout
        if act.dim() == 2:
            return act[self.rows, self.units]
        if arrangement == "NLD":
            picked = act[self.rows, :, self.units]  # (B, L)
            if self.kind == "channel":
                return picked.sum(dim=1)
            return picked[self.rows, self._token_index(layout or by_dims(3), act.shape[1], act.device)]
        # A map: channels first, as the engine always read it, or last.
        picked = act[self.rows, self.units] if arrangement == "NCHW" else act[self.rows, :, :, self.units]
        if self.kind == "channel":
            return picked.sum(dim=(1, 2))
        rs, cs = self._map_index(picked.shape[1], picked.shape[2], act.device)
        return picked[self.rows, rs, cs]

    def _map_index(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("map", h, w, device)
        if key not in self._index:
            given = self._given.to(device)
            rs = torch.where(given, self._r.to(device), h // 2)
            cs = torch.where(given, self._c.to(device), w // 2)
            self._index[key] = (rs, cs)
        found = self._index[key]
        assert isinstance(found, tuple)
        return found

    def _token_index(self, layout: LayerLayout, length: int, device: torch.device) -> torch.Tensor:
        key = ("tokens", layout, length, device)
        if key not in self._index:
            default = default_token(layout, length)
            cols = layout.grid[1] if layout.grid is not None else 0
            at = layout.prefix_tokens + self._r.to(device) * cols + self._c.to(device)
            self._index[key] = torch.where(self._given.to(device), at, default)
        found = self._index[key]
        assert isinstance(found, torch.Tensor)
        return found


def group_similarity(act: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Lucid's diversity term, per image: the summed cosine similarity of its
    Gram matrix (channels × channels, at a conv layer) with those of the other
    samples of its group, divided by the group's size. Images only meet
    their own group's, so groups stay independent of each other.

    `act` is channels first, (B, C, *positions): a map or token sequence
    laid out otherwise goes through its `LayerLayout.canonical` first."""
    # Half precision (autocast) is too coarse for Gram matrices: float32 at least.
    flat = (act.float() if act.dtype in (torch.bfloat16, torch.float16) else act).flatten(2)  # (B, C, HW)
    grams = flat @ flat.transpose(1, 2)
    grams = grams / grams.flatten(1).norm(dim=1).clamp_min(1e-10).view(-1, 1, 1)
    g = torch.tensor(list(groups), device=act.device)
    same = (g[:, None] == g[None, :]).to(flat.dtype) - torch.eye(len(groups), device=act.device, dtype=flat.dtype)
    sims = grams.flatten(1) @ grams.flatten(1).T  # (B, B)
    similarity: torch.Tensor = (sims * same).sum(1) / (same.sum(1) + 1)
    return similarity
