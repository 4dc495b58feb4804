"""Flower against a local stack: does it show a render batch's whole life?

Installs Flower from PyPI into a folder of its own (pip --target, --no-deps:
celery, kombu and prometheus_client come from the project's venv, nothing
pulls another torch), starts a LocalStack with no worker yet and Flower on
its Redis (loopback, with a basic-auth sign-in), and submits a small job
(efficientnet_lite0 logits, 2 units, few steps, 64 px). Through Flower's HTTP
API it then watches:

- the render batch PENDING while no worker is there (the API's `task-sent`);
- a worker started: the batch STARTED, then SUCCESS, with the worker named;
- the worker online at every look while the batch renders (each step sleeps
  --step-sleep s, so the batch lasts several heartbeat windows), and still
  online after --idle-s seconds idle (Flower marked an idle worker without
  heartbeats offline ~2 min after its last task);
- Flower refusing a request without the sign-in.

Prints the result and writes it as JSON (default docs/results/flower_check.json).

    python bench/flower_check.py
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import celery
import httpx

from devstack import LocalStack, free_port
from service.contract import RENDER_TASK

REPO = Path(__file__).resolve().parents[1]
FLOWER_VERSION = "2.2.0"
# What Flower needs beyond the project's venv (celery, kombu, prometheus_client).
FLOWER_EXTRAS = ["tornado>=5,<7", "humanize", "pytz"]


def install_flower(target: Path, version: str) -> None:
    if (target / "flower").is_dir() and (target / f"flower-{version}.dist-info").is_dir():
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target),
           "--no-deps", f"flower=={version}", *FLOWER_EXTRAS]  # fmt: skip
    print(f"installing Flower {version} into {target}", file=sys.stderr)
    subprocess.run(cmd, check=True)


class Flower:
    """`celery flower` on the stack's broker, on loopback, signed in with basic auth."""

    def __init__(self, target: Path, broker: str, log: Path) -> None:
        self.port = free_port()
        self.auth = ("ops", secrets.token_urlsafe(12))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)]),
               "FLOWER_BASIC_AUTH": ":".join(self.auth)}  # fmt: skip
        argv = [sys.executable, "-m", "celery", f"--broker={broker}", "flower", "--address=127.0.0.1",
                f"--port={self.port}"]  # fmt: skip
        self.log = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)  # fmt: skip
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", auth=self.auth, timeout=10)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flower exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if self.http.get("/healthcheck").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"flower not answering after {timeout:g} s; see {self.log.name}")

    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.http.get("/api/tasks").json())

    def workers(self) -> dict[str, bool]:
        """Worker name → online, as Flower's workers page shows it."""
        return {w["hostname"]: bool(w["status"]) for w in self.http.get("/workers", params={"json": 1}).json()["data"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.http.close()
        self.log.close()


def render_task(flower: Flower) -> tuple[str, dict[str, Any]] | None:
    found = [(uuid, t) for uuid, t in flower.tasks().items() if t.get("name") == RENDER_TASK]
    return found[0] if found else None


def check(args: argparse.Namespace) -> dict[str, Any]:
    install_flower(args.target, args.flower_version)
    root = Path(tempfile.mkdtemp(prefix="flower-check-"))
    env = {"DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_FAULT_STEP_SLEEP": str(args.step_sleep)}
    result: dict[str, Any] = {"flower": args.flower_version, "celery": celery.__version__}
    with LocalStack(root, workers=0, extra_env=env) as stack:
        flower = Flower(args.target, stack.redis.url, root / "flower.log")
        try:
            flower.wait_ready()
            unauthenticated = httpx.get(f"http://127.0.0.1:{flower.port}/api/tasks", timeout=10).status_code
            result["sign_in"] = {"without": unauthenticated, "with": flower.http.get("/api/tasks").status_code}
            http = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30)
            body = {"model": "efficientnet_lite0", "layer": "logits", "units": [1, 2], "steps": args.steps,
                    "size": 64, "precision": "float32", "title": "flower check"}  # fmt: skip
            job = http.post("/v1/jobs", json=body).json()
            t0 = time.monotonic()
            timeline: list[dict[str, Any]] = []

            def look(what: str) -> tuple[str, dict[str, Any]] | None:
                found = render_task(flower)
                state = found[1]["state"] if found else None
                online = flower.workers()
                if not timeline or (timeline[-1]["state"], timeline[-1]["workers"]) != (state, online):
                    timeline.append({"t_s": round(time.monotonic() - t0, 2), "phase": what, "state": state,
                                     "workers": online})  # fmt: skip
                return found

            # No worker yet: the batch waits in the queue, and Flower knows it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (look("queued, no worker") is None):
                time.sleep(0.25)
            time.sleep(2)
            look("queued, no worker")
            stack.start_worker(0)
            worker = LocalStack.worker_name(0)
            online_while_running: list[bool] = []
            found = None
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                found = look("worker started")
                if found and found[1]["state"] == "STARTED":
                    online_while_running.append(flower.workers().get(worker, False))
                if found and found[1]["state"] in ("SUCCESS", "FAILURE"):
                    break
                time.sleep(0.25)
            status = http.get(f"/v1/jobs/{job['id']}").json()
            idle_from = time.monotonic()
            while time.monotonic() - idle_from < args.idle_s:
                look("idle after the job")
                time.sleep(2)
            online_after_idle = flower.workers().get(worker, False)
            assert found is not None
            uuid, task = found
            info = flower.http.get(f"/api/task/info/{uuid}").json()
            states = []
            for entry in timeline:
                if entry["state"] and (not states or states[-1] != entry["state"]):
                    states.append(entry["state"])
            result.update({
                "job": {"id": job["id"], "state": status["state"], "units": job["units"], "steps": args.steps,
                        "step_sleep_s": args.step_sleep},
                "render_task": {"uuid": uuid, "states_seen": states, "final": task["state"],
                                "worker": info.get("worker"),
                                "times": {k: info.get(k) for k in ("sent", "received", "started", "succeeded")}},
                "worker": {"name": worker, "looks_while_running": len(online_while_running),
                           "online_at_every_look_while_running": bool(online_while_running)
                           and all(online_while_running),
                           "idle_s": args.idle_s, "online_after_idle": online_after_idle},
                "timeline": timeline,
            })  # fmt: skip
        finally:
            flower.stop()
    result["ok"] = bool(
        result["sign_in"] == {"without": 401, "with": 200}
        and result["render_task"]["states_seen"][:1] == ["PENDING"]
        and "STARTED" in result["render_task"]["states_seen"]
        and result["render_task"]["final"] == "SUCCESS"
        and result["worker"]["online_at_every_look_while_running"]
        and result["worker"]["online_after_idle"]
    )
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=Path, default=Path(tempfile.gettempdir()) / f"dreamfarm-flower-{FLOWER_VERSION}",
                   help="where Flower is installed (pip --target)")  # fmt: skip
    p.add_argument("--flower-version", default=FLOWER_VERSION)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-sleep", type=float, default=0.8, help="seconds each step sleeps: a batch to watch")
    p.add_argument("--idle-s", type=float, default=130, help="idle after the job (Flower: ~120 s)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "flower_check.json")
    args = p.parse_args()
    result = check(args)
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
