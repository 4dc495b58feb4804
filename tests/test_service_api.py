"""The API over real HTTP against real Redis and SeaweedFS, with no worker
running: planning, validation, auth, and what gets enqueued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import LocalStack
from tests.service_helpers import client, queue_length, small_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), workers=0) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["status"] == "ready"


def test_models_are_listed_without_weights(http: httpx.Client) -> None:
    names = [m["name"] for m in http.get("/v1/models").json()]
    assert "efficientnet_lite0" in names and "vgg16" in names
    vgg = http.get("/v1/models/vgg16").json()
    aliases = {a: layer["path"] for layer in vgg["layers"] for a in layer["aliases"]}
    assert aliases["conv13"] == "features.28" and aliases["logits"] == "classifier.6"
    assert vgg["classes"][700] == "paper towel"
    assert http.get("/v1/models/nope").status_code == 404


def test_all_1000_classes_are_planned_fast_as_batches(stack: LocalStack, http: httpx.Client) -> None:
    before = queue_length(stack)
    t = time.perf_counter()
    r = http.post("/v1/jobs", json={"model": "efficientnet_lite0", "layer": "logits", "units": "all",
                                    "batch_size": 64})  # fmt: skip
    elapsed = time.perf_counter() - t
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["units"] == 1000 and body["cached"] == 0
    assert body["enqueued_batches"] == 16  # ceil(1000 / 64) tasks, not 1000
    assert queue_length(stack) - before == 16
    assert elapsed < 10  # generous; bench/service_throughput.py measures it
    status = http.get(f"/v1/jobs/{body['id']}").json()
    assert status["state"] == "queued" and status["totals"]["pending"] == 1000
    page = http.get(f"/v1/jobs/{body['id']}/renders", params={"offset": 990, "limit": 50}).json()
    assert [i["unit"] for i in page["items"]] == list(range(990, 1000)) and page["next_offset"] is None
    assert page["items"][0]["png_url"] is None  # not rendered yet
    # Cancelling leaves the queued batches to be skipped by workers.
    assert http.delete(f"/v1/jobs/{body['id']}").json()["state"] == "cancelled"


BAD = [
    ({"model": "vgg17", "layer": "logits", "units": [1]}, "unknown model"),
    ({"model": "vgg16", "layer": "conv99", "units": [1]}, "valid layers"),
    ({"model": "vgg16", "layer": "logits", "units": [1000]}, "valid units are 0-999"),
    ({"model": "vgg16", "layer": "conv4", "units": [128]}, "valid units are 0-127"),
    ({"model": "vgg16", "layer": "logits", "units": ["not a class"]}, "unknown class name"),
    ({"model": "vgg16", "layer": "logits", "units": [1], "prior": [{"name": "blur"}]}, "prior"),
    ({"model": "vgg16", "layer": "logits", "units": [1], "steps": 0}, "steps"),
    ({"model": "vgg16", "layer": "logits", "units": []}, "at least one unit"),
    ({"model": "vgg16", "layer": "logits"}, "units"),
    ({"model": "../../etc", "layer": "logits", "units": [1]}, "model"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_requests_are_refused_and_nothing_is_enqueued(
    stack: LocalStack, http: httpx.Client, body: dict[str, object], message: str
) -> None:
    before = queue_length(stack)
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert queue_length(stack) == before


def test_writes_need_the_token(stack: LocalStack) -> None:
    before = queue_length(stack)
    for token in (None, "wrong"):
        with client(stack, token=token) as c:
            r = c.post("/v1/jobs", json=small_job([1]))
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.get("/v1/models").status_code == 200  # reads are open unless protect_reads is set
    assert queue_length(stack) == before


def test_unknown_and_malformed_job_ids(http: httpx.Client) -> None:
    assert http.get("/v1/jobs/0123456789abcdef").status_code == 404
    assert http.get("/v1/jobs/..%2F..%2Fetc").status_code == 404


def test_recipes_are_listed_with_their_fields(http: httpx.Client) -> None:
    listing = {r["name"]: r for r in http.get("/v1/recipes").json()}
    assert list(listing) == ["lecture", "lucid", "vivid", "maco", "adversarial"]
    assert listing["lecture"]["fields"]["prior"] == [{"name": "edge_energy", "weight": 1.0}]
    assert listing["lucid"]["fields"]["param"]["name"] == "fourier"
    assert listing["adversarial"]["fields"]["epsilon"] == pytest.approx(8 / 255)


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_uploaded_image_starts_an_adversarial_job(stack: LocalStack, http: httpx.Client) -> None:
    data = _png()
    r = http.post("/v1/images", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    stored = r.json()
    assert (stored["width"], stored["height"], stored["bytes"]) == (40, 30, len(data))
    assert http.post("/v1/images", content=data, headers={"Content-Type": "image/png"}).json() == stored  # same key
    before = queue_length(stack)
    job = http.post("/v1/jobs", json=small_job(["paper towel"], recipe="adversarial", init_image=stored["key"]))
    assert job.status_code == 202, job.text
    assert queue_length(stack) == before + 1
    request = http.get(f"/v1/jobs/{job.json()['id']}").json()
    assert request["recipe"] == "adversarial" and request["request"]["init_image"] == stored["key"]
    assert (
        http.post(
            "/v1/images", content=data, headers={"Content-Type": "image/png", "Authorization": "Bearer nope"}
        ).status_code
        == 401
    )


def test_an_atlas_is_rebuilt_only_for_a_finished_job(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json=small_job([7])).json()
    r = http.post(f"/v1/jobs/{job['id']}/atlas")
    assert r.status_code == 409 and "only a finished job" in r.json()["detail"]
    assert http.post("/v1/jobs/0123456789abcdef/atlas").status_code == 404
