"""Does `dreamfarm tune` pay? A search on EfficientNet-Lite0's class logits
(a few tuning classes, Lite1 and Lite2 as judges), then the tuned recipe and
the recipe it started from rendered on held-out classes, their saved PNGs
classified by Lite1 and Lite2 (as bench/quality.py does), in one run.

    python bench/tune_check.py --count 4 --budget 8 --search-steps 128 --classes 16 --json docs/results/tune_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from quality import JUDGES, sample_classes

from bench_report import machine, write_section
from service import quality as verdicts
from service import recipes, tuning
from service.architectures import Architectures
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.tune_run import TuneRequest, run
from service.zoo import WeightsConfig

MODEL = "efficientnet_lite0"
HELD_OUT_SEED = 20261127  # the held-out sample seed (bench/quality.py's)


def held_out(renderer: Renderer, fields: dict[str, Any], classes: list[int], batch: int) -> dict[str, Any]:
    """Top-1 and mean p(true) of each judge on the saved PNGs, and image-steps/s."""
    target = tuning.Target(model=MODEL, layer="_fc", kind="logit", units=tuple(classes), size=224)
    specs: list[RenderSpec] = tuning.specs_for(target, {**fields, "precision": "float32"})
    out: dict[str, Any] = {j.entry.name: {"top1": 0, "p_true": []} for j in renderer.judges}
    t0 = time.perf_counter()
    for start in range(0, len(specs), batch):
        part = specs[start : start + batch]
        rendered = renderer.render(part)
        idx = torch.tensor([s.unit for s in part])
        for j in renderer.judges:
            probs = verdicts.probabilities(j.net, j.entry, rendered.result.display)
            p_true = probs[torch.arange(len(part)), idx]
            out[j.entry.name]["top1"] += int((probs.argmax(1) == idx).sum())
            out[j.entry.name]["p_true"] += [float(p) for p in p_true]
    seconds = time.perf_counter() - t0
    for v in out.values():
        v["mean_p_true"] = round(sum(v["p_true"]) / len(v["p_true"]), 3)
        del v["p_true"]
    out["image_steps_per_s"] = round(len(specs) * specs[0].steps / seconds, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, help="the preset the search starts from (default: the default)")
    p.add_argument("--count", type=int, default=4, help="tuning classes")
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--search-steps", type=int, default=128)
    p.add_argument("--tune-seed", type=int, default=5)
    p.add_argument("--classes", type=int, default=16, help="held-out classes")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write", type=Path, default=None, help="update this benchmarks.md section")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    archs = Architectures()
    arch = archs.get(MODEL)
    judges = load_judges(archs.registry, JUDGES, WeightsConfig(), device)
    renderer = Renderer(arch.entry, device=device, judges=judges)
    test = set(sample_classes(args.classes, HELD_OUT_SEED))
    request = TuneRequest(model=MODEL, recipe=args.recipe, budget=args.budget, steps=args.search_steps,
                          seed=args.tune_seed, count=args.count)  # fmt: skip
    tuning_units = tuning.sample_units(args.count, 1000, args.tune_seed)
    assert not test & set(tuning_units), "tuning and held-out classes overlap: pick another --tune-seed"

    t0 = time.perf_counter()
    record = run(request, arch, lambda _spec: renderer,
                 lambda d, t, b: print(f"candidate {d}/{t}: best {b:.3f}", flush=True))  # fmt: skip
    search_s = time.perf_counter() - t0
    print(f"search: {search_s:.0f}s, changes {record.changes() or 'none'}", flush=True)
    base = tuning.recipe_fields(recipes.recipe(record.base))
    results = {"base": held_out(renderer, base, sorted(test), args.batch),
               "tuned": held_out(renderer, record.fields, sorted(test), args.batch)}  # fmt: skip
    data = {"device": machine(device), "base": record.base, "changes": record.changes(), "score": record.score,
            "base_score": record.base_score, "tuning_classes": list(tuning_units), "held_out_seed": HELD_OUT_SEED,
            "search_seconds": round(search_s), "request": request.model_dump(mode="json"),
            "held_out": results}  # fmt: skip
    print(json.dumps(data, indent=1))
    rows = [f"| {name} ({record.base if name == 'base' else 'tuned'}) | "
            + " | ".join(f"{r[j]['top1']}/{args.classes}, {r[j]['mean_p_true']:.2f}" for j in JUDGES)
            + f" | {r['image_steps_per_s']} |" for name, r in results.items()]  # fmt: skip
    md = "\n".join([
        f"### `dreamfarm tune` on Lite0 — {data['device']}",
        "",
        f"Search: {args.budget} candidates from `{record.base}` on {args.count} tuning classes "
        f"({', '.join(map(str, tuning_units))}), {args.search_steps} steps each, scored by Lite1 and Lite2's mean "
        f"p(true); {search_s / 60:.0f} min. Kept changes: {', '.join(record.changes()) or 'none'}. Held out: "
        f"{args.classes} classes (seed {HELD_OUT_SEED}), 256 steps. Cells: top-1, mean p(true). Command: "
        f"`python bench/tune_check.py --recipe {record.base} --count {args.count} --budget {args.budget} "
        f"--search-steps {args.search_steps} --classes {args.classes}`",
        "",
        "| recipe | Lite1 | Lite2 | image-steps/s |",
        "|---|---|---|---:|",
        *rows,
    ]) + "\n"  # fmt: skip
    print(md)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if args.write:
        write_section(args.write, "tune-check", md)


if __name__ == "__main__":
    main()
