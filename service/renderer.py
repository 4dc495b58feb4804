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
import torch.nn as nn
import torchvision

from service import engine, layout, precision, quality
from service.contract import RenderItem
from service.devices import default_device, device_name
from service.engine import BatchResult
from service.images import png_bytes
from service.precision import GuardReport
from service.quality import Verdict
from service.spec import RenderSpec, canonical_json
from service.storage import Store
from service.zoo import Architecture, ModelEntry, Registry, WeightsConfig, load_network

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
class Rendered:
    """A batch's result and how recognizable each image is: per image, the
    rendering network's verdict first, then the judges'."""

    result: BatchResult
    verdicts: list[list[Verdict]]
    original_verdicts: list[Verdict] | None = None  # param "image": the starting image's

    def ranks(self, i: int) -> dict[str, int]:
        return {v.model: v.target_rank for v in self.verdicts[i] if v.target_rank is not None}


@dataclass
class Judge:
    """A network that only classifies renders (one extra forward per image)."""

    net: nn.Module
    entry: ModelEntry


def load_judges(registry: Registry, names: Sequence[str], weights: WeightsConfig, device: torch.device) -> list[Judge]:
    return [Judge(load_network(registry.get(m), config=weights, device=device), registry.get(m)) for m in names]


@dataclass
class Renderer:
    entry: ModelEntry
    device: torch.device = field(default_factory=default_device)
    random_weights: bool = False
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    guard_report: GuardReport | None = None
    judges: list[Judge] = field(default_factory=list)
    compile: bool = False
    # Decisions this renderer holds (a bf16 verdict id, tuned batch sizes by
    # tune id), so that a batch does not read the store for them again.
    decided: dict[str, str] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    _aliases: dict[str, tuple[str, ...]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        self.net = load_network(self.entry, random_weights=self.random_weights, config=self.weights, device=self.device)
        # channels-last lets oneDNN / cuDNN pick their fastest convolutions.
        self.channels_last = self.device.type in ("cuda", "cpu")
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.load_seconds = time.perf_counter() - t0

    def layer_aliases(self, layer: str) -> tuple[str, ...]:
        """The zoo's friendly names (logits, conv4, block6 …) of a layer given
        by module path; traced once per renderer, on the meta device."""
        if self._aliases is None:
            self._aliases = {info.path: info.aliases for info in Architecture(self.entry).layers}
        return self._aliases.get(layer, ())

    def run_guard(self, specs: Sequence[RenderSpec]) -> GuardReport:
        self.guard_report = precision.compare(self.measure(specs, "float32"), self.measure(specs, "bfloat16"))
        return self.guard_report

    def measure(self, specs: Sequence[RenderSpec], precision_name: str) -> precision.Measurement:
        """One half of the bf16 probe (service.precision_policy)."""
        return precision.measure(
            self.net, specs[0].layer, specs, precision_name, device=self.device, pretrained=not self.random_weights,
            channels_last=self.channels_last, preprocessing=self.entry.preprocessing,
        )  # fmt: skip

    def resolved_precision(self, spec: RenderSpec) -> str:
        return precision.resolve(spec.precision, self.device, self.guard_report)

    def render(
        self, specs: Sequence[RenderSpec], progress: ProgressFn | None = None, originals: torch.Tensor | None = None
    ) -> Rendered:
        result = engine.render(
            self.net, specs[0].layer, specs, preprocessing=self.entry.preprocessing,
            precision=self.resolved_precision(specs[0]), device=self.device, originals=originals, progress=progress,
            channels_last=self.channels_last, compile=self.compile,
        )  # fmt: skip
        targets = [s.unit if s.kind == "logit" else None for s in specs]
        size = specs[0].size
        judged = [quality.verdicts(self.net, self.entry, result.display, targets, size)]
        judged += [quality.verdicts(j.net, j.entry, result.display, targets) for j in self.judges
                   if j.entry.name != self.entry.name]  # fmt: skip
        per_image = [[v[i] for v in judged] for i in range(len(specs))]
        before = None
        if result.original is not None:
            before = quality.verdicts(self.net, self.entry, result.original, targets, size)
        return Rendered(result, per_image, before)

    def sidecar(self, spec: RenderSpec, rendered: Rendered, i: int, item: RenderItem) -> dict[str, object]:
        result = rendered.result
        side = self._record(spec, result, i, item.label)
        side["recipe"] = item.recipe
        side["steps_taken"] = result.steps_taken[i] if result.steps_taken else result.steps
        verdicts = rendered.verdicts[i]
        side["quality"] = {"renderer": verdicts[0].as_dict(), "judges": [v.as_dict() for v in verdicts[1:]]}
        if result.original is not None and rendered.original_verdicts is not None:
            side["adversarial"] = perturbation(result.original[i], result.display[i], spec, rendered, i)
        return side

    def _record(self, spec: RenderSpec, result: BatchResult, i: int, label: str | None) -> dict[str, object]:
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
            **({"compiled": {"used": result.compiled, "note": result.compile_note}} if self.compile else {}),
            "versions": versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **self._registered(),
        }

    def _registered(self) -> dict[str, object]:
        """A registered network's own class names and weights (the zoo's
        built-ins are known by name: their sidecars stay as they were)."""
        if self.entry.source != "registered":
            return {}
        return {"classes": list(self.entry.classes), "weights_sha256": self.entry.weights.sha256,
                "model_source": "registered"}  # fmt: skip

    def store_one(self, store: Store, rendered: Rendered, i: int, item: RenderItem) -> dict[str, object]:
        """Image `i`: PNG first, sidecar last (the sidecar is what marks a render
        done); returns the sidecar."""
        spec = item.spec
        side = self.sidecar(spec, rendered, i, item)
        meta = {"render-key": spec.key()}
        store.put(layout.render_png_key(spec), png_bytes(rendered.result.display[i]), "image/png", meta)
        store.put(layout.render_sidecar_key(spec), canonical_json(side).encode(), "application/json", meta)
        return side


def perturbation(
    original: torch.Tensor, shown: torch.Tensor, spec: RenderSpec, rendered: Rendered, i: int
) -> dict[str, object]:
    """What an adversarial render changed: the 8-bit images' L∞ and L2
    distance (in [0, 1] units), and the network's top-5 before and after."""
    diff = (shown.to(torch.float64) - original.to(torch.float64)) / 255
    before = rendered.original_verdicts[i] if rendered.original_verdicts else None
    return {
        "epsilon": spec.epsilon,
        "linf": round(float(diff.abs().max()), 6),
        "linf_levels": int((shown.to(torch.int16) - original.to(torch.int16)).abs().max()),
        "l2": round(float(diff.pow(2).sum().sqrt()), 6),
        "steps": rendered.result.steps_taken[i] if rendered.result.steps_taken else rendered.result.steps,
        "original_top5": before.as_dict()["top5"] if before else None,
        "result_top5": rendered.verdicts[i][0].as_dict()["top5"],
        "original_target_rank": before.target_rank if before else None,
    }
