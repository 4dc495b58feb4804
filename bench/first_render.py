"""The first render of a model, whole processes, against the lecture's loop.

A user's first `dreamfarm render` of a model pays for everything: start-up,
building the network, the precision policy (a bf16 probe where the device has
fast bf16 and the job is large enough to afford one) and the render. This
times, back to back on the same machine:

1. the lecture's loop, literally (bench/literal_loop.py), as a whole process;
2. `dreamfarm render` with an empty cache (no stored bf16 verdict), as a
   whole process;

and reports both wall times, their ratio, and the command's own split: the
probe's seconds (from the stored verdict, none if no probe ran) and the
render's (the sidecars' `batch_seconds`).

    python bench/first_render.py                       # the issue's VGG16 job
    python bench/first_render.py --json docs/results/first_render_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from bench_report import machine

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg16")
    p.add_argument("--layer", default="logits")
    p.add_argument("--units", default="0-15")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--recipe", default="lecture")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    first, last = (int(v) for v in args.units.split("-"))
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        env["DREAMFARM_CACHE"] = str(Path(tmp) / "cache")  # no verdict from an earlier run
        literal_cmd = [sys.executable, str(ROOT / "bench" / "literal_loop.py"), "--model", args.model, "--layer",
                       args.layer, "--units", str(first), str(last), "--steps", str(args.steps)]  # fmt: skip
        literal = timed(literal_cmd, env)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "cli.main", "render", "--model", args.model, "--random-weights", "--layer",
               args.layer, "--recipe", args.recipe, "--units", args.units, "--steps", str(args.steps),
               "--out", str(out), "--quiet"]  # fmt: skip
        whole = timed(cmd, env)
        sidecars = [json.loads(f.read_text()) for f in out.rglob("*.json") if f.parent.name.isdigit()]
        verdicts = [json.loads(f.read_text()) for f in (Path(tmp) / "cache").rglob("precision/*.json")]
    render_s = max((s["timings"]["batch_seconds"] for s in sidecars), default=0.0)
    probe_s = sum(float(v.get("probe_seconds", 0.0)) for v in verdicts)
    result = {
        "machine": machine(torch.device("cpu")),
        "job": f"{args.model} {args.layer} units {args.units}, {args.steps} steps, recipe {args.recipe}",
        "literal_loop_s": round(literal, 1),
        "dreamfarm_render_s": round(whole, 1),
        "ratio": round(literal / whole, 2),
        "probe_s": round(probe_s, 1),
        "render_s": round(render_s, 1),
        "precision": sorted({s["precision"] for s in sidecars}),
        "renders": len(sidecars),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
