"""docs/results/gpu.json from one GPU run's outputs (bench/gpu_run.sh):
{"card", "torch", "cases": [...], "service_1000": {...}}."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--engine", type=Path, required=True, help="bench/engine_speed.py --json output")
    p.add_argument("--service", type=Path, default=None, help="bench/service_1000.py --json output")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    engine = json.loads(args.engine.read_text())
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)"
    report: dict[str, object] = {
        "card": card,
        "torch": torch.__version__,
        "cases": [
            {
                "case": c["case"],
                "engine_img_steps_per_s": c["engine_img_steps_per_s"],
                "literal_img_steps_per_s": c["literal_img_steps_per_s"],
                "batch": c["batch"],
                "precision": c["precision"],
            }
            for c in engine
        ],
    }
    if args.service and args.service.exists():
        s = json.loads(args.service.read_text())
        report["service_1000"] = {"units": s["units"], "engine_s": s["engine_s"], "service_s": s["service_s"],
                                  "atlas_s": s["atlas_s"]}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
