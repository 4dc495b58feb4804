"""The service's overhead: the same units through the whole service (HTTP →
Redis → Celery worker → S3 → job record) against the engine alone, on the same
machine, in the same run; and how fast a 1000-class job is planned.

    python bench/service_throughput.py [--units 64] [--write docs/benchmarks.md]

The service run uses a warm worker (its network already loaded, as in steady
state) and the same batch size as the engine run. Overhead = service wall time
(submit → last unit recorded) minus engine time, over engine time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import redis
import torch

from bench_report import machine, write_section
from devstack import LocalStack
from service import engine
from service.contract import QUEUE
from service.spec import RenderSpec
from service.zoo import Registry, load_network


def wait_done(http: httpx.Client, job_id: str, timeout: float = 3600) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = dict(http.get(f"/v1/jobs/{job_id}").json())
        if s["state"] in ("done", "done_with_failures"):
            return s
        time.sleep(0.25)
    raise TimeoutError(job_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--write", type=Path, default=None)
    args = p.parse_args()
    device = torch.device("cpu")
    units = list(range(args.units))
    common = {"model": "efficientnet_lite0", "steps": args.steps, "size": args.size, "precision": "float32"}

    # --- the engine alone -----------------------------------------------------
    entry = Registry().get("efficientnet_lite0")
    net = load_network(entry).to(memory_format=torch.channels_last)
    specs = [RenderSpec(layer="_fc", kind="logit", unit=u, **common) for u in units]  # type: ignore[arg-type]
    engine.render(net, "_fc", specs[:2], precision="float32", channels_last=True)  # warm-up

    def engine_alone() -> float:
        t = time.perf_counter()
        for i in range(0, len(specs), args.batch):
            engine.render(net, "_fc", specs[i : i + args.batch], precision="float32", channels_last=True)
        return time.perf_counter() - t

    # Engine runs before and after the service run: drift in the machine's
    # speed shows up as a gap between the two instead of as overhead.
    engine_before = engine_alone()

    with tempfile.TemporaryDirectory() as tmp:
        env = {"DREAMFARM_BATCH_SIZE": str(args.batch), "DREAMFARM_CACHE": f"{tmp}/cache"}
        stack = LocalStack(Path(tmp) / "stack", workers=0, extra_env=env).start()
        try:
            http = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"},
                                timeout=60)  # fmt: skip
            # --- planning 1000 classes (no worker running) --------------------
            t = time.perf_counter()
            r = http.post("/v1/jobs", json={"model": "efficientnet_lite0", "layer": "logits", "units": "all",
                                            "batch_size": 64})  # fmt: skip
            plan_s = time.perf_counter() - t
            r.raise_for_status()
            all_job = r.json()
            http.delete(f"/v1/jobs/{all_job['id']}")
            redis.Redis.from_url(stack.redis.url).delete(QUEUE)

            # --- warm the worker, then the same units through the service -----
            stack.start_worker(0)
            warm = http.post("/v1/jobs", json={**common, "layer": "logits", "units": [999], "steps": 2}).json()
            wait_done(http, warm["id"])
            body = {**common, "layer": "logits", "units": units, "batch_size": args.batch}
            t = time.perf_counter()
            job = http.post("/v1/jobs", json=body).json()
            status = wait_done(http, job["id"])
            service_s = time.perf_counter() - t
        finally:
            stack.stop()
    engine_after = engine_alone()
    engine_s = (engine_before + engine_after) / 2
    overhead = (service_s - engine_s) / engine_s
    rows = [
        f"### Service overhead — {machine(device)}",
        "",
        f"{args.units} EfficientNet-Lite0 logits, {args.steps} steps at {args.size}×{args.size}, float32, batches "
        f"of {args.batch}; one CPU worker, local SeaweedFS and Redis. Command: "
        f"`python bench/service_throughput.py --units {args.units} --steps {args.steps} --size {args.size}`",
        "",
        "| | wall time | renders/min |",
        "|---|---:|---:|",
        f"| engine alone (mean of a run before and after: {engine_before:.1f} s, {engine_after:.1f} s) "
        f"| {engine_s:.1f} s | {60 * args.units / engine_s:.1f} |",
        f"| through the service (submit → last unit recorded) | {service_s:.1f} s "
        f"| {60 * args.units / service_s:.1f} |",
        f"| **overhead** (queueing, uploads, records) | {service_s - engine_s:+.1f} s | **{overhead:+.1%}** |",
        "",
        f"Planning and enqueueing all 1000 classes (one bucket listing, {all_job['enqueued_batches']} batch tasks): "
        f"**{plan_s * 1000:.0f} ms** for the POST round trip. Job state at the end: {status['state']}.",
    ]
    md = "\n".join(rows) + "\n"
    print(md)
    if args.write:
        write_section(args.write, "service-cpu", md)


if __name__ == "__main__":
    main()
