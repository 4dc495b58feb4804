"""Users' own networks: registered over HTTP, their weights uploaded, listed,
rendered by name and deleted, per tenant; and every bad input refused with a
one-line 4xx that leaves the bucket and Redis as they were.

The first tests check `service.zoo.registered` alone (no stack); the rest run
against the real stack (the API as its own process, real Redis, real
SeaweedFS) with no worker: tests/test_registered_e2e.py renders one."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import torch
import torchvision
from safetensors.torch import save_file

from devstack import LocalStack
from service.errors import BadRegistration, BadWeights, NameTaken
from service.spec import RenderSpec
from service.zoo import Registry
from service.zoo.registered import (
    ModelRegistration,
    check_registration,
    check_weights,
    entry_of,
    registration_from,
    weights_format,
)
from tests.service_helpers import bucket_keys, client, queue_length

CLASSES = ["circle", "square", "stripes", "dots"]
TOKENS = {"acme": "acme-token-0123456789", "umbrella": "umbrella-token-0123456789"}
LIMIT = 50 * 1024 * 1024  # resnet18(num_classes=4) is 44.8 MB


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("weights")
    save_file(_net(0).state_dict(), str(d / "a.safetensors"))
    torch.save(_net(1).state_dict(), d / "b.pt")
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), d / "five.pt")
    (d / "junk.bin").write_bytes(b"this is no tensor archive, only some words " * 100)
    return {p.stem: p for p in d.iterdir()}


class _Payload:
    """A pickle whose loading would call os.system: creating a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _pickle_with_code(path: Path, marker: Path) -> Path:
    # protocol 2, as torch.save writes: the restricted unpickler reads the
    # opcodes, reaches the global (posix.system) and refuses it, calling nothing.
    path.write_bytes(pickle.dumps({"fc.weight": _Payload(marker)}, protocol=2))
    return path


# --- service.zoo.registered, without a stack ---------------------------------


def test_a_registration_is_resolved_from_the_architecture() -> None:
    reg = registration_from({"name": "shapes", "arch": "torchvision:resnet18", "kwargs": {"num_classes": 4}})
    m = check_registration(reg, Registry(), tenant="acme")
    assert m.classes == ["class 0", "class 1", "class 2", "class 3"] and m.size == 224 and m.tenant == "acme"
    assert m.mean == (0.485, 0.456, 0.406) and m.state == "awaiting_weights" and m.weights_sha256 is None
    vit = check_registration(ModelRegistration(name="v", arch="timm:vit_tiny_patch16_224", kwargs={"num_classes": 3},
                                               classes=["a", "b", "c"]), Registry())  # fmt: skip
    assert vit.size == 224 and vit.mean == (0.5, 0.5, 0.5) and vit.classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("body", "error", "field", "words"),
    [
        ({"arch": "torchvision:resnet19"}, BadRegistration, "arch", "did you mean torchvision:resnet18"),
        ({"arch": "timm:convnext_tinny"}, BadRegistration, "arch", "timm:convnext_tiny"),
        ({"kwargs": {"num_clases": 4}}, BadRegistration, "kwargs", "unexpected keyword argument 'num_clases'"),
        ({"kwargs": {"num_classes": 4}, "classes": ["a", "b"]}, BadRegistration, "classes", "output has 4"),
        ({"name": "resnet18"}, NameTaken, "name", "built-in"),
    ],
)
def test_a_bad_registration_names_its_problem(body: dict[str, Any], error: type, field: str, words: str) -> None:
    reg = ModelRegistration(**{"name": "mine", "arch": "torchvision:resnet18", **body})
    with pytest.raises(error) as exc:
        check_registration(reg, Registry())
    assert exc.value.field == field and words in str(exc.value) and "\n" not in str(exc.value)


def test_weights_are_checked_against_the_network(files: dict[str, Path], tmp_path: Path) -> None:
    m = check_registration(ModelRegistration(name="shapes", arch="torchvision:resnet18", kwargs={"num_classes": 4}),
                           Registry())  # fmt: skip
    sha, n = check_weights(m, files["a"])
    assert sha == hashlib.sha256(files["a"].read_bytes()).hexdigest() and n == files["a"].stat().st_size
    assert weights_format(files["a"]) == "safetensors" and weights_format(files["b"]) == "torch"
    check_weights(m, files["b"])
    with pytest.raises(BadWeights, match=r"2 mis-shaped: fc.weight \[5, 512\] \(expected \[4, 512\]\)"):
        check_weights(m, files["five"])
    with pytest.raises(BadWeights, match="not a tensor archive"):
        check_weights(m, files["junk"])
    marker = tmp_path / "ran"
    with pytest.raises(BadWeights, match="refused unread"):
        check_weights(m, _pickle_with_code(tmp_path / "evil.pt", marker))
    assert not marker.exists()
    entry = entry_of(m.with_weights(sha, n, "safetensors"))
    assert entry.source == "registered" and entry.weights.sha256 == sha and entry.classes[0] == "class 0"


def test_a_spec_of_a_built_in_keeps_its_key() -> None:
    spec = RenderSpec(model="vgg16", layer="classifier.6", kind="logit", unit=700)
    assert "weights_sha256" not in spec.content()
    other = spec.model_copy(update={"weights_sha256": "a" * 64})
    assert other.key() != spec.key() and other.batch_key() != spec.batch_key()


# --- over HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"DREAMFARM_API_TOKENS": json.dumps(TOKENS), "DREAMFARM_MAX_WEIGHTS_BYTES": str(LIMIT)}
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), workers=0, extra_env=env) as s:
        yield s


@pytest.fixture
def acme(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack, token=TOKENS["acme"]) as c:
        yield c


@pytest.fixture
def umbrella(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack, token=TOKENS["umbrella"]) as c:
        yield c


def _state(stack: LocalStack) -> tuple[list[str], list[str]]:
    """Every bucket key and every Redis key (with the list lengths the jobs use)."""
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    keys = sorted(f"{k}:{r.llen(k) if r.type(k) == 'list' else ''}" for k in r.scan_iter("*"))
    return sorted(bucket_keys(stack)), keys


def _register(http: httpx.Client, name: str, **body: Any) -> httpx.Response:
    return http.post("/v1/models", json={"name": name, "arch": "torchvision:resnet18", "kwargs": {"num_classes": 4},
                                         "classes": CLASSES, **body})  # fmt: skip


def _upload(http: httpx.Client, name: str, data: bytes, sha: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if sha is not None:
        headers["X-Content-SHA256"] = sha
    return http.put(f"/v1/models/{name}/weights", content=data, headers=headers)


def _job(model: str, **kw: Any) -> dict[str, Any]:
    return {"model": model, "layer": "logits", "units": [0, 1], "steps": 2, "size": 32, "precision": "float32", **kw}


def test_register_upload_list_and_render_by_name(stack: LocalStack, acme: httpx.Client, umbrella: httpx.Client,
                                                 files: dict[str, Path]) -> None:  # fmt: skip
    r = _register(acme, "shapes", description="four synthetic shapes")
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["state"] == "awaiting_weights" and m["classes"] == CLASSES and m["tenant"] == "acme"
    assert [k for k in bucket_keys(stack) if k.startswith(("models/", "weights/"))] == ["models/shapes/manifest.json"]
    listed = {x["name"]: x for x in acme.get("/v1/models").json()}
    assert listed["shapes"]["source"] == "registered" and listed["shapes"]["state"] == "awaiting_weights"
    assert listed["shapes"]["description"] == "four synthetic shapes" and listed["vgg16"]["source"] == "torchvision"

    # Without weights a job is refused, saying so; with random weights it may run.
    before = queue_length(stack)
    refused = acme.post("/v1/jobs", json=_job("shapes"))
    assert refused.status_code == 409 and "no weights yet" in refused.json()["detail"]
    assert queue_length(stack) == before

    data = files["a"].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    up = _upload(acme, "shapes", data, sha)
    assert up.status_code == 200, up.text
    assert up.json()["state"] == "ready" and up.json()["weights_sha256"] == sha
    assert up.json()["weights_bytes"] == len(data) and up.json()["weights_format"] == "safetensors"
    assert f"weights/{sha}" in bucket_keys(stack)

    detail = acme.get("/v1/models/shapes").json()
    assert detail["classes"] == CLASSES and detail["source"] == "registered" and detail["weights_sha256"] == sha
    assert {a for x in detail["layers"] for a in x["aliases"]} >= {"logits", "conv1", "stage1"}

    job = acme.post("/v1/jobs", json=_job("shapes", units=["square", "dots"]))
    assert job.status_code == 202, job.text
    items = acme.get(f"/v1/jobs/{job.json()['id']}/renders").json()["items"]
    assert [(i["unit"], i["label"]) for i in items] == [(1, "square"), (3, "dots")]
    assert all(i["png"].startswith("renders/shapes/fc/") for i in items)
    first_keys = {i["key"] for i in items}
    acme.delete(f"/v1/jobs/{job.json()['id']}")

    # Other weights: other keys (nothing stale), and the old object stays for jobs planned with it.
    data_b = files["b"].read_bytes()
    up_b = _upload(acme, "shapes", data_b)
    assert up_b.status_code == 200 and up_b.json()["weights_format"] == "torch"
    job_b = acme.post("/v1/jobs", json=_job("shapes", units=["square", "dots"])).json()
    items_b = acme.get(f"/v1/jobs/{job_b['id']}/renders").json()["items"]
    assert {i["key"] for i in items_b}.isdisjoint(first_keys) and job_b["cached"] == 0
    acme.delete(f"/v1/jobs/{job_b['id']}")

    # Another tenant: not listed, not found, not renderable.
    assert "shapes" not in {x["name"] for x in umbrella.get("/v1/models").json()}
    assert umbrella.get("/v1/models/shapes").status_code == 404
    unknown = umbrella.post("/v1/jobs", json=_job("shapes"))
    assert unknown.status_code == 422 and "unknown model 'shapes'" in unknown.json()["detail"]
    assert _upload(umbrella, "shapes", data).status_code == 404
    assert umbrella.delete("/v1/models/shapes").status_code == 404
    # Without a token (reads are open): only public networks.
    with client(stack, token=None) as anon:
        assert "shapes" not in {x["name"] for x in anon.get("/v1/models").json()}


def test_a_public_network_is_seen_and_rendered_by_all_but_changed_by_its_owner(
    stack: LocalStack, acme: httpx.Client, umbrella: httpx.Client, files: dict[str, Path]
) -> None:
    assert _register(acme, "open_shapes", public=True).status_code == 201
    assert _upload(acme, "open_shapes", files["a"].read_bytes()).status_code == 200
    assert umbrella.get("/v1/models/open_shapes").json()["classes"] == CLASSES
    with client(stack, token=None) as anon:
        assert "open_shapes" in {x["name"] for x in anon.get("/v1/models").json()}
    job = umbrella.post("/v1/jobs", json=_job("open_shapes"))
    assert job.status_code == 202, job.text
    umbrella.delete(f"/v1/jobs/{job.json()['id']}")
    assert _upload(umbrella, "open_shapes", files["b"].read_bytes()).status_code == 403
    assert umbrella.delete("/v1/models/open_shapes").status_code == 403


def test_delete_is_refused_while_jobs_run_then_removes_everything(
    stack: LocalStack, acme: httpx.Client, umbrella: httpx.Client, files: dict[str, Path]
) -> None:
    assert _register(acme, "doomed", public=True).status_code == 201
    data = files["b"].read_bytes()
    assert _upload(acme, "doomed", data).status_code == 200
    sha = hashlib.sha256(data).hexdigest()
    job = umbrella.post("/v1/jobs", json=_job("doomed")).json()  # another tenant's job counts too
    before = _state(stack)
    busy = acme.delete("/v1/models/doomed")
    assert busy.status_code == 409 and job["id"] in busy.json()["detail"]
    assert _state(stack) == before
    umbrella.delete(f"/v1/jobs/{job['id']}")
    assert acme.delete("/v1/models/doomed").status_code == 204
    keys = bucket_keys(stack)
    assert "models/doomed/manifest.json" not in keys
    assert f"weights/{sha}" in keys  # "shapes" uses the same file
    assert acme.get("/v1/models/doomed").status_code == 404
    assert acme.delete("/v1/models/doomed").status_code == 404


BAD_REGISTRATIONS = [
    ({"arch": "torchvision:resnet19"}, 422, "did you mean torchvision:resnet18"),
    ({"arch": "resnet18"}, 422, "arch"),
    ({"kwargs": {"num_classes": 4, "zero_init": True}}, 422, "unexpected keyword argument 'zero_init'"),
    ({"kwargs": {"weights": "IMAGENET1K_V1"}}, 422, "weights may not be given"),
    ({"kwargs": {"num_classes": {"a": 1}}}, 422, "kwargs"),
    ({"classes": ["a", "b", "c"]}, 422, "3 class names"),
    ({"classes": ["a", "a", "b", "c"]}, 422, "distinct"),
    ({"name": "resnet18"}, 409, "built-in"),
    ({"name": "Bad-Name"}, 422, "name"),
    ({"mean": [0.5, 0.5]}, 422, "mean"),
    ({"size": 8}, 422, "size"),
]


@pytest.mark.parametrize(("changes", "status", "words"), BAD_REGISTRATIONS)
def test_a_bad_registration_is_one_line_and_stores_nothing(
    stack: LocalStack, acme: httpx.Client, changes: dict[str, Any], status: int, words: str
) -> None:
    before = _state(stack)
    r = _register(acme, changes.pop("name", "refused"), **changes)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert _state(stack) == before


def test_a_name_another_tenant_has_is_refused(stack: LocalStack, acme: httpx.Client, umbrella: httpx.Client) -> None:
    assert _register(umbrella, "taken").status_code == 201
    before = _state(stack)
    r = _register(acme, "taken")
    assert r.status_code == 409 and "'taken' is taken" in r.json()["detail"] and "tenant" not in r.json()["detail"]
    again = _register(umbrella, "taken")
    assert again.status_code == 409 and "you have" in again.json()["detail"]
    assert _state(stack) == before


def test_bad_weights_are_refused_and_nothing_is_stored(
    stack: LocalStack, acme: httpx.Client, files: dict[str, Path], tmp_path: Path
) -> None:
    assert _register(acme, "picky").status_code == 201
    marker = tmp_path / "code-ran"
    good = files["a"].read_bytes()
    cases: list[tuple[bytes, str | None, int, str]] = [
        (files["five"].read_bytes(), None, 422, "2 mis-shaped: fc.weight [5, 512] (expected [4, 512])"),
        (files["junk"].read_bytes(), None, 422, "not a tensor archive"),
        (_pickle_with_code(tmp_path / "evil.pt", marker).read_bytes(), None, 422, "refused unread"),
        (good[: len(good) // 2], hashlib.sha256(good).hexdigest(), 400, "truncated"),
        (good, "0" * 64, 400, "X-Content-SHA256 says 0000"),
        (good, "not-a-sha", 422, "64 lowercase hex"),
        (b"", None, 422, "no weights in the body"),
    ]
    for data, sha, status, words in cases:
        before = _state(stack)
        r = _upload(acme, "picky", data, sha)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert _state(stack) == before, words
    assert not marker.exists()
    assert acme.get("/v1/models/picky").json()["state"] == "awaiting_weights"

    # Over the limit: refused by its declared length, and streamed without one.
    before = _state(stack)
    big = _upload(acme, "picky", b"\0" * (LIMIT + 1))
    assert big.status_code == 413 and "limit" in big.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    streamed = acme.put(
        "/v1/models/picky/weights", content=chunks(), headers={"Content-Type": "application/octet-stream"}
    )
    assert streamed.status_code == 413 and "DREAMFARM_MAX_WEIGHTS_BYTES" in streamed.json()["detail"]
    assert _state(stack) == before

    # A reference to the bucket: a missing object, then one that is there.
    missing = acme.put("/v1/models/picky/weights", json={"key": "uploads/acme/nothing-here"})
    assert missing.status_code == 422 and "no object" in missing.json()["detail"]
    # Another tenant's objects (a job's record here) cannot be named: refused as if missing.
    theirs = acme.put("/v1/models/picky/weights", json={"key": "jobs/0123456789abcdef.json"})
    assert theirs.status_code == 422 and theirs.json()["detail"].startswith("no object")
    assert _state(stack) == before
    sha = hashlib.sha256(good).hexdigest()
    assert f"weights/{sha}" in before[0]  # uploaded by an earlier test
    by_key = acme.put("/v1/models/picky/weights", json={"key": f"weights/{sha}"})
    assert by_key.status_code == 200 and by_key.json()["weights_sha256"] == sha


def test_layers_and_units_a_registered_network_lacks(stack: LocalStack, acme: httpx.Client,
                                                     files: dict[str, Path]) -> None:  # fmt: skip
    assert _register(acme, "small").status_code == 201
    assert _upload(acme, "small", files["a"].read_bytes()).status_code == 200
    before = _state(stack)
    for body, words in [
        (_job("small", units=[4]), "valid units are 0-3"),
        (_job("small", units=["cat"]), "unknown class name 'cat'"),
        (_job("small", layer="features.3"), "valid layers"),
        (_job("small", layer="conv99"), "valid layers"),
    ]:
        r = acme.post("/v1/jobs", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert _state(stack) == before


def test_an_argument_a_constructor_would_swallow_is_refused() -> None:
    """torchvision's MobileNetV3 takes **kwargs and drops what it does not
    know: `no_such_argument` would be ignored without a word, so it is refused."""
    reg = ModelRegistration(name="mobile3", arch="torchvision:mobilenet_v3_small",
                            kwargs={"num_classes": 3, "no_such_argument": 1})  # fmt: skip
    with pytest.raises(BadRegistration, match="no argument 'no_such_argument'"):
        check_registration(reg, Registry())
    ok = ModelRegistration(name="mobile3", arch="torchvision:mobilenet_v3_small", kwargs={"num_classes": 3})
    assert len(check_registration(ok, Registry()).classes) == 3
