"""When to render in bf16: a probe sized to the job, one verdict per (model,
layer, parameterization, device, torch version, weights), stored where every
renderer sharing the store sees it. Workers keep verdicts in the bucket, so a
fresh worker on a new host reuses what another worker decided; the CLI keeps
them in a local folder.

The probe renders a few of the job's units in float32 and in bf16 and
compares them (`service.precision`). It must never cost more than about a
tenth of the job it decides for: it is sized to fit that budget (fewer steps,
then a smaller image), and a job too small to afford even the smallest probe
that says anything renders in float32 without probing, and says so once.
Each half of the probe is stored as soon as it is measured, so a worker
killed mid-probe leaves its float32 half to the next one, which only measures
bf16.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from service import layout
from service.devices import device_name
from service.errors import StorageError
from service.precision import GuardReport, Measurement, bfloat16_is_fast, compare
from service.renderer import Renderer
from service.spec import RenderSpec, canonical_json
from service.storage import Store

log = logging.getLogger("dreamfarm.precision")

#: The probe at its largest: this many units of the job, this many steps, at most this size.
PROBE_UNITS = 4
PROBE_STEPS = 64
PROBE_MAX_SIZE = 160
#: The smallest probe that still says something: fewer steps than this judge
#: the loop's chaotic start, not bf16; smaller images than this, not the model.
MIN_PROBE_STEPS = 16
MIN_PROBE_SIZE = 96
#: The probe's share of the job's cost it may take at most.
PROBE_BUDGET = 0.1


@dataclass(frozen=True)
class ProbeSize:
    units: int
    steps: int
    size: int

    def cost(self) -> float:
        # Both precisions: bf16 is only probed where it is fast, so float32's
        # cost twice is an upper bound.
        return 2.0 * self.units * self.steps * self.size**2


def job_cost(specs: Sequence[RenderSpec]) -> float:
    """The job's float32 cost in pixel-steps: what a probe's cost is weighed against."""
    return float(sum(s.steps * s.size**2 for s in specs))


def probe_size(specs: Sequence[RenderSpec], budget: float = PROBE_BUDGET) -> ProbeSize | None:
    """The largest probe within `budget` of the job's cost: as many steps as
    allowed at the largest size, then a smaller image; None if even the
    smallest useful probe would cost more."""
    spec = specs[0]
    units = min(PROBE_UNITS, len(specs))
    allowed = budget * job_cost(specs)
    size = min(spec.size, PROBE_MAX_SIZE)
    while True:
        steps = min(PROBE_STEPS, spec.steps, int(allowed / (2.0 * units * size**2)))
        if steps >= MIN_PROBE_STEPS:
            return ProbeSize(units, steps, size)
        if size <= MIN_PROBE_SIZE or spec.steps < MIN_PROBE_STEPS:
            return None
        size = max(MIN_PROBE_SIZE, (size * 3 // 4) // 8 * 8)


def verdict_id(spec: RenderSpec, device: torch.device) -> str:
    ident = {
        "model": spec.model,
        "layer": spec.layer,
        # bf16's effect depends on what the optimizer moves: pixels, a Fourier
        # spectrum, a phase …, so a verdict for one parameterization is not one for another.
        "param": spec.param.name,
        "device": device_name(device),
        "torch": torch.__version__,
        "weights": "random" if spec.random_weights else "pretrained",
        "policy": 2,
    }
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()


def load(store: Store, spec: RenderSpec, device: torch.device) -> GuardReport | None:
    try:
        data = json.loads(store.get(layout.precision_verdict_key(verdict_id(spec, device))))
        return GuardReport(**data["report"])
    except (StorageError, ValueError, KeyError, TypeError):
        return None


def _record(spec: RenderSpec, device: torch.device) -> dict[str, object]:
    return {"model": spec.model, "layer": spec.layer, "param": spec.param.name, "device": device_name(device),
            "torch": torch.__version__, "random_weights": spec.random_weights}  # fmt: skip


def save(
    store: Store, spec: RenderSpec, device: torch.device, report: GuardReport, probe: ProbeSize | None = None,
    seconds: float | None = None,
) -> None:  # fmt: skip
    record = {**_record(spec, device), "report": report.as_dict()}
    if probe is not None:
        record["probe"] = {"units": probe.units, "steps": probe.steps, "size": probe.size}
    if seconds is not None:
        record["probe_seconds"] = round(seconds, 3)
    _put(store, layout.precision_verdict_key(verdict_id(spec, device)), record)


def _put(store: Store, key: str, record: dict[str, object]) -> None:
    try:
        store.put(key, canonical_json(record).encode(), "application/json")
    except StorageError as exc:  # a verdict is worth keeping, not worth failing a render for
        log.warning("could not store a bf16 probe result: %s", exc)


def _half_key(vid: str, probe: ProbeSize) -> str:
    return layout.precision_verdict_key(f"{vid}.float32-{probe.units}x{probe.steps}x{probe.size}")


def _load_half(store: Store, key: str) -> Measurement | None:
    try:
        return Measurement(**json.loads(store.get(key))["measurement"])
    except (StorageError, ValueError, KeyError, TypeError):
        return None


def probe_specs(specs: Sequence[RenderSpec], probe: ProbeSize) -> list[RenderSpec]:
    return [s.model_copy(update={"steps": probe.steps, "size": probe.size}) for s in specs[: probe.units]]


def run_probe(renderer: Renderer, specs: Sequence[RenderSpec], probe: ProbeSize, verdicts: Store) -> GuardReport:
    """Both halves of the probe, the float32 one taken from the store if an
    earlier (killed) probe of the same size measured it; stores the verdict."""
    spec, device = specs[0], renderer.device
    vid = verdict_id(spec, device)
    ps = probe_specs(specs, probe)
    half_key = _half_key(vid, probe)
    f32 = _load_half(verdicts, half_key)
    if f32 is None:
        f32 = renderer.measure(ps, "float32")
        _put(verdicts, half_key, {**_record(spec, device), "measurement": f32.as_dict()})
    b16 = renderer.measure(ps, "bfloat16")
    report = compare(f32, b16)
    renderer.guard_report = report
    save(verdicts, spec, device, report, probe, f32.seconds + b16.seconds)
    return report


def decide(
    renderer: Renderer, specs: Sequence[RenderSpec], verdicts: Store, on_probe: Callable[[], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> None:  # fmt: skip
    """For 'auto' on a device with fast bf16, give the renderer a verdict: a
    stored one, or one from a probe sized to `specs` (the job at hand), run
    now and stored; a job too small for a probe renders in float32."""
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
        probe = probe_size(specs)
        if probe is None:
            renderer.guard_report = None  # float32
            if renderer.decided.get("precision-small") != vid:  # say so once, check again for a larger job
                renderer.decided["precision-small"] = vid
                note = (f"rendering in float32: {len(specs)} units x {spec.steps} steps is too small a job to "
                        f"afford a bf16 probe (at most {PROBE_BUDGET:.0%} of the job)")  # fmt: skip
                log.info("%s", note)
                if on_note is not None:
                    on_note(note)
            return
        if on_probe is not None:
            on_probe()
        t0 = time.perf_counter()
        report = run_probe(renderer, specs, probe, verdicts)
        log.info("bf16 guard for %s %s on %s (probe %d units x %d steps at %d px, %.1f s): %s", spec.model,
                 spec.layer, device_name(renderer.device), probe.units, probe.steps, probe.size,
                 time.perf_counter() - t0, report.reason)  # fmt: skip
    renderer.guard_report = report
    renderer.decided["precision"] = vid
