"""A registered network rendered through the whole service: registered and
its weights uploaded over HTTP, rendered by a real Celery worker that fetches
the weights from the bucket by their sha256, filed in SeaweedFS with its own
class names and weights' hash in every sidecar; other weights give other
keys. A public registered network judges every render (DREAMFARM_JUDGES).
Random weights, few steps, small images: seconds on a 2-core CPU."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from devstack import LocalStack
from tests.service_helpers import bucket_keys, client, renders_made, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLASSES = ["circle", "square", "stripes", "dots"]


def _weights(path: Path, seed: int, safetensors: bool) -> bytes:
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(num_classes=4).state_dict()
    if safetensors:
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    env = {"DREAMFARM_WEIGHTS_CACHE_DIR": str(root / "weights-cache"), "DREAMFARM_JUDGES": '["judge_shapes"]'}
    with LocalStack(root, workers=1, extra_env=env) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def _register(http: httpx.Client, name: str, data: bytes, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/models", json={"name": name, "arch": "torchvision:resnet18", "kwargs": {"num_classes": 4},
                                      "classes": CLASSES, "size": 32, **body})  # fmt: skip
    assert r.status_code == 201, r.text
    return _upload(http, name, data)


def _upload(http: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    up = http.put(f"/v1/models/{name}/weights", content=data,
                  headers={"Content-Type": "application/octet-stream", "X-Content-SHA256": sha})  # fmt: skip
    assert up.status_code == 200, up.text
    manifest: dict[str, Any] = up.json()
    return manifest


JOB = {"model": "shapes", "layer": "logits", "units": "all", "steps": 3, "precision": "float32", "recipe": "lucid"}


def _render(http: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r = http.post("/v1/jobs", json=JOB)
    assert r.status_code == 202, r.text
    status = wait_for(http, r.json()["id"])
    assert status["state"] == "done", status
    items = http.get(f"/v1/jobs/{status['id']}/renders").json()["items"]
    return status, items


def test_a_registered_network_renders_with_its_classes_and_weights(
    stack: LocalStack, http: httpx.Client, tmp_path: Path
) -> None:
    a = _weights(tmp_path / "a.safetensors", 0, safetensors=True)
    _register(http, "judge_shapes", a, public=True)
    first = _register(http, "shapes", a, description="four shapes")
    sha_a = first["weights_sha256"]
    assert http.get("/v1/models/shapes").json()["input_size"] == 32

    status, items = _render(http)
    assert status["totals"]["done"] == 4 and [i["label"] for i in items] == CLASSES
    assert all(n == 1 for n in renders_made(http, status["id"]).values())
    for item in items:
        side = httpx.get(item["sidecar_url"]).json()
        assert side["classes"] == CLASSES and side["weights_sha256"] == sha_a
        assert side["spec"]["weights_sha256"] == sha_a and side["spec"]["model"] == "shapes"
        assert side["label"] == item["label"] and not side["random_weights"]
        assert side["quality"]["renderer"]["top5"][0]["label"] in CLASSES
        assert [j["model"] for j in side["quality"]["judges"]] == ["judge_shapes"]
    manifest = httpx.get(status["atlas_manifest_url"]).json()
    assert [t["label"] for t in manifest["tiles"]] == CLASSES

    # The gallery lists it, with its description, to its owner only (reads are open here: by token).
    assert "four shapes" in http.get("/gallery").text
    with client(stack, token=None) as anon:
        assert "four shapes" not in anon.get("/gallery").text and anon.get("/gallery/shapes").status_code == 404

    # The same job again: every render is in the bucket already.
    again = http.post("/v1/jobs", json=JOB).json()
    assert again["cached"] == 4 and again["enqueued_batches"] == 0

    # Other weights under the same name: other keys, rendered anew.
    b = _weights(tmp_path / "b.pt", 1, safetensors=False)
    assert _upload(http, "shapes", b)["weights_sha256"] != sha_a
    status_b, items_b = _render(http)
    assert status_b["totals"]["cached"] == 0 and status_b["totals"]["done"] == 4
    assert {i["key"] for i in items_b}.isdisjoint({i["key"] for i in items})
    side_b = httpx.get(items_b[0]["sidecar_url"]).json()
    assert side_b["weights_sha256"] == hashlib.sha256(b).hexdigest() == side_b["spec"]["weights_sha256"]
    keys = bucket_keys(stack)
    assert {f"weights/{sha_a}", f"weights/{side_b['weights_sha256']}", "models/shapes/manifest.json"} <= set(keys)
    # Fetched into the worker's cache once each, under the format they are read as.
    cache = stack.root / "weights-cache" / "registered"
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"{sha_a}.safetensors",
                                                              f"{side_b['weights_sha256']}.pt"])  # fmt: skip
