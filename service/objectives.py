"""Unit selection for a whole batch, with the forward pass cut short.

`LayerProbe` runs a network only as far as the target layer: a forward hook on
that layer raises as soon as its output exists, so nothing deeper is computed
(for VGG16 `conv4`, that skips about 85% of the network's FLOPs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from service.spec import UnitKind


class _Reached(Exception):
    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


class LayerProbe:
    """Callable: input batch → the target layer's activations."""

    def __init__(self, net: nn.Module, layer_path: str) -> None:
        self.net = net
        self.layer_path = layer_path
        modules = dict(net.named_modules())
        if layer_path not in modules:
            raise KeyError(layer_path)
        self.module = modules[layer_path]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def stop(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            raise _Reached(out)

        handle = self.module.register_forward_hook(stop)
        try:
            out = self.net(x)
        except _Reached as reached:
            return reached.output
        finally:
            handle.remove()
        return torch.as_tensor(out)  # pragma: no cover - the hook always fires


class UnitSelector:
    """f(x) for every image of a batch: one unit per image, one kind per batch."""

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

    def __call__(self, act: torch.Tensor) -> torch.Tensor:
        picked = act[self.rows, self.units]
        if act.dim() == 2:
            return picked
        if self.kind == "channel":
            return picked.sum(dim=(1, 2))
        h, w = act.shape[-2:]
        rs = torch.tensor([p[0] if p else h // 2 for p in self.positions], device=act.device)
        cs = torch.tensor([p[1] if p else w // 2 for p in self.positions], device=act.device)
        return picked[self.rows, rs, cs]
