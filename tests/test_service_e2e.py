"""The whole service: HTTP API → Redis → real Celery worker processes →
SeaweedFS with access keys, and `dreamfarm fetch` back out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from devstack import LocalStack
from tests.service_helpers import client, events, renders_by_worker, renders_made, small_job, wait_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWELVE = ["box turtle", "whiptail", "African chameleon", "wolf spider", "king crab", "Samoyed", "hourglass",
          "paper towel", "ping-pong ball", "steel arch bridge", "sunglass", "geyser"]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    # Storage retries quick enough for a test's outage of a few seconds.
    env = {"DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_STORAGE_BACKOFF_S": "0.5",
           "DREAMFARM_STORAGE_BACKOFF_CAP_S": "4", "DREAMFARM_STORAGE_RETRIES": "12",
           "DREAMFARM_JUDGES": '["efficientnet_lite1"]'}  # fmt: skip
    with LocalStack(root, workers=1, extra_env=env) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def _bucket(stack: LocalStack) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=stack.s3.endpoint_url, aws_access_key_id=stack.s3.access_key,
                      aws_secret_access_key=stack.s3.secret_key, region_name="us-east-1")  # fmt: skip
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dreamfarm"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_twelve_classes_end_to_end_then_cached_then_fetched(stack: LocalStack, http: httpx.Client,
                                                            tmp_path: Path) -> None:  # fmt: skip
    r = http.post("/v1/jobs", json=small_job(TWELVE, batch_size=6, title="twelve"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["units"] == 12 and job["enqueued_batches"] == 2
    status = wait_for(http, job["id"])
    assert status["state"] == "done" and status["totals"]["done"] == 12 and status["progress"] == 1.0

    keys = set(_bucket(stack))
    items = http.get(f"/v1/jobs/{job['id']}/renders", params={"limit": 100}).json()["items"]
    assert len(items) == 12 and all(i["state"] == "done" for i in items)
    for item in items:
        # the documented layout: renders/<model>/<layer>/<unit>/<key>.png + .json
        assert item["png"] == f"renders/efficientnet_lite0/_fc/{item['unit']}/{item['key']}.png"
        assert item["png"] in keys and item["sidecar"] in keys
        side = httpx.get(item["sidecar_url"]).json()
        assert side["key"] == item["key"] and side["label"] == item["label"]
    assert f"atlases/{status['atlas_key']}.png" in keys and f"atlases/{status['atlas_key']}.json" in keys
    assert f"jobs/{job['id']}.json" in keys
    manifest = httpx.get(status["atlas_manifest_url"]).json()
    assert [t["caption"] for t in manifest["tiles"]] == TWELVE

    # Resubmitting the same job enqueues nothing: every unit is cached.
    again = http.post("/v1/jobs", json=small_job(TWELVE, batch_size=6, title="twelve")).json()
    assert again["cached"] == 12 and again["enqueued_batches"] == 0
    assert http.get(f"/v1/jobs/{again['id']}").json()["state"] == "done"

    # `dreamfarm fetch` downloads renders, sidecars and the atlas.
    out = tmp_path / "fetched"
    argv = [sys.executable, "-m", "cli.main", "fetch", job["id"], "--out", str(out), "--api", stack.api_url,
            "--token", stack.token]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("renders/efficientnet_lite0/_fc/*/*.png"))) == 12
    assert len(list(out.glob("renders/efficientnet_lite0/_fc/*/*.json"))) == 12
    assert (out / "atlas.png").stat().st_size > 1000
    assert json.loads((out / "atlas.json").read_text())["atlas_key"] == status["atlas_key"]
    # …and the alias pointer, as in the bucket: logits/ says where its renders are
    pointer = json.loads((out / "renders/efficientnet_lite0/logits/index.json").read_text())
    assert pointer["layer"] == "_fc" and (out / pointer["renders"]).is_dir()


def test_two_workers_drain_one_job_without_rendering_twice(stack: LocalStack, http: httpx.Client) -> None:
    second = stack.start_worker(1)
    try:
        units = list(range(100, 116))
        job = http.post("/v1/jobs", json=small_job(units, batch_size=2, steps=15)).json()
        assert job["enqueued_batches"] == 8
        status = wait_for(http, job["id"])
        assert status["state"] == "done" and status["totals"]["done"] == 16
        items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
        done = renders_made(http, job["id"])
        assert all(done[i["key"]] == 1 for i in items), "a unit was rendered twice"
        per_worker = renders_by_worker(http, job["id"])
        assert set(per_worker) == {"worker0@127.0.0.1", "worker1@127.0.0.1"}, f"one worker did nothing: {per_worker}"
    finally:
        second.stop(60)


def test_storage_outage_mid_batch_ends_with_the_job_complete(stack: LocalStack, http: httpx.Client) -> None:
    """Stop the S3 server while a batch renders, start it again: uploads retry
    with backoff and the job completes."""
    units = list(range(200, 204))
    # The lecture's loop: slow enough per step at 64 px for the plug to be pulled mid-batch.
    job = http.post("/v1/jobs", json=small_job(units, batch_size=4, steps=40, recipe="lecture")).json()
    # Wait until the worker is rendering (progress shows), then pull the plug.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and http.get(f"/v1/jobs/{job['id']}").json()["progress"] <= 0:
        time.sleep(0.1)
    stack.s3.stop()
    try:
        # Keep storage down until the worker has met the outage (a retry is
        # recorded), however long the render takes on this machine: a fixed
        # outage can end before the first upload on a slow machine.
        wait_event(http, job["id"], lambda e: e["type"] == "storage_retry", timeout=240)
    finally:
        stack.s3.start(timeout=60)
    status = wait_for(http, job["id"], timeout=240)
    assert status["state"] == "done", status
    assert status["totals"]["done"] == 4
    keys = set(_bucket(stack))
    items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
    assert len(items) == 4 and all(i["png"] in keys and i["sidecar"] in keys for i in items)  # complete, not partial


def test_lucid_samples_with_a_judge(stack: LocalStack, http: httpx.Client) -> None:
    """A recipe with diversity samples: the samples of a unit side by side in
    the atlas, each sidecar with its recipe and quality, the job counting
    what the rendering network and the judge recognize."""
    body = small_job(["Samoyed", "king crab"], recipe="lucid", samples=2, steps=8, batch_size=1)
    job = http.post("/v1/jobs", json=body).json()
    assert job["units"] == 4 and job["enqueued_batches"] == 2  # a unit's samples are never split
    status = wait_for(http, job["id"])
    assert status["state"] == "done" and status["recipe"] == "lucid" and status["samples"] == 2
    assert set(status["quality"]) == {"efficientnet_lite0", "efficientnet_lite1"}
    assert all(q["n"] == 4 and 0 <= q["top1"] <= q["top5"] <= 4 for q in status["quality"].values())
    items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
    assert [(i["unit"], i["sample"]) for i in items] == [(258, 0), (258, 1), (121, 0), (121, 1)]
    for item in items:
        side = httpx.get(item["sidecar_url"]).json()
        assert side["recipe"] == "lucid" and side["spec"]["param"]["name"] == "fourier"
        assert side["quality"]["renderer"]["model"] == "efficientnet_lite0"
        assert [j["model"] for j in side["quality"]["judges"]] == ["efficientnet_lite1"]
        assert len(side["quality"]["renderer"]["top5"]) == 5 and side["quality"]["renderer"]["target_rank"] >= 1
        assert side["spec"]["diversity"] > 0 and "diversity" in side["trace"][-1]
    manifest = httpx.get(status["atlas_manifest_url"]).json()
    assert manifest["columns"] == 2 and [t["caption"] for t in manifest["tiles"][:2]] == ["Samoyed #1", "Samoyed #2"]


def test_adversarial_example_over_http(stack: LocalStack, http: httpx.Client) -> None:
    """The lecture's second half through the service: the cat photo uploaded,
    'paper towel' as the target; the PNG in the bucket is classified as the
    target and within 8/255 of the 8-bit original."""
    import io

    from PIL import Image
    from skimage import data as samples

    buf = io.BytesIO()
    Image.fromarray(samples.chelsea()).save(buf, format="JPEG", quality=95)
    image = http.post("/v1/images", content=buf.getvalue(), headers={"Content-Type": "image/jpeg"}).json()
    body = {"model": "efficientnet_lite0", "layer": "logits", "units": ["paper towel"], "recipe": "adversarial",
            "init_image": image["key"]}  # fmt: skip
    job = http.post("/v1/jobs", json=body).json()
    status = wait_for(http, job["id"])
    assert status["state"] == "done", status
    item = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"][0]
    side = httpx.get(item["sidecar_url"]).json()
    adv = side["adversarial"]
    assert adv["result_top5"][0]["label"] == "paper towel" and adv["original_top5"][0]["label"] != "paper towel"
    assert adv["linf_levels"] <= 8 and adv["linf"] <= 8 / 255 + 1e-9 and adv["steps"] < 200


def test_a_lost_atlas_is_rebuilt_on_request(stack: LocalStack, http: httpx.Client) -> None:
    """POST /v1/jobs/{id}/atlas: after the atlas went missing (a bucket outage
    longer than the atlas task's retries), a finished job gets it back."""
    job = http.post("/v1/jobs", json=small_job([300, 301])).json()
    status = wait_for(http, job["id"])
    s3 = boto3.client("s3", endpoint_url=stack.s3.endpoint_url, aws_access_key_id=stack.s3.access_key,
                      aws_secret_access_key=stack.s3.secret_key, region_name="us-east-1")  # fmt: skip
    png = f"atlases/{status['atlas_key']}.png"
    s3.delete_object(Bucket="dreamfarm", Key=png)
    assert png not in _bucket(stack)
    r = http.post(f"/v1/jobs/{job['id']}/atlas")
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while png not in _bucket(stack) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert png in _bucket(stack)
    assert any(e["type"] == "atlas_requested" for e in events(http, job["id"]))
