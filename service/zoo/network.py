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
        with torch.device("meta"):
            net = entry.build()
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(f"weights file {path} does not fit {entry.name}: {first}") from exc
    net.eval()
    net.requires_grad_(False)
    return net.to(device)


def default_torch_home() -> str | None:
    return os.environ.get("TORCH_HOME")
