"""Helpers for tests that drive the whole service over HTTP."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import httpx
import redis

from cli.stack import LocalStack

QUEUE = "render"


def client(stack: LocalStack, token: str | None = "default") -> httpx.Client:
    tok = stack.token if token == "default" else token
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return httpx.Client(base_url=stack.api_url, headers=headers, timeout=30)


def queue_length(stack: LocalStack) -> int:
    return int(redis.Redis.from_url(stack.redis.url).llen(QUEUE))  # type: ignore[arg-type]


def wait_for(http: httpx.Client, job_id: str, timeout: float = 240, atlas: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = http.get(f"/v1/jobs/{job_id}").json()
        final = status["state"] in ("done", "done_with_failures", "cancelled")
        if final and (status["atlas_key"] or not atlas):
            return status
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {status}")


def renders_made(stack: LocalStack) -> Counter[str]:
    """How often each render key (first 12 hex digits) was actually rendered
    and uploaded, from every worker's log ('unit=… key=… done' lines)."""
    seen: Counter[str] = Counter()
    for log in (stack.root / "logs").glob("worker*.log"):
        for m in re.finditer(r"key=([0-9a-f]{12}) done", log.read_text()):
            seen[m.group(1)] += 1
    return seen


def small_job(units: list[Any], **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "efficientnet_lite0", "layer": "logits", "units": units, "steps": 3,
                            "size": 64, "precision": "float32"}  # fmt: skip
    body.update(kw)
    return body
