"""Choosing the arithmetic for a render: bfloat16 autocast where it is both
fast and good enough, float32 otherwise.

bf16 input gradients are noisy (cosine ≈ 0.92 to float32), so bf16 must earn
its place per model and device: `guard_bfloat16` renders a small probe both
ways and accepts bf16 only if the bf16 renders reach at least 95% of the
float32 renders' activation and, on a pretrained network, each is classified
as the same top-1 class as its float32 twin.

"Activation" is measured as the gain over the shared starting noise, averaged
over the probe: the lecture's loop is chaotic in its first steps (two float32
runs that differ only in rounding end a short render ±30% apart on single
units), so a per-unit ratio of raw activations would judge the noise, not bf16;
and a random-weights network's raw logits sit near zero, where a ratio means
nothing. On a random-weights network (allowed for benchmarks) the probe also
drops the prior: random logits are ~1e-2 and the prior's pull drowns them, so
only plain ascent on the unit says whether bf16 gradients climb as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from service import engine
from service.spec import RenderSpec
from service.zoo import Preprocessing

ACTIVATION_RATIO = 0.95


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether the device has native bf16 matrix units (else bf16 is slower)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # AMX or AVX512-BF16: oneDNN runs bf16 convolutions natively.
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


@dataclass(frozen=True)
class GuardReport:
    accepted: bool
    mean_ratio: float
    ratios: list[float]
    same_top1: list[bool] | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One half of the probe: the probe's renders in one precision, reduced to
    what the comparison needs (so it can be stored, and a probe cut short by
    a killed worker resumes from the half it finished)."""

    precision: str
    start: list[float]  # each unit's activation on the starting noise
    final: list[float]  # … after the probe's steps
    top1: list[int] | None  # the network's class for each render (pretrained networks)
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def measure(
    net: nn.Module,
    layer_path: str,
    specs: Sequence[RenderSpec],
    precision: str,
    *,
    device: torch.device,
    pretrained: bool,
    channels_last: bool = False,
    preprocessing: Preprocessing | None = None,
) -> Measurement:
    """Render the probe in `precision` ("float32" or "bfloat16")."""
    if not pretrained:
        specs = [s.model_copy(update={"prior": ()}) for s in specs]
    res = engine.render(net, layer_path, specs, precision=precision, device=device, channels_last=channels_last,
                        preprocessing=preprocessing)  # fmt: skip
    start = res.trace[0].activation if res.trace else [0.0] * len(specs)
    top1: list[int] | None = None
    if pretrained:
        with torch.no_grad():
            to_input = preprocessing.to_input if preprocessing and specs[0].param.name != "pixel" else (lambda t: t)
            top1 = [int(c) for c in net(to_input(res.images.to(device))).argmax(1).cpu()]
    return Measurement(precision, [float(a) for a in start], [float(a) for a in res.activation], top1, res.seconds)


def compare(f32: Measurement, b16: Measurement) -> GuardReport:
    """bf16 passes if it reaches ACTIVATION_RATIO of float32's gain over the
    shared starting noise and, on a pretrained network, the same top-1."""
    gains_f = [f - a0 for f, a0 in zip(f32.final, f32.start)]
    gains_b = [b - a0 for b, a0 in zip(b16.final, f32.start)]
    ratios = [b / f if f > 0 else 0.0 for b, f in zip(gains_b, gains_f)]
    mean_ratio = sum(gains_b) / sum(gains_f) if sum(gains_f) > 0 else 0.0
    same = [a == b for a, b in zip(f32.top1, b16.top1)] if f32.top1 is not None and b16.top1 is not None else None
    ok_ratio = mean_ratio >= ACTIVATION_RATIO
    ok_top1 = same is None or all(same)
    reason = (
        f"bf16 reached {mean_ratio:.0%} of float32's activation gain" + (" with the same top-1" if same else "")
        if ok_ratio and ok_top1
        else f"bf16 fell short: {mean_ratio:.0%} of float32's activation gain (per unit "
        f"{[round(r, 2) for r in ratios]}), same top-1 {same}"
    )
    return GuardReport(ok_ratio and ok_top1, mean_ratio, ratios, same, reason)


def guard_bfloat16(
    net: nn.Module,
    layer_path: str,
    specs: Sequence[RenderSpec],
    *,
    device: torch.device,
    pretrained: bool,
    channels_last: bool = False,
    preprocessing: Preprocessing | None = None,
) -> GuardReport:
    """Render `specs` in float32 and in bf16 and compare (see module doc)."""
    kw = {"device": device, "pretrained": pretrained, "channels_last": channels_last, "preprocessing": preprocessing}
    f32 = measure(net, layer_path, specs, "float32", **kw)  # type: ignore[arg-type]
    return compare(f32, measure(net, layer_path, specs, "bfloat16", **kw))  # type: ignore[arg-type]


def resolve(requested: str, device: torch.device, guard: GuardReport | None) -> str:
    """The precision to run: an explicit request wins; 'auto' is bf16 only on
    a device with fast bf16 and a passed guard."""
    if requested != "auto":
        return requested
    if guard is not None and guard.accepted and bfloat16_is_fast(device):
        return "bfloat16"
    return "float32"
