"""`dreamfarm api | worker`: the service's processes, as a deployment runs them."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from typing import Any


def register(sub: Any) -> None:
    a = sub.add_parser("api", help="run the HTTP API (settings from DREAMFARM_* env vars)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="run render workers: one process per visible GPU, or one on the CPU")
    w.add_argument("--gpus", default="auto", help="'auto', a count, a list like 0,2, or 'none' (CPU)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=cmd_worker)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", proxy_headers=False)
    return 0


def gpu_ids(spec: str) -> list[str]:
    if spec == "none":
        return []
    if spec == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return [g for g in visible.split(",") if g.strip()]
        if shutil.which("nvidia-smi") is None:
            return []
        # nvidia-smi, not torch: the launcher must not initialize CUDA itself.
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    if spec.isdigit():
        return [str(i) for i in range(int(spec))]
    return [g.strip() for g in spec.split(",") if g.strip()]


def worker_plans(gpus: list[str], host: str) -> list[tuple[str, dict[str, str]]]:
    """(worker name, environment) per process: one per GPU, pinned, or one on the CPU."""
    if gpus:
        return [(f"gpu{g}@{host}", {"CUDA_VISIBLE_DEVICES": g, "DREAMFARM_DEVICE": "cuda:0"}) for g in gpus]
    return [
        (f"cpu@{host}", {"CUDA_VISIBLE_DEVICES": "", "DREAMFARM_DEVICE": os.environ.get("DREAMFARM_DEVICE", "cpu")})
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    from devstack import worker_argv  # with the command, not the parser: devstack brings httpx

    plans = worker_plans(gpu_ids(args.gpus), os.uname().nodename)
    base = os.environ.get("DREAMFARM_METRICS_PORT")
    if base and base.isdigit():  # one metrics port per process: base, base+1, …
        for i, (_name, env) in enumerate(plans):
            env["DREAMFARM_METRICS_PORT"] = str(int(base) + i)
    procs = [subprocess.Popen(worker_argv(name, args.loglevel), env={**os.environ, **env}) for name, env in plans]
    print(f"dreamfarm: started {len(procs)} worker process(es): {', '.join(n for n, _ in plans)}", file=sys.stderr)

    def forward(sig: int, _frame: Any) -> None:
        # SIGTERM → each worker finishes its running batch (warm shutdown).
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes) if codes else 0
