"""Unit selection for a whole batch, with the forward pass cut short.

`LayerProbe` runs a network only as far as the target layer: a forward hook on
that layer raises as soon as its output exists, so nothing deeper is computed
(for VGG16 `conv4`, that skips about 85% of the network's FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from service.spec import UnitKind


class _Reached(Exception):
    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's activations (the target's)."""
        return self.all(x)[self.paths[0]]

    def all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}

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
            return seen
        finally:
            for h in handles:
                h.remove()
        raise RuntimeError(f"layers {self.paths} were not all reached")  # pragma: no cover


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


def group_similarity(act: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Lucid's diversity term, per image: the summed cosine similarity of its
    Gram matrix (channels × channels, at a conv layer) with those of the other
    samples of its group, divided by the group's size. Images only meet
    their own group's, so groups stay independent of each other."""
    # Half precision (autocast) is too coarse for Gram matrices: float32 at least.
    flat = (act.float() if act.dtype in (torch.bfloat16, torch.float16) else act).flatten(2)  # (B, C, HW)
    grams = flat @ flat.transpose(1, 2)
    grams = grams / grams.flatten(1).norm(dim=1).clamp_min(1e-10).view(-1, 1, 1)
    g = torch.tensor(list(groups), device=act.device)
    same = (g[:, None] == g[None, :]).to(flat.dtype) - torch.eye(len(groups), device=act.device, dtype=flat.dtype)
    sims = grams.flatten(1) @ grams.flatten(1).T  # (B, B)
    similarity: torch.Tensor = (sims * same).sum(1) / (same.sum(1) + 1)
    return similarity
