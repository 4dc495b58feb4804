"""Screen recipe variants on a few hard tuning classes, several render seeds
each: where `bench/recipe_trials.py` asks whether a change helps the 16
tuning classes, this asks whether it rescues the ones a recipe misses, judged
the same way (Lite1/Lite2 p(true) on the displayed pixels). One line per
variant: each draw's p(true) and their mean.

    python bench/class_screen.py --classes 527 --variant base='{}' \\
        --variant flat1='{"param": {"name": "fourier", "decay": 1.5, "decorrelate": true, "flat_below": 1.0}}'

`--torch-dreams` adds a row for torch-dreams at its defaults (bench/peers.py's
call, seeded as there: `seed * 1000 + class`), so a class is screened only
where the peer does draw it; `--classes all` takes the 16 tuning classes.

    python bench/class_screen.py --classes all --seeds 4242,7,11 --torch-dreams

Only tuning classes (`bench.quality.sample_classes(16, 4242)`): never screen
the held-out classes of bench/peers.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality import JUDGES, sample_classes

from service import quality, recipes
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.zoo import Registry, WeightsConfig

MODEL = "efficientnet_lite0"
TUNING_SEED = 4242


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", required=True, help="comma-separated tuning classes, e.g. 527")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON of fields to override")
    p.add_argument("--torch-dreams", action="store_true", help="also torch-dreams at its defaults, same draws")
    p.add_argument("--out", type=Path, default=Path("out/class_screen"), help="torch-dreams' PNGs (reused)")
    p.add_argument("--base", default="vivid")
    p.add_argument("--seeds", default="1,2,3,4", help="render seeds, one draw of each class per seed")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.variant and not args.torch_dreams:
        raise SystemExit("nothing to screen: give --variant or --torch-dreams")
    tuning = sample_classes(16, TUNING_SEED)
    units = tuning if args.classes == "all" else [int(u) for u in args.classes.split(",")]
    if stray := set(units) - set(tuning):
        raise SystemExit(f"not tuning classes: {sorted(stray)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    registry = Registry()
    judges = load_judges(registry, JUDGES, WeightsConfig(), torch.device("cpu"))
    draws = [(u, s) for u in units for s in seeds]
    if args.torch_dreams:
        t = time.perf_counter()
        print(f"torch-dreams: {summary(torch_dreams(registry, draws, args), draws, judges)}; "
              f"{time.perf_counter() - t:.0f}s", flush=True)  # fmt: skip
    renderer = Renderer(registry.get(MODEL), device=torch.device("cpu")) if args.variant else None
    for item in args.variant:
        assert renderer is not None
        name, _, text = item.partition("=")
        recipe = recipes.recipe(args.base, {**json.loads(text or "{}"), "steps": args.steps, "precision": "float32"})
        specs = [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, seed=s, **recipe.model_dump())
                 for u, s in draws]  # fmt: skip
        t = time.perf_counter()
        pixels = torch.cat([renderer.render(specs[i : i + 8]).result.display for i in range(0, len(specs), 8)])
        print(f"{name}: {summary(pixels, draws, judges)}; {time.perf_counter() - t:.0f}s", flush=True)


def summary(pixels: torch.Tensor, draws: list[tuple[int, int]], judges: list[Any]) -> str:
    """Each judge's p(true) of every draw, and their mean."""
    row: dict[str, str] = {}
    for j in judges:
        probs = quality.probabilities(j.net, j.entry, pixels)
        ps = [round(float(pr[unit]), 2) for (unit, _), pr in zip(draws, probs)]
        row[j.entry.name] = f"{' '.join(f'{x:.2f}' for x in ps)} (mean {np.mean(ps):.3f})"
    return "; ".join(f"{k} {v}" for k, v in row.items())


def torch_dreams(registry: Registry, draws: list[tuple[int, int]], args: argparse.Namespace) -> torch.Tensor:
    """torch-dreams' PNGs of `draws` (rendered as bench/peers.py renders them,
    kept under --out), as (N, H, W, 3) uint8."""
    import peers  # the peers' folder on sys.path, their display-only imports stubbed

    from service.images import read_png
    from service.zoo import load_network

    peers.install_peers()
    peers.use_peers()
    entry = registry.get(MODEL)
    model = peers.PixelsToLogits(load_network(entry, device="cpu"), entry.preprocessing)
    size = recipes.recipe(args.base).size  # the side the variants render at
    shown = []
    for unit, seed in draws:
        png = args.out / "torch-dreams" / f"{unit}_{seed}_{args.steps}_{size}.png"
        if not png.exists():
            peers.seed_all(seed * 1000 + unit)
            peers.run_torch_dreams(model, unit, args.steps, size, png)
        shown.append(torch.from_numpy(np.asarray(read_png(png.read_bytes()), dtype=np.uint8).copy()))
    return torch.stack(shown)


if __name__ == "__main__":
    main()
