"""`dreamfarm api | worker | up | submit | status | fetch | demo`."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from service.errors import DreamfarmError, one_line

STACK_DIR = Path(os.environ.get("DREAMFARM_STACK_DIR", ".dreamfarm"))
LECTURE_DEMO_CLASSES = ["Samoyed", "paper towel", "king crab", "hourglass"]


def register(sub: Any) -> None:
    from cli.main import add_render_args

    a = sub.add_parser("api", help="run the HTTP API (settings from DREAMFARM_* env vars)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="run render workers: one process per visible GPU, or one on the CPU")
    w.add_argument("--gpus", default="auto", help="'auto', a count, a list like 0,2, or 'none' (CPU)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=cmd_worker)

    u = sub.add_parser("up", help="start Redis, SeaweedFS, a worker and the API on loopback; Ctrl-C stops all")
    u.add_argument("--dir", type=Path, default=STACK_DIR, help="state folder (data, logs, stack.json)")
    u.add_argument("--port", type=int, default=8000)
    u.add_argument("--workers", type=int, default=1)
    u.set_defaults(func=cmd_up)

    s = sub.add_parser("submit", help="submit a render job to the API")
    add_render_args(s)
    _client_args(s)
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--title", default=None)
    s.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="a job's state and counts")
    st.add_argument("job")
    _client_args(st)
    st.set_defaults(func=cmd_status)

    f = sub.add_parser("fetch", help="download a job's renders, sidecars and atlas")
    f.add_argument("job")
    f.add_argument("--out", required=True)
    _client_args(f)
    f.set_defaults(func=cmd_fetch)

    d = sub.add_parser("demo", help="the README's main job: local stack, lecture classes over HTTP, into ./out")
    d.add_argument("--out", default="out")
    d.add_argument("--steps", type=int, default=250)
    d.add_argument("--dir", type=Path, default=STACK_DIR)
    d.set_defaults(func=cmd_demo)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=None, help="API URL (default: $DREAMFARM_API_URL, the `up` stack, or :8000)")
    p.add_argument("--token", default=None, help="bearer token (default: $DREAMFARM_API_TOKEN or the `up` stack's)")


class Client:
    """A small HTTP client for the API; errors become one-line DreamfarmErrors."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Client:
        from cli.stack import read_state

        state = read_state(STACK_DIR) or {}
        url = args.api or os.environ.get("DREAMFARM_API_URL") or state.get("api_url") or "http://127.0.0.1:8000"
        token = args.token or os.environ.get("DREAMFARM_API_TOKEN") or state.get("token")
        return cls(url, token)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise DreamfarmError(f"cannot reach the API at {self.http.base_url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise DreamfarmError(f"API {r.status_code}: {one_line(str(detail))}")
        return r.json()

    def download(self, url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with httpx.stream("GET", url, timeout=60) as r:
            if r.status_code != 200:
                raise DreamfarmError(f"download of {dest.name} failed: HTTP {r.status_code}")
            with tmp.open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        tmp.replace(dest)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", proxy_headers=False)
    return 0


def _gpu_ids(spec: str) -> list[str]:
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


def cmd_worker(args: argparse.Namespace) -> int:
    from cli.stack import worker_argv

    gpus = _gpu_ids(args.gpus)
    host = os.uname().nodename
    plans: list[tuple[str, dict[str, str]]] = []
    if gpus:
        for g in gpus:
            plans.append((f"gpu{g}@{host}", {"CUDA_VISIBLE_DEVICES": g, "DREAMFARM_DEVICE": "cuda:0"}))
    else:
        plans.append((f"cpu@{host}", {"CUDA_VISIBLE_DEVICES": "", "DREAMFARM_DEVICE": os.environ.get(
            "DREAMFARM_DEVICE", "cpu")}))  # fmt: skip
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


def cmd_up(args: argparse.Namespace) -> int:
    from cli.stack import LocalStack

    stack = LocalStack(args.dir, workers=args.workers, api_port=args.port)
    print("dreamfarm: starting Redis, SeaweedFS, worker(s) and the API…", file=sys.stderr)
    stack.start()
    print(f"dreamfarm: up. API {stack.api_url} (docs at {stack.api_url}/docs)\n"
          f"  token: {stack.token}\n  state: {args.dir / 'stack.json'} (submit/status/fetch read it)\n"
          f"  logs:  {args.dir / 'logs'}\nCtrl-C stops everything.", file=sys.stderr)  # fmt: skip
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


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    from cli.local_commands import request_from_args
    from service.planning import UnitRange
    from service.zoo import Registry

    req, _arch = request_from_args(args, Registry())
    if isinstance(req.units, UnitRange):
        units: Any = {"start": req.units.start, "stop": req.units.stop}
    else:
        units = req.units if isinstance(req.units, str) else list(req.units)
    r = req.recipe
    body: dict[str, Any] = {
        "model": req.model, "layer": req.layer, "units": units, "kind": req.kind,
        "prior": [{"name": t.name, "weight": t.weight} for t in r.prior], "steps": r.steps, "lr": r.lr,
        "size": r.size, "seed": req.seed, "init_scale": r.init_scale, "precision": r.precision,
        "random_weights": req.random_weights,
    }  # fmt: skip
    if req.position is not None:
        body["position"] = list(req.position)
    if getattr(args, "batch_size", None):
        body["batch_size"] = args.batch_size
    if getattr(args, "title", None):
        body["title"] = args.title
    return body


def follow(client: Client, job_id: str, *, quiet: bool = False, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll a job until it ends, with a progress bar in units."""
    status = client.call("GET", f"/v1/jobs/{job_id}")
    total = status["totals"]["units"]
    bar = tqdm(total=total, unit="unit", disable=quiet, file=sys.stderr, desc=f"job {job_id}",
               bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} units [{elapsed}<{remaining}] {postfix}")  # fmt: skip
    final_since: float | None = None
    while True:
        bar.n = round(status["progress"] * total, 1)
        t = status["totals"]
        bar.set_postfix_str(f"{status['state']}, {t['done']} done, {t['cached']} cached, {t['failed']} failed")
        bar.refresh()
        if status["state"] in ("done", "done_with_failures", "cancelled"):
            final_since = final_since or time.monotonic()
            # The atlas follows the last unit within seconds; do not wait forever for it.
            if status["atlas_key"] or status["state"] == "cancelled" or time.monotonic() - final_since > 60:
                break
        time.sleep(poll_s)
        status = client.call("GET", f"/v1/jobs/{job_id}")
    bar.close()
    return dict(status)


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    accepted = client.call("POST", "/v1/jobs", json=job_body(args))
    print(f"job {accepted['id']}: {accepted['units']} units, {accepted['cached']} cached, "
          f"{accepted['enqueued_batches']} batches enqueued", file=sys.stderr)  # fmt: skip
    print(accepted["id"])
    if not args.wait:
        return 0
    status = follow(client, accepted["id"])
    return _report(status)


def _report(status: dict[str, Any]) -> int:
    for f in status["failures"]:
        print(f"  failed {f['key'][:12]}: {f['error']}", file=sys.stderr)
    print(f"job {status['id']}: {status['state']}", file=sys.stderr)
    return 0 if status["state"] == "done" else 1


def cmd_status(args: argparse.Namespace) -> int:
    status = Client.from_args(args).call("GET", f"/v1/jobs/{args.job}")
    t = status["totals"]
    print(
        f"{status['id']}  {status['state']}  {status['progress']:.0%}  {status['model']} {status['layer']}  "
        f"units {t['units']}: {t['done']} done, {t['cached']} cached, {t['failed']} failed, {t['pending']} pending"
    )
    for f in status["failures"]:
        print(f"  failed {f['key'][:12]}: {f['error']}")
    if status.get("atlas_url"):
        print(f"  atlas: {status['atlas_url']}")
    return 0


def fetch(client: Client, job_id: str, out: Path, quiet: bool = False) -> int:
    """Download every finished render (PNG and sidecar, bucket layout kept)
    and the atlas with its manifest; returns the number of renders."""
    status = client.call("GET", f"/v1/jobs/{job_id}")
    n = 0
    offset: int | None = 0
    bar = tqdm(total=status["totals"]["units"], unit="render", disable=quiet, file=sys.stderr, desc="fetch")
    while offset is not None:
        page = client.call("GET", f"/v1/jobs/{job_id}/renders", params={"offset": offset, "limit": 200})
        for item in page["items"]:
            if item["png_url"]:
                client.download(item["png_url"], out / item["png"])
                client.download(item["sidecar_url"], out / item["sidecar"])
                n += 1
            bar.update(1)
        offset = page["next_offset"]
    bar.close()
    if status.get("atlas_url"):
        client.download(status["atlas_url"], out / "atlas.png")
        client.download(status["atlas_manifest_url"], out / "atlas.json")
    return n


def cmd_fetch(args: argparse.Namespace) -> int:
    out = Path(args.out)
    n = fetch(Client.from_args(args), args.job, out)
    print(f"fetched {n} renders into {out}" + (" with atlas.png" if (out / "atlas.png").exists() else ""),
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Stack up, the lecture's classes on the bundled network over HTTP, fetch, stack down."""
    from cli.stack import LocalStack

    out = Path(args.out)
    print("dreamfarm demo: starting a local stack (Redis, SeaweedFS S3, one worker, the API)…", file=sys.stderr)
    with LocalStack(args.dir, workers=1) as stack:
        client = Client(stack.api_url, stack.token)
        body = {"model": "efficientnet_lite0", "layer": "logits", "units": LECTURE_DEMO_CLASSES,
                "steps": args.steps, "title": "EfficientNet-Lite0 · lecture classes"}  # fmt: skip
        accepted = client.call("POST", "/v1/jobs", json=body)
        print(f"submitted job {accepted['id']}: {accepted['units']} units, {accepted['cached']} cached; "
              f"API {stack.api_url}, logs in {args.dir / 'logs'}", file=sys.stderr)  # fmt: skip
        status = follow(client, accepted["id"])
        n = fetch(client, accepted["id"], out)
    print(f"dreamfarm demo: {n} renders and the atlas are in {out}/ (open {out / 'atlas.png'})", file=sys.stderr)
    return _report(status)
