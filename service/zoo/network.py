"""Building a zoo network with its weights, ready for input optimization."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from service.errors import WeightsError
from service.zoo import weights as weights_mod
from service.zoo.registry import ModelEntry


@dataclass(frozen=True)
class WeightsConfig:
    """Where the operator keeps weights (all optional)."""

    path: str | None = None
    torch_home: str | None = None
    weights_dir: str | None = None
    #: last resort: fetch the checkpoint from a bucket (see service.weights_remote)
    remote: weights_mod.Fetcher | None = None
    remote_name: str = ""


def load_network(
    entry: ModelEntry,
    *,
    random_weights: bool = False,
    config: WeightsConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> nn.Module:
    """The network in eval mode, its weights frozen (no weight gradients: only
    the input is optimized), on `device`.

    With `random_weights` the weights are a seeded random initialization:
    fine for timing, meaningless for pictures, and recorded in every sidecar.
    """
    cfg = config or WeightsConfig()
    if random_weights:
        torch.manual_seed(seed)
        net = entry.build()
    else:
        path = weights_mod.locate(entry.name, entry.weights, cfg.path, cfg.torch_home, cfg.weights_dir,
                                  cfg.remote, cfg.remote_name)  # fmt: skip
        state = weights_mod.load_state_dict(path, entry.weights, entry.name)
        net = _with_weights(entry, state, path)
    net.eval()
    net.requires_grad_(False)
    return net.to(device)


def _with_weights(entry: ModelEntry, state: dict[str, torch.Tensor], path: object) -> nn.Module:
    """The network built as its weights expect, the weights loaded strictly.

    Built on the meta device first, so no random initialization is computed
    only to be overwritten. A network that makes buffers it does not save
    (timm's relative position indices, rotary tables) keeps them on the meta
    device that way: it is built again on the CPU, where they are computed."""
    build = entry.build_for_weights or entry.build
    try:
        with torch.device("meta"):
            net = build()
    except (NotImplementedError, RuntimeError):  # a constructor that computes with tensors (RegNet)
        net = build()
    state = entry.adapt_state(state, net) if entry.adapt_state else state
    try:
        net.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
            net = build()
            net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = _mismatch(exc)
        raise WeightsError(f"weights file {path} does not fit {entry.name}: {first}{detail}") from exc
    return net


def _mismatch(exc: RuntimeError) -> str:
    """The first keys load_state_dict complained of, on the same line."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return f" ({lines[0][:200]})" if lines else ""


def default_torch_home() -> str | None:
    return os.environ.get("TORCH_HOME")
