"""All 1000 classes through the whole service vs the engine alone, same run.

Starts a local stack (Redis, an S3 server, one worker on the GPU if there is
one, the API), warms the worker up (network loaded, bf16 verdict and batch
autotune in the bucket), then times:

- engine alone: the same units rendered in-process with the same precision
  and batch size, images kept in memory;
- the service: POST /v1/jobs with every unit → the last unit recorded
  (service_s), and → the atlas in the bucket (atlas_s, from the last unit).

    python bench/service_1000.py --s3 moto --json $OUT/service_1000.json     # on a GPU machine
    python bench/service_1000.py --units 8 --steps 5 --size 64 --s3 moto     # a dry run on the CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench_report import machine
from devstack import LocalStack
from service import autotune, precision_policy
from service.devices import default_batch_size, default_device
from service.renderer import Renderer
from service.retry import RetryingStore, RetryPolicy
from service.s3 import S3Store
from service.spec import RenderSpec
from service.zoo import Registry


def wait(http: httpx.Client, job_id: str, atlas: bool) -> dict[str, Any]:
    while True:
        s = http.get(f"/v1/jobs/{job_id}").json()
        if s["state"] in ("done", "done_with_failures") and (s["atlas_key"] or not atlas):
            return dict(s)
        time.sleep(0.05)


def engine_alone(stack: LocalStack, specs: list[RenderSpec], device: torch.device) -> tuple[float, int, str]:
    """The same units in-process, with the worker's precision and batch size (read from the bucket)."""
    s3 = stack.s3
    bucket = RetryingStore(S3Store("dreamfarm", endpoint_url=s3.endpoint_url, access_key_id=s3.access_key,
                                   secret_access_key=s3.secret_key), RetryPolicy())  # fmt: skip
    renderer = Renderer(Registry().get("efficientnet_lite0"), device=device)
    renderer.guard_report = precision_policy.load(bucket, specs[0], device)
    precision = renderer.resolved_precision(specs[0])
    batch = autotune.load(bucket, autotune.tune_id(specs[0], device, precision)) or default_batch_size(
        device, specs[0].size)  # fmt: skip
    renderer.render(specs[:batch])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for i in range(0, len(specs), batch):
        renderer.render(specs[i : i + batch])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t, batch, precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--s3", choices=("moto", "seaweed"), default="moto")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = default_device()
    root = Path(tempfile.mkdtemp(prefix="service1000-"))
    env = {"DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_DEVICE": str(device)}
    with LocalStack(root, workers=1, extra_env=env, s3=args.s3) as stack:
        http = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=60)
        common = {"model": "efficientnet_lite0", "layer": "logits", "steps": args.steps, "size": args.size}
        # Warm-up: loads the network, decides bf16 and the batch size (kept in the bucket).
        warm = http.post("/v1/jobs", json={**common, "units": [0, 1, 2, 3], "seed": 99}).json()
        wait(http, warm["id"], atlas=True)
        specs = [RenderSpec(model="efficientnet_lite0", layer="_fc", kind="logit", unit=u, steps=args.steps,
                            size=args.size) for u in range(args.units)]  # fmt: skip
        engine_s, batch, precision = engine_alone(stack, specs, device)
        t = time.perf_counter()
        job = http.post("/v1/jobs", json={**common, "units": {"start": 0, "stop": args.units}}).json()
        done = wait(http, job["id"], atlas=False)
        service_s = time.perf_counter() - t
        final = wait(http, job["id"], atlas=True)
        atlas_s = time.perf_counter() - t - service_s
    result = {"units": args.units, "steps": args.steps, "size": args.size, "engine_s": round(engine_s, 2),
              "service_s": round(service_s, 2), "atlas_s": round(atlas_s, 2),
              "ratio": round(service_s / engine_s, 3), "batch": batch, "precision": precision,
              "state": final["state"], "done": done["totals"]["done"], "s3": args.s3,
              "device": machine(device)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
