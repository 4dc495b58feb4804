"""Recipe trials on the tuning classes: a preset with some fields changed,
rendered and judged the way `bench/peers.py` judges (Lite1/Lite2 on the
saved 8-bit pixels, top-1 and mean p(true)), one row per variant.

The classes are `bench.quality.sample_classes(16, 4242)` (docs/recipes.md's
tuning sample; none of the held-out seeds' 20261127 and 20261203): `--pick
even` / `odd` screens on half of them, `all` confirms. Never tune on the
held-out classes of bench/peers.py.

    python bench/recipe_trials.py --base vivid --variant base='{}' --variant lr018='{"lr": 0.018}'
    python bench/recipe_trials.py --base maco --pick all --variant resize='{"resize": [0.5, 1.2]}'
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
from service.image_stats import looks
from service.images import png_bytes
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.zoo import Registry, WeightsConfig

TUNING_SEED = 4242
MODEL = "efficientnet_lite0"


def classes_for(pick: str) -> list[int]:
    every = sample_classes(16, TUNING_SEED)
    return {"even": every[0::2], "odd": every[1::2], "all": every}[pick]


def trial(renderer: Renderer, judges: list[Any], base: str, fields: dict[str, Any], classes: list[int],
          args: argparse.Namespace, folder: Path) -> dict[str, Any]:  # fmt: skip
    recipe = recipes.recipe(base, {**fields, "steps": args.steps, "precision": "float32"})
    specs = [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, seed=args.seed, **recipe.model_dump())
             for u in classes]  # fmt: skip
    t = time.perf_counter()
    shown = []
    for start in range(0, len(specs), args.batch):
        shown.append(renderer.render(specs[start : start + args.batch]).result.display)
    seconds = time.perf_counter() - t
    pixels = torch.cat(shown)
    folder.mkdir(parents=True, exist_ok=True)
    for unit, rgb in zip(classes, pixels):
        (folder / f"{unit}.png").write_bytes(png_bytes(rgb))
    row: dict[str, Any] = {"fields": fields, "img_steps_per_s": len(specs) * args.steps / seconds,
                           **looks(pixels.numpy())}  # fmt: skip
    for j in judges:
        probs = quality.probabilities(j.net, j.entry, pixels)
        ranks = [int((p > p[u]).sum()) + 1 for u, p in zip(classes, probs)]
        ps = [float(p[u]) for u, p in zip(classes, probs)]
        row[j.entry.name] = {"top1": sum(r == 1 for r in ranks), "mean_p": float(np.mean(ps)),
                             "p": dict(zip(map(str, classes), [round(p, 3) for p in ps]))}  # fmt: skip
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="vivid", help="the preset the variants change")
    p.add_argument("--variant", action="append", required=True, help="NAME=JSON of fields to override")
    p.add_argument("--pick", choices=["even", "odd", "all"], default="even")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--seed", type=int, default=TUNING_SEED)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("out/trials"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry()
    renderer = Renderer(registry.get(MODEL), device=torch.device("cpu"))
    judges = load_judges(registry, JUDGES, WeightsConfig(), torch.device("cpu"))
    classes = classes_for(args.pick)
    for item in args.variant:
        name, _, text = item.partition("=")
        row = trial(renderer, judges, args.base, json.loads(text or "{}"), classes, args, args.out / args.base / name)
        cells = " | ".join(f"{row[j]['top1']}/{len(classes)} {row[j]['mean_p']:.3f}" for j in JUDGES)
        looks = f"{row['colourfulness']:.0f} | {row['rms_contrast']:.3f}"
        print(f"| {args.base}:{name} | {args.pick} | {cells} | {looks} | {row['img_steps_per_s']:.1f} |", flush=True)
        with (args.out / "trials.jsonl").open("a") as f:
            f.write(json.dumps({"base": args.base, "name": name, "pick": args.pick, **row}) + "\n")


if __name__ == "__main__":
    main()
