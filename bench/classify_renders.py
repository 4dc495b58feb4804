"""Does the bundled network see its own classes in its renders?

Renders ImageNet classes on the pretrained EfficientNet-Lite0 at the lecture's
settings (edge-energy prior, Adam lr 0.1, 250 steps, 224×224) and checks that
each render — the float image and the 8-bit PNG decoded like a photo — is
classified top-1 as the class it was rendered for.

    python bench/classify_renders.py [--device cuda] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench_report import machine, write_section
from service import engine
from service.spec import RenderSpec
from service.zoo import Architecture, Registry, load_network

CLASSES = ["box turtle", "whiptail", "African chameleon", "wolf spider", "king crab", "Samoyed", "hourglass",
           "paper towel", "ping-pong ball", "steel arch bridge", "sunglass", "geyser"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--write", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    entry = Registry().get("efficientnet_lite0")
    arch = Architecture(entry)
    logits = arch.layer("logits")
    units = [arch.unit(logits, "logit", c) for c in CLASSES]
    specs = [RenderSpec(model=entry.name, layer=logits.path, kind="logit", unit=u, steps=args.steps) for u in units]
    net = load_network(entry, device=device).to(memory_format=torch.channels_last)
    t = time.perf_counter()
    res = engine.render(net, logits.path, specs, precision="float32", device=device, channels_last=True)
    seconds = time.perf_counter() - t
    with torch.no_grad():
        top = net(res.images.to(device)).argmax(1).tolist()
        pixels = res.display.permute(0, 3, 1, 2).float().to(device) / 255
        top_png = net(entry.preprocessing.to_input(pixels)).argmax(1).tolist()
    rows = []
    for cls, u, a, b, act in zip(CLASSES, units, top, top_png, res.activation.tolist()):
        rows.append(f"| {cls} ({u}) | {entry.classes[a]} | {entry.classes[b]} | {act:.1f} |")
    ok_f, ok_p = sum(a == u for a, u in zip(top, units)), sum(b == u for b, u in zip(top_png, units))
    md = "\n".join([
        f"### Renders classified by the network that made them — {machine(device)}",
        "",
        f"EfficientNet-Lite0 (bundled, pretrained), lecture recipe ({args.steps} steps, 224×224, edge energy, "
        f"float32), {len(units)} classes in one batch in {seconds:.0f} s. Top-1 of the float render: "
        f"**{ok_f}/{len(units)}**; of the 8-bit PNG decoded and preprocessed like a photo: **{ok_p}/{len(units)}**. "
        f"Command: `python bench/classify_renders.py --device {args.device}`",
        "",
        "| rendered class (unit) | top-1 of render | top-1 of PNG | final logit |",
        "|---|---|---|---:|",
        *rows,
    ]) + "\n"  # fmt: skip
    print(md)
    if args.write:
        write_section(args.write, f"classify-{device.type}", md)


if __name__ == "__main__":
    main()
