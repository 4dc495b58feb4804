"""Helpers for tests that drive the whole service over HTTP. What happened is
read from what a user sees: the API (job status, renders, events), Redis and
the bucket, never from log wording."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import redis

from devstack import LocalStack
from service.contract import QUEUE


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


def events(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of a job, oldest first (GET /v1/jobs/{id}/events, all pages)."""
    out: list[dict[str, Any]] = []
    while True:
        page = http.get(f"/v1/jobs/{job_id}/events", params={"offset": len(out), "limit": 5000}).json()
        out += page["items"]
        if not page["items"] or len(out) >= page["total"]:
            return out


def wait_event(
    http: httpx.Client, job_id: str, match: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(http, job_id) if match(e)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no such event for job {job_id} in {timeout}s: {events(http, job_id)[-20:]}")


def renders_made(http: httpx.Client, job_id: str) -> Counter[str]:
    """How often each render key was rendered and uploaded for this job."""
    return Counter(e["key"] for e in events(http, job_id) if e["type"] == "unit_rendered")


def renders_by_worker(http: httpx.Client, job_id: str) -> Counter[str]:
    """Renders uploaded per worker name (each batch's worker is in its batch_started event)."""
    evs = events(http, job_id)
    worker_of = {e["batch"]: e["worker"] for e in evs if e["type"] == "batch_started"}
    return Counter(worker_of.get(e["batch"]) for e in evs if e["type"] == "unit_rendered")


def small_job(units: list[Any], **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "efficientnet_lite0", "layer": "logits", "units": units, "steps": 3,
                            "size": 64, "precision": "float32"}  # fmt: skip
    body.update(kw)
    return body


def s3_client(stack: LocalStack) -> Any:
    """boto3 on the stack's bucket, with the stack's own keys."""
    import boto3

    return boto3.client("s3", endpoint_url=stack.s3.endpoint_url, aws_access_key_id=stack.s3.access_key,
                        aws_secret_access_key=stack.s3.secret_key, region_name="us-east-1")  # fmt: skip


def bucket_keys(stack: LocalStack, prefix: str = "") -> list[str]:
    """Every key in the stack's bucket under `prefix`, as a person listing it sees them."""
    keys: list[str] = []
    for page in s3_client(stack).get_paginator("list_objects_v2").paginate(Bucket="dreamfarm", Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys
