"""A network loaded once on its device, rendering batches and filing results.

A `Renderer` holds what is expensive to make (the network on its device, the
precision decision) and is reused for every batch; the CLI holds one, a
worker process holds one per model.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch
import torchvision

from service import engine, layout, precision
from service.devices import default_device, device_name
from service.engine import BatchResult
from service.images import png_bytes
from service.precision import GuardReport
from service.spec import RenderSpec, canonical_json
from service.storage import Store
from service.zoo import ModelEntry, WeightsConfig, load_network

ProgressFn = Callable[[int, int], None]
DREAMFARM_VERSION = "0.2.0"


def versions() -> dict[str, str]:
    return {
        "dreamfarm": DREAMFARM_VERSION,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Renderer:
    entry: ModelEntry
    device: torch.device = field(default_factory=default_device)
    random_weights: bool = False
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    guard_report: GuardReport | None = None

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        self.net = load_network(self.entry, random_weights=self.random_weights, config=self.weights, device=self.device)
        # channels-last lets oneDNN / cuDNN pick their fastest convolutions.
        self.channels_last = self.device.type in ("cuda", "cpu")
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.load_seconds = time.perf_counter() - t0

    def run_guard(self, specs: Sequence[RenderSpec]) -> GuardReport:
        self.guard_report = precision.guard_bfloat16(
            self.net, specs[0].layer, specs, device=self.device, pretrained=not self.random_weights,
            channels_last=self.channels_last,
        )  # fmt: skip
        return self.guard_report

    def resolved_precision(self, spec: RenderSpec) -> str:
        return precision.resolve(spec.precision, self.device, self.guard_report)

    def render(self, specs: Sequence[RenderSpec], progress: ProgressFn | None = None) -> BatchResult:
        return engine.render(
            self.net, specs[0].layer, specs, precision=self.resolved_precision(specs[0]), device=self.device,
            progress=progress, channels_last=self.channels_last,
        )  # fmt: skip

    def sidecar(self, spec: RenderSpec, result: BatchResult, i: int, label: str | None) -> dict[str, object]:
        return {
            "key": spec.key(),
            "spec": spec.model_dump(mode="json"),
            "label": label,
            "png": layout.render_png_key(spec),
            "activation": float(result.activation[i]),
            "prior": float(result.prior[i]),
            "objective": float(result.prior[i] - result.activation[i]),
            "trace": result.image_trace(i),
            "precision": result.precision,
            "random_weights": spec.random_weights,
            "device": result.device,
            "device_name": device_name(self.device),
            "batch_size": len(result.images),
            "timings": {
                "batch_seconds": round(result.seconds, 4),
                **{k: round(v, 4) for k, v in result.timings.items()},
            },
            "versions": versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def store_one(self, store: Store, spec: RenderSpec, result: BatchResult, i: int, label: str | None) -> None:
        """Image `i` of `result`: PNG first, sidecar last (the sidecar is what marks a render done)."""
        side = self.sidecar(spec, result, i, label)
        meta = {"render-key": spec.key()}
        store.put(layout.render_png_key(spec), png_bytes(result.display[i]), "image/png", meta)
        store.put(layout.render_sidecar_key(spec), canonical_json(side).encode(), "application/json", meta)
