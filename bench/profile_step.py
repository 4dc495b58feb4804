"""Where a step's time goes: the torch profiler over a few steps of the
engine, the top operators by device (or CPU) time as a markdown table.

    python bench/profile_step.py --model efficientnet_lite0 --batch 64 --out $OUT/profile_lite0.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_report import machine
from service import engine, recipes
from service.spec import RenderSpec
from service.zoo import Architecture, Registry, load_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--layer", default="logits")
    p.add_argument("--recipe", default="lecture")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    entry = Registry().get(args.model)
    layer = Architecture(entry).layer(args.layer)
    net = load_network(entry, random_weights=args.random_weights, device=device).to(memory_format=torch.channels_last)
    fields = {**recipes.recipe(args.recipe).model_dump(), "steps": args.steps, "size": entry.input_size}
    specs = [RenderSpec(model=args.model, layer=layer.path, kind=layer.default_kind, unit=u % layer.units,
                        random_weights=args.random_weights, **fields) for u in range(args.batch)]  # fmt: skip
    kw = {"precision": args.precision, "device": device, "channels_last": True, "preprocessing": entry.preprocessing}
    engine.render(net, layer.path, specs, trace_every=0, **kw)  # type: ignore[arg-type]  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        engine.render(net, layer.path, specs, trace_every=0, **kw)  # type: ignore[arg-type]
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60)
    md = (f"### Profile of {args.steps} steps: {args.model} {layer.name}, {args.recipe}, batch {args.batch}, "
          f"{args.precision} — {machine(device)}\n\n```\n{table}\n```\n")  # fmt: skip
    print(md)
    if args.out:
        args.out.write_text(md)


if __name__ == "__main__":
    main()
