"""`dreamfarm up | demo`: a whole local stack (devstack) from the command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cli.client import STACK_DIR, Client
from cli.client_cmds import fetch, follow, report

LECTURE_DEMO_CLASSES = ["Samoyed", "paper towel", "king crab", "hourglass"]


def register(sub: Any) -> None:
    u = sub.add_parser("up", help="start Redis, SeaweedFS, a worker and the API on loopback; Ctrl-C stops all")
    u.add_argument("--dir", type=Path, default=STACK_DIR, help="state folder (data, logs, stack.json)")
    u.add_argument("--port", type=int, default=8000)
    u.add_argument("--workers", type=int, default=1)
    u.set_defaults(func=cmd_up)

    d = sub.add_parser("demo", help="the README's main job: local stack, lecture classes over HTTP, into ./out")
    d.add_argument("--out", default="out")
    d.add_argument("--steps", type=int, default=None, help="optimization steps (default: the default recipe's)")
    d.add_argument("--dir", type=Path, default=STACK_DIR)
    d.set_defaults(func=cmd_demo)


def cmd_up(args: argparse.Namespace) -> int:
    from devstack import LocalStack  # here, not at the top: every `dreamfarm` builds this parser

    stack = LocalStack(args.dir, workers=args.workers, api_port=args.port)
    print("dreamfarm: starting Redis, SeaweedFS, worker(s) and the API…", file=sys.stderr)
    stack.start()
    print(f"dreamfarm: up, everything on loopback.\n{stack.describe()}\n"
          f"state    {args.dir / 'stack.json'} (submit/status/fetch read it; `eval \"$(dreamfarm env)\"` exports it)\n"
          f"logs     {args.dir / 'logs'}\nCtrl-C stops everything.", file=sys.stderr)  # fmt: skip
    stopping = False

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            time.sleep(0.5)
    finally:
        print("dreamfarm: stopping…", file=sys.stderr)
        stack.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Stack up, the lecture's classes on the bundled network over HTTP, fetch, stack down."""
    from devstack import LocalStack

    out = Path(args.out)
    print("dreamfarm demo: starting a local stack (Redis, SeaweedFS S3, one worker, the API)…", file=sys.stderr)
    with LocalStack(args.dir, workers=1) as stack:
        client = Client(stack.api_url, stack.token)
        body = {"model": "efficientnet_lite0", "layer": "logits", "units": LECTURE_DEMO_CLASSES,
                "title": "EfficientNet-Lite0 · lecture classes"}  # fmt: skip
        if args.steps is not None:
            body["steps"] = args.steps
        accepted = client.call("POST", "/v1/jobs", json=body)
        print(f"submitted job {accepted['id']}: {accepted['units']} units, {accepted['cached']} cached; "
              f"API {stack.api_url}, logs in {args.dir / 'logs'}", file=sys.stderr)  # fmt: skip
        status = follow(client, accepted["id"])
        n = fetch(client, accepted["id"], out)
    print(f"dreamfarm demo: {n} renders and the atlas are in {out}/ (open {out / 'atlas.png'})", file=sys.stderr)
    return report(status)
