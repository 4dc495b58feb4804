"""Render quality, measured: how often networks other than the renderer
recognize a render as its class.

For a seeded random sample of ImageNet classes, renders each class's logit
on EfficientNet-Lite0 with each recipe (through `service.renderer`, the code
path of `dreamfarm render` and the workers), then classifies the saved 8-bit
PNGs with EfficientNet-Lite0, -Lite1 and -Lite2, each at its own input size
with its own preprocessing. Recipes are rendered in interleaved batches so
that a busy machine slows them alike, and the seconds per image-step of each
recipe are compared in the same run.

    python bench/quality.py --classes 32 --seed 1127 --write docs/benchmarks.md --json docs/results/quality_cpu.json
    python bench/quality.py --classes 16 --seed 20261127 --recipes lucid,maco   # a held-out sample
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from bench_report import machine, write_section
from service import recipes
from service.contract import RenderItem
from service.images import read_png
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.storage import LocalStore
from service.zoo import Registry, WeightsConfig

JUDGES = ["efficientnet_lite1", "efficientnet_lite2"]


def sample_classes(n: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(1000), n))


def render_all(args: argparse.Namespace, classes: list[int]) -> dict[str, dict[str, object]]:
    registry = Registry()
    device = torch.device(args.device)
    entry = registry.get("efficientnet_lite0")
    renderer = Renderer(entry, device=device, judges=load_judges(registry, JUDGES, WeightsConfig(), device))
    out: dict[str, dict[str, object]] = {}
    store = LocalStore(args.out)
    names = args.recipes.split(",")
    specs = {name: _specs(name, classes, args.steps) for name in names}
    for start in range(0, len(classes), args.batch):
        for name in names:  # interleaved: each recipe sees the same machine
            part = specs[name][start : start + args.batch]
            t = time.perf_counter()
            rendered = renderer.render(part)
            seconds = time.perf_counter() - t
            acc = out.setdefault(name, {"ranks": {}, "seconds": 0.0, "optimize_s": 0.0, "img_steps": 0})
            _collect(acc, rendered, part, seconds)
            for i, spec in enumerate(part):
                renderer.store_one(store, rendered, i, RenderItem(spec=spec, recipe=name))
            print(f"{name}: classes {start}-{start + len(part) - 1} in {seconds:.0f}s", flush=True)
    return out


def _specs(name: str, classes: list[int], steps: int | None) -> list[RenderSpec]:
    fields = recipes.recipe(name, {"steps": steps} if steps else None).model_dump()
    fields["precision"] = "float32"
    return [RenderSpec(model="efficientnet_lite0", layer="_fc", kind="logit", unit=u, **fields) for u in classes]


def _collect(acc: dict[str, object], rendered: object, part: list[RenderSpec], seconds: float) -> None:
    ranks = acc["ranks"]
    assert isinstance(ranks, dict)
    for i, spec in enumerate(part):
        for v in rendered.verdicts[i]:  # type: ignore[attr-defined]
            ranks.setdefault(v.model, {})[spec.unit] = v.target_rank
    acc["seconds"] = float(acc["seconds"]) + seconds  # type: ignore[arg-type]
    acc["optimize_s"] = float(acc["optimize_s"]) + rendered.result.timings["optimize_s"]  # type: ignore[arg-type, attr-defined]
    acc["img_steps"] = int(acc["img_steps"]) + len(part) * part[0].steps  # type: ignore[call-overload]


def report(args: argparse.Namespace, classes: list[int], results: dict[str, dict[str, object]]) -> tuple[str, dict]:
    models = ["efficientnet_lite0", *JUDGES]
    base = results.get("lecture")
    base_rate = float(base["optimize_s"]) / int(base["img_steps"]) if base else None  # type: ignore[call-overload]
    rows, data = (
        [],
        {"classes": classes, "seed": args.seed, "device": machine(torch.device(args.device)), "recipes": {}},
    )
    n = len(classes)
    for name, r in results.items():
        ranks = r["ranks"]
        assert isinstance(ranks, dict)
        per_step = float(r["optimize_s"]) / int(r["img_steps"])  # type: ignore[call-overload]
        cells, entry = [], {"seconds_per_render": round(float(r["seconds"]) / n, 2), "per_image_step_ratio": None}
        for m in models:
            got = list(ranks[m].values())
            top1, top5 = sum(x == 1 for x in got), sum(x <= 5 for x in got)
            cells.append(f"{top1}/{n} / {top5}/{n}")
            entry[m] = {"top1": top1, "top5": top5, "n": n}
        ratio = per_step / base_rate if base_rate else None
        entry["per_image_step_ratio"] = round(ratio, 2) if ratio else None
        data["recipes"][name] = entry  # type: ignore[index]
        ratio_s = f"{ratio:.2f}×" if ratio else "—"
        rows.append(f"| {name} | {' | '.join(cells)} | {entry['seconds_per_render']:.1f} | {ratio_s} |")
    md = "\n".join([
        f"### Render quality: recognized by other networks — {data['device']}",
        "",
        f"{n} ImageNet classes drawn with seed {args.seed} ({', '.join(str(c) for c in classes[:8])}, …), each "
        f"class logit of EfficientNet-Lite0 rendered once per recipe at 224×224 (float32), the saved PNGs "
        "classified by Lite0/Lite1/Lite2 at their own input sizes. Cells: top-1 / top-5. Command: "
        f"`python bench/quality.py --classes {n} --seed {args.seed} --recipes {args.recipes}`",
        "",
        "| recipe | Lite0 (renderer) | Lite1 | Lite2 | s per render (judged) | optimize time per img-step vs lecture |",
        "|---|---|---|---|---:|---:|",
        *rows,
    ]) + "\n"  # fmt: skip
    return md, data


def contact_sheet(out: Path, classes: list[int], names: list[str], dest: Path, count: int = 5) -> None:
    """A few classes (columns) under each recipe (rows), labelled."""
    store = LocalStore(out)
    labels = Registry().get("efficientnet_lite0").classes
    tile, top, left = 150, 18, 70
    sheet = Image.new("RGB", (left + count * tile, top + len(names) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for c, unit in enumerate(classes[:count]):
        draw.text((left + c * tile + 4, 3), labels[unit][:24], fill="black")
    for r, name in enumerate(names):
        draw.text((4, top + r * tile + tile // 2 - 6), name, fill="black")
        for c, unit in enumerate(classes[:count]):
            for key in store.list(f"renders/efficientnet_lite0/_fc/{unit}/"):
                if key.endswith(".json") and json.loads(store.get(key)).get("recipe") == name:
                    img = read_png(store.get(key[:-5] + ".png")).resize((tile, tile), Image.Resampling.LANCZOS)
                    sheet.paste(img, (left + c * tile, top + r * tile))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=32)
    p.add_argument("--seed", type=int, default=1127)
    p.add_argument("--recipes", default="lecture,lucid,maco")
    p.add_argument("--steps", type=int, default=None, help="override every recipe's steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("out/quality"))
    p.add_argument("--write", type=Path, default=None, help="update this benchmarks.md section")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (classes × recipes) here")
    args = p.parse_args()
    classes = sample_classes(args.classes, args.seed)
    results = render_all(args, classes)
    md, data = report(args, classes, results)
    print(md)
    if args.write:
        write_section(args.write, f"quality-{args.seed}", md)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if args.sheet:
        contact_sheet(args.out, classes, args.recipes.split(","), args.sheet)


if __name__ == "__main__":
    main()
