"""Several layers in one job through the whole service: HTTP API → Redis →
a real Celery worker → SeaweedFS, and `dreamfarm submit --layers`, `status`
and `fetch` back out. A ResNet-18 with random weights (no weights file),
two layers of different kinds (conv channels and class logits), few steps
at a small size: what a 2-core CPU renders in seconds. "all" itself (every
channel of every layer: thousands of units) is planned in
tests/test_whole_network.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import LocalStack
from tests.service_helpers import bucket_keys, client, events, queue_length, renders_made, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY: dict[str, Any] = {
    "model": "resnet18", "layers": ["conv1", "logits"], "units": {"start": 0, "stop": 6}, "random_weights": True,
    "steps": 2, "size": 32, "precision": "float32", "batch_size": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    with LocalStack(root, workers=1, extra_env={"DREAMFARM_CACHE": str(root / "cache")}) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def _cli(stack: LocalStack, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli.main", *argv, "--api", stack.api_url, "--token", stack.token]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_two_layers_render_once_each_with_an_atlas_per_layer(stack: LocalStack, http: httpx.Client,
                                                             tmp_path: Path) -> None:  # fmt: skip
    r = http.post("/v1/jobs", json=BODY)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["units"] == 12 and job["enqueued_batches"] == 4  # 4 + 2 per layer: batches never mix layers
    status = wait_for(http, job["id"])
    assert status["state"] == "done" and status["totals"]["done"] == 12 and status["progress"] == 1.0
    assert status["layer"] == "conv1" and status["request"]["layers"] == ["conv1", "logits"]
    layers = status["layers"]
    assert [(x["layer"], x["path"], x["kind"], x["units"], x["done"], x["failed"], x["pending"], x["progress"])
            for x in layers] == [("conv1", "conv1", "channel", 6, 6, 0, 0, 1.0),
                                 ("logits", "fc", "logit", 6, 6, 0, 0, 1.0)]  # fmt: skip
    assert all(x["atlas_url"] and x["atlas_manifest_url"] for x in layers)
    assert status["atlas_key"] == layers[0]["atlas_key"] != layers[1]["atlas_key"]

    # Every unit rendered exactly once, each batch of one layer.
    items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
    assert len(items) == 12 and all(i["state"] == "done" for i in items)
    made = renders_made(http, job["id"])
    assert all(made[i["key"]] == 1 for i in items) and sum(made.values()) == 12
    layer_of = {i["key"]: i["png"].split("/")[2] for i in items}  # renders/<model>/<layer>/<unit>/<key>.png
    per_batch: dict[str, set[str]] = defaultdict(set)
    for e in events(http, job["id"]):
        if e["type"] == "unit_rendered":
            per_batch[e["batch"]].add(layer_of[e["key"]])
    assert len(per_batch) == 4 and all(len(v) == 1 for v in per_batch.values()), per_batch

    # One atlas per layer: content-addressed, and under the job's name; no job-wide atlas.
    keys = set(bucket_keys(stack))
    for x in layers:
        assert {f"atlases/{x['atlas_key']}.png", f"atlases/{x['atlas_key']}.json"} <= keys
        assert {f"jobs/{job['id']}/atlases/{x['layer']}.png", f"jobs/{job['id']}/atlases/{x['layer']}.json"} <= keys
    assert f"jobs/{job['id']}/atlas.png" not in keys and f"jobs/{job['id']}.json" in keys
    logits = httpx.get(layers[1]["atlas_manifest_url"]).json()
    assert [t["label"] for t in logits["tiles"]] == ["tench", "goldfish", "great white shark", "tiger shark",
                                                     "hammerhead", "electric ray"]  # fmt: skip
    conv = httpx.get(layers[0]["atlas_manifest_url"]).json()
    assert [t["unit"] for t in conv["tiles"]] == list(range(6)) and conv["atlas_key"] == layers[0]["atlas_key"]

    # `dreamfarm status` shows each layer; `dreamfarm fetch` downloads each layer's atlas.
    shown = _cli(stack, "status", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert "conv1 (conv1)  100%  units 6: 6 done" in shown.stdout and "logits (fc)  100%" in shown.stdout
    out = tmp_path / "fetched"
    fetched = _cli(stack, "fetch", job["id"], "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert len(list(out.glob("renders/resnet18/*/*/*.png"))) == 12
    for name in ("conv1", "logits"):
        assert (out / "atlases" / f"{name}.png").stat().st_size > 500
        manifest = json.loads((out / "atlases" / f"{name}.json").read_text())
        assert manifest["atlas_key"] == next(x["atlas_key"] for x in layers if x["layer"] == name)
    assert not (out / "atlas.png").exists()

    # The same job from the CLI (`submit --layers`): every unit is in the bucket, nothing is enqueued.
    before = queue_length(stack)
    again = _cli(stack, "submit", "--model", "resnet18", "--layers", "conv1,logits", "--units", "0-5", "--steps",
                 "2", "--size", "32", "--random-weights", "--precision", "float32", "--batch-size", "4")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "12 units, 12 cached, 0 batches enqueued" in again.stderr and queue_length(stack) == before
    cached = http.get(f"/v1/jobs/{again.stdout.strip()}").json()
    assert cached["state"] == "done" and [(x["cached"], x["progress"]) for x in cached["layers"]] == [(6, 1.0)] * 2


def test_a_single_layer_job_answers_as_before(stack: LocalStack, http: httpx.Client) -> None:
    body = {**BODY, "layer": "conv1", "units": [10, 11]}
    del body["layers"]
    job = http.post("/v1/jobs", json=body).json()
    status = wait_for(http, job["id"])
    assert status["state"] == "done" and status["layers"] is None and "layers" not in status["request"]
    keys = set(bucket_keys(stack))
    assert {f"jobs/{job['id']}/atlas.png", f"jobs/{job['id']}/atlas.json"} <= keys
    assert not any(k.startswith(f"jobs/{job['id']}/atlases/") for k in keys)
