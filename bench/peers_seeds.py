"""The same held-out classes drawn with several render seeds: one
`bench/peers.py` figure per renderer is one draw per class, and a single hard
class (one image at p 0.02 where another seed's is at 0.9) moves a 16-class
mean p(true) by 0.05, more than the gaps between renderers. This reads runs of
`bench/peers.py` that differ only in `--render-seed` (their JSONs; a run may
hold some of the renderers) and reports, per renderer, each seed's transfer and
the mean over seeds, with the spread of the per-seed means.

    python bench/peers.py --classes 16 --seed 20261203 --render-seed 1 --renderers torch-dreams \\
        --threads 1 --out out/peers-16-r1 --json out/peers16_r1_td.json
    python bench/peers_seeds.py docs/results/peers_cpu16.json out/peers16_r1_*.json \\
        --json docs/results/peers_cpu16_seeds.json --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench_report import write_section

JUDGES = ("efficientnet_lite1", "efficientnet_lite2")


def collect(paths: list[Path]) -> dict[str, Any]:
    """{renderer: {render seed: its judged figures}}, checking every run drew the same classes."""
    first: dict[str, Any] | None = None
    table: dict[str, dict[int, dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if first is None:
            first = data
        elif (data["classes"], data["steps"], data["size"]) != (first["classes"], first["steps"], first["size"]):
            raise SystemExit(f"{path}: other classes, steps or size than {paths[0]}")
        seed = int(data.get("render_seed", data["seed"]))
        for name, r in data["renderers"].items():
            if "error" in r:
                continue
            if seed in table.get(name, {}):
                raise SystemExit(f"{path}: {name} with render seed {seed} twice")
            labels[name] = f"{name} {r['version']}" if r["kind"] == "peer" else f"dreamfarm `{r['recipe']}`"
            j = r["judged"]
            table.setdefault(name, {})[seed] = {
                m: {"top1": j[m]["top1"], "n": j[m]["n"], "mean_p": j[m]["mean_p"],
                    "p": {u: c["p"] for u, c in j[m]["per_class"].items()}}
                for m in JUDGES
            }  # fmt: skip
    if first is None:
        raise SystemExit("no runs given")
    return {"seed": first["seed"], "classes": first["classes"], "class_names": first["class_names"],
            "steps": first["steps"], "size": first["size"], "device": first["device"], "labels": labels,
            "renderers": {n: {str(s): v for s, v in sorted(by.items())} for n, by in table.items()}}  # fmt: skip


def report(data: dict[str, Any]) -> str:
    seeds = sorted({int(s) for by in data["renderers"].values() for s in by})
    rows = []
    for name, by in data["renderers"].items():
        cells = []
        for m in JUDGES:
            per = [by[str(s)][m] for s in seeds if str(s) in by]
            top1 = " + ".join(str(x["top1"]) for x in per)
            means = [x["mean_p"] for x in per]
            spread = f" (seeds {min(means):.2f}–{max(means):.2f})" if len(means) > 1 else ""
            cells.append(f"{top1} of {sum(x['n'] for x in per)} | **{statistics.mean(means):.3f}**{spread}")
        rows.append(f"| {data['labels'][name]} | {len(by)} | {' | '.join(cells)} |")
    worst = []
    for name, by in data["renderers"].items():
        ps = [(p, u, s) for s, v in by.items() for u, p in v["efficientnet_lite2"]["p"].items()]
        p, u, s = min(ps)
        worst.append(f"{data['labels'][name]} {p:.2f} (class {u}, seed {s})")
    return "\n".join([
        f"### The held-out classes over several render seeds — {data['device']}",
        "",
        f"The 16 classes of `sample_classes({len(data['classes'])}, {data['seed']})`, {data['steps']} steps at "
        f"{data['size']} px, each renderer drawing every class once per render seed ({', '.join(map(str, seeds))}; "
        f"seed {data['seed']} is the run above), judged as above. Top-1 per seed, summed; mean p(true) over "
        "all draws, with the lowest and highest seed's mean. Command: `python bench/peers_seeds.py` on the runs' "
        "JSONs (its docstring has the runs' commands).",
        "",
        "| renderer | seeds | Lite1 top-1 | Lite1 mean p(true) | Lite2 top-1 | Lite2 mean p(true) |",
        "|---|---:|---|---|---|---|",
        *rows,
        "",
        "Lowest Lite2 p(true) of any draw: " + "; ".join(worst) + ".",
        "",
        *per_class(data),
    ])  # fmt: skip


def per_class(data: dict[str, Any]) -> list[str]:
    """Lite2's mean p(true) of each class over the seeds each renderer drew:
    where a gap between renderers comes from."""
    names = list(data["renderers"])
    head = " | ".join(f"{data['labels'][n]} ({len(data['renderers'][n])} seeds)" for n in names)
    rows = []
    for unit, label in zip(data["classes"], data["class_names"]):
        means = [statistics.mean(v["efficientnet_lite2"]["p"][str(unit)] for v in data["renderers"][n].values())
                 for n in names]  # fmt: skip
        rows.append(f"| {unit} {label} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    return ["Lite2 mean p(true) per class, over the seeds each renderer drew:", "",
            f"| class | {head} |", "|---|" + "---:|" * len(names), *rows]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="bench/peers.py JSONs of the same classes")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write", type=Path, default=None, help="update this benchmarks.md section (--section)")
    p.add_argument("--section", default="peers-cpu-16-seeds")
    args = p.parse_args()
    data = collect(args.runs)
    md = report(data)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.write:
        write_section(args.write, args.section, md + "\n")


if __name__ == "__main__":
    main()
