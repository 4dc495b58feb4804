"""The lecture's loop, literally, as a whole process: build the network, then
render each unit alone (batch 1, weights requiring grad, float32, the literal
prior). The yardstick of bench/first_render.py.

    python bench/literal_loop.py --model vgg16 --layer logits --units 0 15 --steps 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from service import engine
from service.reference import lecture_render
from service.spec import RenderSpec
from service.zoo import Architecture, Registry, load_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg16")
    p.add_argument("--layer", default="logits")
    p.add_argument("--units", type=int, nargs=2, default=(0, 15), metavar=("FIRST", "LAST"))
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    t0 = time.perf_counter()
    entry = Registry().get(args.model)
    layer = Architecture(entry).layer(args.layer)
    net = load_network(entry, random_weights=True)
    net.requires_grad_(True)  # as in the lecture
    captured: dict[str, torch.Tensor] = {}
    dict(net.named_modules())[layer.path].register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out))

    def value(u: int):  # type: ignore[no-untyped-def]
        if layer.path == Architecture(entry).layer("logits").path:
            return lambda x: net(x)[0, u]

        def channel(x: torch.Tensor) -> torch.Tensor:
            net(x)
            return captured["a"][0, u].sum()

        return channel

    first, last = args.units
    for u in range(first, last + 1):
        spec = RenderSpec(model=args.model, layer=layer.path, kind="logit", unit=u, size=entry.input_size)
        lecture_render(value(u), engine.initial_noise([spec]), steps=args.steps)
    print(f"{last - first + 1} units x {args.steps} steps in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
