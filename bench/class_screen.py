"""Screen recipe variants on a few hard tuning classes, several render seeds
each: where `bench/recipe_trials.py` asks whether a change helps the 16
tuning classes, this asks whether it rescues the ones a recipe misses, judged
the same way (Lite1/Lite2 p(true) on the displayed pixels). One line per
variant: each draw's p(true) and their mean.

    python bench/class_screen.py --classes 527 --variant base='{}' \\
        --variant flat1='{"param": {"name": "fourier", "decay": 1.5, "decorrelate": true, "flat_below": 1.0}}'

Only tuning classes (`bench.quality.sample_classes(16, 4242)`): never screen
the held-out classes of bench/peers.py.
"""

from __future__ import annotations

import argparse
import json
import time
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
    p.add_argument("--variant", action="append", required=True, help="NAME=JSON of fields to override")
    p.add_argument("--base", default="vivid")
    p.add_argument("--seeds", default="1,2,3,4", help="render seeds, one draw of each class per seed")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    units = [int(u) for u in args.classes.split(",")]
    if stray := set(units) - set(sample_classes(16, TUNING_SEED)):
        raise SystemExit(f"not tuning classes: {sorted(stray)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    registry = Registry()
    renderer = Renderer(registry.get(MODEL), device=torch.device("cpu"))
    judges = load_judges(registry, JUDGES, WeightsConfig(), torch.device("cpu"))
    for item in args.variant:
        name, _, text = item.partition("=")
        recipe = recipes.recipe(args.base, {**json.loads(text or "{}"), "steps": args.steps, "precision": "float32"})
        specs = [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, seed=s, **recipe.model_dump())
                 for u in units for s in seeds]  # fmt: skip
        t = time.perf_counter()
        pixels = torch.cat([renderer.render(specs[i : i + 8]).result.display for i in range(0, len(specs), 8)])
        row: dict[str, Any] = {}
        for j in judges:
            probs = quality.probabilities(j.net, j.entry, pixels)
            ps = [round(float(pr[spec.unit]), 2) for spec, pr in zip(specs, probs)]
            row[j.entry.name] = f"{' '.join(f'{x:.2f}' for x in ps)} (mean {np.mean(ps):.3f})"
        print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in row.items()) + f"; {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main()
