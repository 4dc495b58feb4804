"""The batched optimization loop: pure, tensors in, tensors and traces out.

One batch = B specs with one batch key (model, layer, kind, recipe). They are
optimized together with one forward and one backward per step. What an image
is made of (`service.parameterizations`), the transforms it goes through
before the network (`service.transforms`) and the loss (`service.loss`) all
come from the specs. Every image keeps its own starting values and random
transforms (from its own generators), its own loss term (diversity: its own
group's) and Adam's per-element state, so an image does not depend on the
batch it landed in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from service import display, parameterizations
from service.compiled import CheckedCompiled
from service.early_stop import EarlyStop
from service.input_sides import side_rule
from service.loss import Objective
from service.objectives import LayerProbe
from service.parameterizations import Parameterized, initial_noise
from service.spec import RenderSpec
from service.trace import TracePoint, trace_points, trace_row
from service.transforms import RandomTransforms
from service.zoo import Preprocessing

__all__ = ["DTYPES", "BatchResult", "TracePoint", "initial_noise", "render"]

ProgressFn = Callable[[int, int], None]
# The dtype the optimized image is kept in. "bfloat16" keeps it in float32 on
# purpose: bf16 is autocast for the network only, while the image, Adam's state
# and the prior stay float32 (a bf16 image could not even hold Adam's small
# late steps: bf16 has 8 bits of mantissa).
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}
# Transforms draw from a generator of their own per image, seeded apart from
# the one that drew the image's starting values.
TRANSFORM_SEED_SALT = 0x5EED_7A45


@dataclass
class BatchResult:
    images: torch.Tensor  # (B, 3, H, W) the optimized image in its space (input or pixels), on the CPU
    display: torch.Tensor  # (B, H, W, 3) uint8: what is saved
    activation: torch.Tensor  # (B,) final f, on the untransformed image, float64
    prior: torch.Tensor  # (B,) final h(image)
    trace: list[TracePoint]
    precision: str
    device: str
    seconds: float
    steps: int
    steps_taken: list[int] = field(default_factory=list)
    original: torch.Tensor | None = None  # (B, H, W, 3) uint8: param "image"'s starting image
    timings: dict[str, float] = field(default_factory=dict)
    # compile=True: whether the compiled forward rendered this batch, and if
    # not, why (it failed, or disagreed with eager: see service.compiled).
    compiled: bool = False
    compile_note: str | None = None

    def image_trace(self, i: int) -> list[dict[str, float]]:
        out = []
        for t in self.trace:
            point = {"step": t.step, "activation": t.activation[i], "prior": t.prior[i], "objective": t.objective[i]}
            if t.diversity is not None:
                point["diversity"] = t.diversity[i]
            out.append(point)
        return out


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    if precision == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check(net: nn.Module, specs: Sequence[RenderSpec], precision: str) -> None:
    if not specs:
        raise ValueError("render needs at least one spec")
    first = specs[0].batch_key()
    if any(s.batch_key() != first for s in specs[1:]):
        raise ValueError("all specs of a batch must share model, layer, kind and recipe")
    if net.training or any(p.requires_grad for p in net.parameters()):
        raise ValueError("the network must be in eval mode with frozen weights (see zoo.load_network)")
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)} (resolve 'auto' first), got {precision!r}")


@dataclass
class _Setup:
    """Everything one batch's loop uses, built from the specs."""

    specs: Sequence[RenderSpec]
    param: Parameterized
    forward: Callable[[torch.Tensor, int], dict[str, torch.Tensor]]  # (image, step) → activations, transformed
    measure: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # image → activations, as it is
    classify: Callable[[torch.Tensor], torch.Tensor]  # pixels → logits (early stopping)
    objective: Objective
    precision: str
    compiled: CheckedCompiled | None = None


def render(
    net: nn.Module,
    layer_path: str,
    specs: Sequence[RenderSpec],
    *,
    preprocessing: Preprocessing | None = None,
    precision: str | None = None,
    device: str | torch.device | None = None,
    init: torch.Tensor | None = None,
    originals: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    trace_every: int = 10,
    channels_last: bool = False,
    compile: bool = False,
) -> BatchResult:
    """Render a batch of specs as one optimization.

    `net` must be in eval mode with frozen weights, on `device`, in float64 if
    `precision` is "float64". `preprocessing` maps pixels in [0, 1] to the
    network's input (needed by every parameterization but `pixel`). `init`
    overrides `pixel`'s starting noise; `originals` (B, 3, H, W) in [0, 1] are
    param "image"'s starting images. `compile`: the step's forward through
    `torch.compile` (CUDA graphs on a GPU: mode "reduce-overhead") where the
    target is the network's output and no other layer is read; eager otherwise.
    """
    precision = precision or specs[0].precision if specs else "float32"
    _check(net, specs, precision)
    if layer_path != specs[0].layer:
        raise ValueError(f"layer {layer_path!r} is not the specs' layer {specs[0].layer!r}")
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    t_start = time.perf_counter()
    setup = _setup(net, specs, preprocessing, precision, dev, init, originals, channels_last, compile)
    trace, steps_taken = _optimize(setup, progress, trace_every)
    t_loop = time.perf_counter()
    with torch.no_grad():
        image = setup.param.image().detach()
    if setup.compiled is not None and setup.compiled.in_use and not bool(torch.isfinite(image).all()):
        # The first step's check passed but a later compiled step went wrong:
        # the batch is rendered again, eagerly, rather than filed as NaN.
        again = render(net, layer_path, specs, preprocessing=preprocessing, precision=precision, device=dev,
                       init=init, originals=originals, progress=progress, trace_every=trace_every,
                       channels_last=channels_last, compile=False)  # fmt: skip
        again.compile_note = "compiled render was not finite; rendered again eagerly"
        return again
    with torch.no_grad():
        act_final = setup.objective.unit(setup.measure(image)).to(torch.float64).cpu()
        prior_final = setup.objective.prior(image).to(torch.float64).cpu()
    shown = _display(setup.param, specs[0])
    t_end = time.perf_counter()
    original = display.to_uint8(setup.param.original) if setup.param.original is not None else None
    return BatchResult(
        images=image.contiguous().cpu(), display=shown, activation=act_final, prior=prior_final, trace=trace,
        precision=precision, device=str(dev), seconds=t_end - t_start, steps=specs[0].steps, steps_taken=steps_taken,
        original=original, timings={"optimize_s": t_loop - t_start, "finalize_s": t_end - t_loop},
        compiled=setup.compiled is not None and setup.compiled.in_use,
        compile_note=setup.compiled.reason if setup.compiled is not None else None,
    )  # fmt: skip


def _setup(
    net: nn.Module, specs: Sequence[RenderSpec], preprocessing: Preprocessing | None, precision: str,
    dev: torch.device, init: torch.Tensor | None, originals: torch.Tensor | None, channels_last: bool,
    compile: bool = False,
) -> _Setup:  # fmt: skip
    spec0 = specs[0]
    param = parameterizations.build(specs, DTYPES[precision], dev, init=init, originals=originals)
    if param.space == "input" and channels_last:
        param.params[0].data = param.params[0].data.contiguous(memory_format=torch.channels_last)
    if param.space == "pixels" and preprocessing is None:
        raise ValueError(f"param {spec0.param.name!r} makes pixels: the model's preprocessing is needed")
    to_input = preprocessing.to_input if param.space == "pixels" and preprocessing else (lambda t: t)
    seeds = [s.noise_seed() ^ TRANSFORM_SEED_SALT for s in specs]
    fill = 0.5 if param.space == "pixels" else 0.0
    # A vision transformer takes only some sides: the transforms sample their
    # view of the image at the nearest one (the view is the same, only denser).
    fit = side_rule(net)
    transforms = RandomTransforms(
        spec0.transforms, seeds, spec0.size, fill=fill, resize=spec0.resize, fit=fit, resize_axes=spec0.resize_axes
    )
    objective = Objective(specs, dev)
    probe = LayerProbe(net, objective.layers)

    def network_input(t: torch.Tensor) -> torch.Tensor:
        t = to_input(t)
        return t.contiguous(memory_format=torch.channels_last) if channels_last and param.space == "pixels" else t

    def forward(image: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return probe.all(network_input(transforms(image, step)))

    checked: CheckedCompiled | None = None
    if compile and objective.layers == [list(dict(net.named_modules()))[-1]]:
        # The target is the last module (the output): no hook needs to cut the
        # forward short, so the whole forward can be compiled.
        # Transforms draw from Python-side generators each step: they stay outside.
        target = objective.layers[0]
        mode = "reduce-overhead" if dev.type == "cuda" else "default"
        checked = CheckedCompiled(net, lambda: torch.compile(net, mode=mode, dynamic=False))
        whole = checked

        def forward(image: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
            return {target: whole(network_input(transforms(image, step)))}

    def measure(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return probe.all(network_input(image))

    def classify(pixels: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(net(network_input(pixels.to(device=dev, dtype=DTYPES[precision]))))

    return _Setup(specs, param, forward, measure, classify, objective, precision, checked)


def _optimize(s: _Setup, progress: ProgressFn | None, trace_every: int) -> tuple[list[TracePoint], list[int]]:
    spec0 = s.specs[0]
    optimizer = torch.optim.Adam(s.param.params, lr=spec0.lr)
    stop = EarlyStop(s.specs, s.param, s.classify, lambda: _display(s.param, spec0))
    # Trace points stay on the device and are copied once at the end: no host
    # synchronization inside the loop (on a GPU, a .cpu() per point would stall it).
    points: list[tuple[int, torch.Tensor]] = []
    steps = spec0.steps
    device = s.param.params[0].device
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        image = s.param.image()
        with _autocast(device, s.precision):
            acts = s.forward(image, step)
        parts = s.objective(image, acts)
        # Each image's loss depends on its own pixels only (diversity: its
        # group's), so the gradient of the sum is each image's own gradient.
        parts.total.sum().backward()  # type: ignore[no-untyped-call]
        if spec0.grad_clip is not None:
            clip_per_image(s.param.params, spec0.grad_clip)
        optimizer.step()
        s.param.project()
        stop.after_step(step)
        if trace_every and (step % trace_every == 0 or step == steps - 1):
            points.append((step, trace_row(parts)))
        if progress is not None:
            progress(step + 1, steps)
        if stop.all_stopped:
            break
    return trace_points(points), stop.steps_taken(step + 1)


def clip_per_image(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """Rescale each image's gradient (index 0 of every tensor) to at most
    `max_norm`, its norm taken over all the tensors of that image."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    squares = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0)
    factor = (max_norm / (squares.sqrt() + 1e-12)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))


def _display(param: Parameterized, spec: RenderSpec) -> torch.Tensor:
    image = param.image().detach()
    if param.space == "input":
        return display.lecture_uint8(image)
    if param.original is not None and spec.epsilon is not None:
        return display.bounded_uint8(image, param.original, spec.epsilon)
    return display.to_uint8(image)
