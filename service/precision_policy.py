"""When to render in bf16: one probe, one verdict per (model, layer, device,
torch version, weights), stored where every renderer sharing the store sees
it. Workers keep verdicts in the bucket, so a fresh worker on a new host
reuses what another worker decided; the CLI keeps them in a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence

import torch

from service import layout
from service.devices import device_name
from service.errors import StorageError
from service.precision import GuardReport, bfloat16_is_fast
from service.renderer import Renderer
from service.spec import RenderSpec, canonical_json
from service.storage import Store

log = logging.getLogger("dreamfarm.precision")

#: The probe: this many units of the batch, this many steps, at most this size.
PROBE_UNITS = 4
PROBE_STEPS = 64
PROBE_MAX_SIZE = 160


def verdict_id(spec: RenderSpec, device: torch.device) -> str:
    ident = {
        "model": spec.model,
        "layer": spec.layer,
        "device": device_name(device),
        "torch": torch.__version__,
        "weights": "random" if spec.random_weights else "pretrained",
        "probe": [PROBE_STEPS, PROBE_MAX_SIZE],
    }
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()


def load(store: Store, spec: RenderSpec, device: torch.device) -> GuardReport | None:
    try:
        data = json.loads(store.get(layout.precision_verdict_key(verdict_id(spec, device))))
        return GuardReport(**data["report"])
    except (StorageError, ValueError, KeyError, TypeError):
        return None


def save(store: Store, spec: RenderSpec, device: torch.device, report: GuardReport) -> None:
    record = {"model": spec.model, "layer": spec.layer, "device": device_name(device), "torch": torch.__version__,
              "random_weights": spec.random_weights, "report": report.as_dict()}  # fmt: skip
    try:
        store.put(layout.precision_verdict_key(verdict_id(spec, device)), canonical_json(record).encode(),
                  "application/json")  # fmt: skip
    except StorageError as exc:  # a verdict is worth keeping, not worth failing a render for
        log.warning("could not store the bf16 verdict: %s", exc)


def probe_specs(specs: Sequence[RenderSpec]) -> list[RenderSpec]:
    return [s.model_copy(update={"steps": PROBE_STEPS, "size": min(s.size, PROBE_MAX_SIZE)})
            for s in specs[:PROBE_UNITS]]  # fmt: skip


def decide(
    renderer: Renderer, specs: Sequence[RenderSpec], verdicts: Store, on_probe: Callable[[], None] | None = None
) -> None:
    """For 'auto' on a device with fast bf16, give the renderer a verdict:
    a stored one, or one probe run now and stored."""
    spec = specs[0]
    # Starting from a given image needs that image in the probe too: such
    # renders (adversarial ones) stay float32 unless bf16 is asked for.
    if spec.precision != "auto" or not bfloat16_is_fast(renderer.device) or spec.param.name == "image":
        return
    vid = verdict_id(spec, renderer.device)
    if renderer.decided.get("precision") == vid:
        return  # this renderer already holds this verdict: no store read per batch
    report = load(verdicts, spec, renderer.device)
    if report is None:
        if on_probe is not None:
            on_probe()
        report = renderer.run_guard(probe_specs(specs))
        save(verdicts, spec, renderer.device, report)
        log.info("bf16 guard for %s %s on %s: %s", spec.model, spec.layer, device_name(renderer.device), report.reason)
    renderer.guard_report = report
    renderer.decided["precision"] = vid
