"""The batched optimization loop: pure, tensors in, tensors and traces out.

One batch = B specs that share model, layer, kind and recipe. They are
optimized together as one (B, 3, H, W) tensor with one forward and one
backward per step. Every image keeps its own loss term, its own starting noise
(from its own generator) and Adam's per-element state, so an image does not
depend on the batch it landed in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from service.objectives import LayerProbe, UnitSelector
from service.priors import combined_prior
from service.spec import RenderSpec

ProgressFn = Callable[[int, int], None]
# The dtype the optimized image is kept in. "bfloat16" keeps it in float32 on
# purpose: bf16 is autocast for the network only, while the image, Adam's state
# and the prior stay float32 (a bf16 image could not even hold Adam's small
# late steps: bf16 has 8 bits of mantissa).
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}


@dataclass
class TracePoint:
    step: int
    activation: list[float]
    prior: list[float]

    @property
    def objective(self) -> list[float]:
        return [p - a for a, p in zip(self.activation, self.prior)]


@dataclass
class BatchResult:
    images: torch.Tensor  # (B, 3, H, W) float, the optimized network input, on the CPU
    display: torch.Tensor  # (B, H, W, 3) uint8, the lecture's display normalization
    activation: torch.Tensor  # (B,) final f(x), measured in float32
    prior: torch.Tensor  # (B,) final h(x)
    trace: list[TracePoint]
    precision: str
    device: str
    seconds: float
    steps: int
    timings: dict[str, float] = field(default_factory=dict)

    def image_trace(self, i: int) -> list[dict[str, float]]:
        return [
            {"step": t.step, "activation": t.activation[i], "prior": t.prior[i], "objective": t.objective[i]}
            for t in self.trace
        ]


def initial_noise(specs: Sequence[RenderSpec], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Each image's starting noise N(0, init_scale²) from its own generator,
    drawn on the CPU so that it is the same on every device."""
    out = []
    for spec in specs:
        g = torch.Generator().manual_seed(spec.noise_seed())
        out.append(torch.randn(1, 3, spec.size, spec.size, generator=g, dtype=torch.float64) * spec.init_scale)
    return torch.cat(out).to(dtype)


def display_uint8(x: torch.Tensor) -> torch.Tensor:
    """The lecture's display normalization per image, as 8-bit (B, H, W, 3)."""
    x = x.detach().to(torch.float64)
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    shown = (0.5 + 0.1 * (x - mean) / std).clamp(0, 1)
    return (shown * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    if precision == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_batch(specs: Sequence[RenderSpec]) -> None:
    if not specs:
        raise ValueError("render needs at least one spec")
    first = specs[0].batch_key()
    for s in specs[1:]:
        if s.batch_key() != first:
            raise ValueError("all specs of a batch must share model, layer, kind and recipe")


def render(
    net: nn.Module,
    layer_path: str,
    specs: Sequence[RenderSpec],
    *,
    precision: str | None = None,
    device: str | torch.device | None = None,
    init: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    trace_every: int = 10,
    channels_last: bool = False,
) -> BatchResult:
    """Render a batch of specs as one optimization.

    `net` must be in eval mode with frozen weights, on `device`, in float64 if
    `precision` is "float64". `init` overrides the per-spec starting noise.
    """
    _check_batch(specs)
    if net.training or any(p.requires_grad for p in net.parameters()):
        raise ValueError("the network must be in eval mode with frozen weights (see zoo.load_network)")
    spec0 = specs[0]
    precision = precision or spec0.precision
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)} (resolve 'auto' first), got {precision!r}")
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    t_start = time.perf_counter()
    x = (init if init is not None else initial_noise(specs)).to(device=dev, dtype=DTYPES[precision])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.clone().requires_grad_(True)
    probe = LayerProbe(net, layer_path)
    select = UnitSelector(spec0.kind, [s.unit for s in specs], [s.position for s in specs], device=dev)
    prior = combined_prior(spec0.prior)
    trace = _optimize(x, lambda v: select(probe(v)), prior, spec0, precision, progress, trace_every)
    t_loop = time.perf_counter()
    with torch.no_grad():
        act_final = select(probe(x.detach())).to(torch.float64).cpu()
        prior_final = prior(x.detach()).to(torch.float64).cpu()
    images = x.detach().contiguous().cpu()
    t_end = time.perf_counter()
    return BatchResult(
        images=images, display=display_uint8(images), activation=act_final, prior=prior_final, trace=trace,
        precision=precision, device=str(dev), seconds=t_end - t_start, steps=spec0.steps,
        timings={"optimize_s": t_loop - t_start, "finalize_s": t_end - t_loop},
    )  # fmt: skip


def _optimize(
    x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], prior: Callable[[torch.Tensor], torch.Tensor],
    spec: RenderSpec, precision: str, progress: ProgressFn | None, trace_every: int,
) -> list[TracePoint]:  # fmt: skip
    optimizer = torch.optim.Adam([x], lr=spec.lr)
    trace: list[TracePoint] = []
    steps = spec.steps
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with _autocast(x.device, precision):
            act = f(x)
        act = act.to(x.dtype)
        h = prior(x)
        # Each image's loss depends on its own pixels only, so the gradient of
        # the sum is each image's own gradient.
        (h - act).sum().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if trace_every and (step % trace_every == 0 or step == steps - 1):
            trace.append(TracePoint(step, act.detach().float().cpu().tolist(), h.detach().float().cpu().tolist()))
        if progress is not None:
            progress(step + 1, steps)
    return trace
