"""Engine vs the lecture's loop, same machine, same process, same work.

For each case it times the lecture's loop transcribed literally (one unit
after another, batch 1, weights requiring grad, float32, the literal prior)
and the engine at its best settings for the device (batched, frozen weights,
truncated forward, channels-last, fast prior, bf16 where the quality guard
passes), and prints image-steps per second for both and their ratio.

    python bench/engine_speed.py                 # CPU (or the GPU if visible)
    python bench/engine_speed.py --device cuda --batch 64 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench_report import machine, write_section
from service import engine, precision, recipes
from service.reference import lecture_render
from service.spec import RenderSpec
from service.zoo import Registry, load_network


@dataclass
class CaseResult:
    case: str
    literal_img_steps_per_s: float
    engine_img_steps_per_s: float
    ratio: float
    batch: int
    precision: str
    guard: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    name: str, model: str, layer_alias: str, kind: str, units: list[int], *, device: torch.device, batch: int,
    literal_units: int, literal_steps: int, engine_steps: int, random_weights: bool, force_precision: str | None,
    recipe: str = "lecture",
) -> CaseResult:  # fmt: skip
    registry = Registry()
    entry = registry.get(model)
    from service.zoo import Architecture

    layer = Architecture(entry).layer(layer_alias)
    size = entry.input_size
    fields = recipes.recipe(recipe, {"steps": engine_steps, "size": size}).model_dump()
    specs = [
        RenderSpec(model=model, layer=layer.path, kind=kind, unit=u, random_weights=random_weights, seed=i,
                   **fields)  # type: ignore[arg-type]
        for i, u in enumerate((units * ((batch // len(units)) + 1))[:batch])
    ]  # fmt: skip

    # --- the lecture's loop, literally --------------------------------------
    lecture_net = load_network(entry, random_weights=random_weights, device=device)
    lecture_net.requires_grad_(True)
    # The lecture reads a conv layer's activation through a forward hook while
    # the whole network runs (no truncation: that is one of the engine's gains).
    captured: dict[str, torch.Tensor] = {}
    dict(lecture_net.named_modules())[layer.path].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("act", out)
    )

    def channel_value(x: torch.Tensor, u: int) -> torch.Tensor:
        lecture_net(x)
        return captured["act"][0, u].sum()

    def unit_value(u: int):  # type: ignore[no-untyped-def]
        if kind == "channel":
            return lambda x: channel_value(x, u)
        return lambda x: lecture_net(x)[0, u]

    x0 = engine.initial_noise(specs[:1]).to(device)
    lecture_render(unit_value(units[0]), x0, steps=1)  # warm-up
    _sync(device)
    t = time.perf_counter()
    for u in units[:literal_units]:
        lecture_render(unit_value(u), x0, steps=literal_steps)
    _sync(device)
    literal = literal_units * literal_steps / (time.perf_counter() - t)

    # --- the engine ---------------------------------------------------------
    net = load_network(entry, random_weights=random_weights, device=device).to(memory_format=torch.channels_last)
    guard_note = "not run"
    if force_precision:
        prec = force_precision
    elif precision.bfloat16_is_fast(device):
        probe_specs = [s.model_copy(update={"steps": 48, "size": min(size, 128)}) for s in specs[:4]]
        report = precision.guard_bfloat16(net, layer.path, probe_specs, device=device, pretrained=not random_weights,
                                          channels_last=True, preprocessing=entry.preprocessing)  # fmt: skip
        prec = "bfloat16" if report.accepted else "float32"
        guard_note = ("passed" if report.accepted else "failed") + f" ({report.mean_ratio:.0%} of f32 gain)"
    else:
        prec = "float32"
        guard_note = "device has no fast bf16"
    warm = [s.model_copy(update={"steps": 2}) for s in specs]
    kw = {"precision": prec, "device": device, "channels_last": True, "preprocessing": entry.preprocessing}
    engine.render(net, layer.path, warm, **kw)  # type: ignore[arg-type]
    res = engine.render(net, layer.path, specs, trace_every=0, **kw)  # type: ignore[arg-type]
    eng = len(specs) * engine_steps / res.timings["optimize_s"]
    return CaseResult(name, literal, eng, eng / literal, len(specs), prec, guard_note)


CASES = {
    "vgg16-logits": ("vgg16", "logits", "logit", [700, 258, 118, 327], True, "lecture"),
    "vgg16-conv4": ("vgg16", "conv4", "channel", [0, 1, 2, 3], True, "lecture"),
    "efficientnet_lite0-logits": ("efficientnet_lite0", "logits", "logit", [258, 700, 121, 604], False, "lecture"),
    # The lucid recipe's engine against the same literal lecture loop (the yardstick).
    "efficientnet_lite0-logits-lucid": ("efficientnet_lite0", "logits", "logit", [258, 700, 121, 604], False, "lucid"),
}


def to_markdown(results: list[CaseResult], device: torch.device, cmd: str) -> str:
    lines = [
        f"### Engine vs literal lecture loop — {machine(device)}",
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}; measured "
        f"{time.strftime('%Y-%m-%d')} with `{cmd}`",
        "",
        "| case | literal img-steps/s | engine img-steps/s | speed-up | engine batch | precision | bf16 guard |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.literal_img_steps_per_s:.2f} | {r.engine_img_steps_per_s:.2f} | **{r.ratio:.1f}×** "
            f"| {r.batch} | {r.precision} | {r.guard} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="engine batch (default 16 on CPU, 64 on GPU)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--literal-units", type=int, default=2)
    p.add_argument("--literal-steps", type=int, default=None)
    p.add_argument("--engine-steps", type=int, default=None)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=None, help="skip the guard")
    p.add_argument("--write", type=Path, default=None, help="update this markdown file's section")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    batch = args.batch or (64 if gpu else 16)
    lit_steps = args.literal_steps or (20 if gpu else 3)
    eng_steps = args.engine_steps or (20 if gpu else 4)
    results = []
    for case in args.cases:
        model, layer, kind, units, rnd, recipe = CASES[case]
        r = run_case(case, model, layer, kind, units, device=device, batch=batch, literal_units=args.literal_units,
                     literal_steps=lit_steps, engine_steps=eng_steps, random_weights=rnd,
                     force_precision=args.precision, recipe=recipe)  # fmt: skip
        print(json.dumps(asdict(r)), flush=True)
        results.append(r)
    cmd = "python bench/engine_speed.py --device " + args.device + (f" --batch {args.batch}" if args.batch else "")
    md = to_markdown(results, device, cmd)
    print(md)
    if args.write:
        write_section(args.write, f"engine-{device.type}", md)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
