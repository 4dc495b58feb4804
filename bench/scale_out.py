"""Scale-out on one host: the same job with 1 and with 2 worker processes.

Each worker is held to one thread (OMP/MKL/torch), renders are tiny, and the
job is split into many batches, so that two workers should finish it in about
half the time if the queue hands them batches in parallel (prefetch 1, solo
pool). Each run uses its own seed, so nothing is cached between runs.

    python bench/scale_out.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import torch

from bench_report import machine, write_section
from devstack import LocalStack

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(workers: int, args: argparse.Namespace, seed: int) -> float:
    root = Path(tempfile.mkdtemp(prefix=f"scale{workers}-"))
    env = {**ONE_THREAD, "DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_BATCH_SIZE": str(args.batch)}
    with LocalStack(root, workers=workers, extra_env=env) as stack:
        http = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30)
        warm = {"model": "efficientnet_lite0", "layer": "logits", "units": list(range(workers)), "steps": 2,
                "size": args.size, "precision": "float32", "batch_size": 1, "seed": 10**6 + seed}  # fmt: skip
        _wait(http, http.post("/v1/jobs", json=warm).json()["id"])  # every worker has loaded the network
        body = {"model": "efficientnet_lite0", "layer": "logits", "units": list(range(args.units)),
                "steps": args.steps, "size": args.size, "precision": "float32", "batch_size": args.batch,
                "seed": seed}  # fmt: skip
        t = time.perf_counter()
        job = http.post("/v1/jobs", json=body).json()
        _wait(http, job["id"])
        return time.perf_counter() - t


def _wait(http: httpx.Client, job_id: str) -> None:
    while http.get(f"/v1/jobs/{job_id}").json()["state"] not in ("done", "done_with_failures"):
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=48)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--write", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    one = run(1, args, seed=1)
    two = run(2, args, seed=2)
    ratio = one / two
    md = "\n".join([
        f"### Scale-out on one host: 1 vs 2 workers — {machine(torch.device('cpu'))}",
        "",
        f"{args.units} EfficientNet-Lite0 logits, {args.steps} steps at {args.size}×{args.size}, batches of "
        f"{args.batch} ({args.units // args.batch} batches), each worker one thread; submit → job done. Command: "
        "`python bench/scale_out.py`",
        "",
        "| workers | wall time | speed-up |",
        "|---:|---:|---:|",
        f"| 1 | {one:.1f} s | 1.00× |",
        f"| 2 | {two:.1f} s | **{ratio:.2f}×** |",
    ]) + "\n"  # fmt: skip
    print(md)
    if args.write:
        write_section(args.write, "scale-out-cpu", md)
    if args.json:
        args.json.write_text(json.dumps({"one_worker_s": one, "two_workers_s": two, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
