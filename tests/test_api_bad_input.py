"""Bad input is refused at the API with a 4xx whose one-line `detail` names
the problem, and it changes nothing: the queue, the job records and the
bucket stay as they were. Against the real stack (real Redis, real SeaweedFS,
the API as its own process) with no worker, and tighter server limits than
the defaults so that the limits themselves are tested."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis

from devstack import LocalStack
from tests.service_helpers import client, queue_length, small_job

pytestmark = pytest.mark.integration

LIMITS = {"DREAMFARM_MAX_UNITS_PER_JOB": "50", "DREAMFARM_MAX_STEPS": "1000", "DREAMFARM_MAX_SIZE": "256",
          "DREAMFARM_MAX_IMAGE_BYTES": "200000"}  # fmt: skip


def _gif() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    return buf.getvalue()


GIF = _gif()
BODY_LIMIT = 64 * 1024  # the default DREAMFARM_MAX_BODY_BYTES


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), workers=0, extra_env=LIMITS) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def job(**changes: Any) -> dict[str, Any]:
    """A valid job (VGG16's 'paper towel' logit), with some fields changed;
    a value of `...` removes the field."""
    body: dict[str, Any] = {"model": "vgg16", "layer": "logits", "units": [700], "steps": 3, "size": 64}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def raw(text: str) -> bytes:
    return text.encode()


@dataclass
class Bad:
    """One malformed request: what to send, the status and the words the
    `detail` must contain."""

    name: str
    body: dict[str, Any] | list[Any] | str | bytes | None = None
    status: int = 422
    says: tuple[str, ...] = ()
    method: str = "POST"
    path: str = "/v1/jobs"
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, http: httpx.Client) -> httpx.Response:
        headers = {"content-type": "application/json", **self.headers}
        if isinstance(self.body, bytes):
            content = self.body
        elif self.body is None:
            content = b""
        else:  # Python's json: NaN and Infinity as tokens, lone surrogates as \ud800 escapes
            content = json.dumps(self.body).encode()
        return http.request(self.method, self.path, content=content, headers=headers, params=self.params)


NAN, INF = math.nan, math.inf
LONG = "x" * (BODY_LIMIT + 1000)
NO_JOB = "/v1/jobs/0123456789abcdef"

BAD = [
    # Wrong types.
    Bad("model-not-a-string", job(model=16), says=("model", "valid string")),
    Bad("layer-a-list", job(layer=["logits"]), says=("layer",)),
    Bad("units-a-word", job(units="some"), says=("units",)),
    Bad("units-range-of-strings", job(units={"start": "a", "stop": 3}), says=("units",)),
    Bad("steps-a-word", job(steps="many"), says=("steps", "valid integer")),
    Bad("lr-a-word", job(lr="fast"), says=("lr", "valid number")),
    Bad("size-a-fraction", job(size=64.5), says=("size", "valid integer")),
    Bad("random-weights-not-bool", job(random_weights="maybe"), says=("random_weights",)),
    Bad("prior-not-a-list", job(prior="edge_energy"), says=("prior",)),
    Bad("position-one-number", job(layer="conv13", kind="neuron", units=[1], position=[1]), says=("position",)),
    Bad("body-an-array", [job()], says=("body", "JSON object", "array")),
    Bad("body-a-string", "vgg16", says=("body", "JSON object", "string")),
    Bad("body-null", raw("null"), says=("body", "JSON object")),
    # Missing fields, missing body, not JSON.
    Bad("no-model", job(model=...), says=("model", "Field required")),
    Bad("no-layer", job(layer=...), says=("layer", "Field required")),
    Bad("no-units", job(units=...), says=("units", "Field required")),
    Bad("empty-object", {}, says=("model", "layer", "units")),
    Bad("empty-body", None, says=("body", "JSON object is required")),
    Bad("truncated-json", raw('{"model": "vgg16", '), says=("body", "not valid JSON")),
    Bad("json-comment", raw('{"model": "vgg16" /* hi */}'), says=("not valid JSON",)),
    Bad("not-utf8", b'{"model": "\xff\xfe"}', status=400, says=("could not be parsed",)),
    Bad("nested-too-deep", raw("[" * 20000 + "]" * 20000), status=400, says=("could not be parsed",)),
    Bad("text-plain", json.dumps(job()).encode(), headers={"content-type": "text/plain"}, says=("Content-Type",)),
    # Unknown model, layer, prior, class, kind, precision, field.
    Bad("unknown-model", job(model="vgg17"), says=("unknown model 'vgg17'", "valid models:", "vgg16")),
    Bad("model-in-capitals", job(model="VGG16"), says=("model", "valid models:", "vgg16")),
    Bad("unknown-layer", job(layer="conv99"), says=("unknown layer 'conv99'", "valid layers", "conv13")),
    Bad("unknown-prior", job(prior=[{"name": "blur"}]), says=("prior.0.name", "'edge_energy'", "'tv'")),
    Bad("unknown-class", job(units=["not a class"]), says=("unknown class name 'not a class'",)),
    Bad("misspelt-class", job(units=["paper towels"]), says=("did you mean", "'paper towel'")),
    Bad("unknown-kind", job(kind="pixel"), says=("kind", "'logit'", "'channel'", "'neuron'")),
    Bad("unknown-precision", job(precision="float64"), says=("precision", "'float32'")),
    Bad("unknown-field", job(colour="red"), says=("colour", "Extra inputs are not permitted")),
    Bad("unknown-prior-field", job(prior=[{"name": "tv", "scale": 2}]), says=("prior.0.scale",)),
    # Units out of range, or of the wrong kind for the layer.
    Bad("logit-out-of-range", job(units=[1000]), says=("unit 1000 out of range", "valid units are 0-999")),
    Bad("channel-out-of-range", job(layer="conv4", units=[128]), says=("valid units are 0-127",)),
    Bad("unit-negative", job(units=[-1]), says=("units", "greater than or equal to 0")),
    Bad("unit-absurd", job(units=[10**12]), says=("units", "less than or equal to 10000000")),
    Bad("unit-numeric-string", job(units=["-5"]), says=("units", "must be a JSON number")),
    Bad("range-past-the-end", job(units={"start": 990, "stop": 1001}), says=("valid units are 0-999",)),
    Bad("range-empty", job(units={"start": 5, "stop": 5}), says=("empty unit range",)),
    Bad("range-backwards", job(units={"start": 9, "stop": 2}), says=("empty unit range",)),
    Bad("class-name-on-a-conv-layer", job(layer="conv4", units=["paper towel"]), says=("only for class logits",)),
    Bad("channel-kind-on-logits", job(kind="channel"), says=("does not apply to layer logits", "valid kinds: logit")),
    Bad("position-on-logits", job(position=[1, 1]), says=("position applies only to neurons",)),
    Bad("position-off-the-map", job(layer="conv13", kind="neuron", units=[1], position=[99, 3]), says=("outside",)),
    # Negative or absurd numbers.
    Bad("steps-zero", job(steps=0), says=("steps", "greater than or equal to 1")),
    Bad("steps-negative", job(steps=-5), says=("steps",)),
    Bad("steps-absurd", job(steps=10**9), says=("steps", "less than or equal to")),
    Bad("steps-over-server-limit", job(steps=1001), says=("steps 1001 over this server's limit of 1000",)),
    Bad("lr-zero", job(lr=0), says=("lr", "greater than 0")),
    Bad("lr-negative", job(lr=-0.1), says=("lr",)),
    Bad("lr-absurd", job(lr=1e6), says=("lr", "less than or equal to 100")),
    Bad("size-tiny", job(size=8), says=("size", "greater than or equal to 16")),
    Bad("size-absurd", job(size=100_000), says=("size",)),
    Bad("size-over-server-limit", job(size=300), says=("size 300 over this server's limit of 256",)),
    Bad("size-too-small-for-the-network", job(size=16), says=("size 16 does not work for vgg16", "224")),
    Bad("batch-zero", job(batch_size=0), says=("batch_size",)),
    Bad("batch-absurd", job(batch_size=10**6), says=("batch_size",)),
    Bad("seed-negative", job(seed=-1), says=("seed",)),
    Bad("seed-huge", job(seed=2**64), says=("seed",)),
    Bad("init-scale-negative", job(init_scale=-0.1), says=("init_scale",)),
    Bad("prior-weight-negative", job(prior=[{"name": "tv", "weight": -1}]), says=("prior.0.weight",)),
    Bad("prior-weight-absurd", job(prior=[{"name": "tv", "weight": 1e300}]), says=("prior.0.weight",)),
    # NaN and infinities (Python's json writes them as bare tokens).
    Bad("lr-nan-token", raw('{"model": "vgg16", "layer": "logits", "units": [700], "lr": NaN}'), says=("lr", "nan")),
    Bad("lr-infinity-token", raw('{"model": "vgg16", "layer": "logits", "units": [7], "lr": Infinity}'), says=("lr",)),
    Bad("lr-minus-infinity", job(lr=-INF), says=("lr",)),
    Bad("steps-nan", job(steps=NAN), says=("steps",)),
    Bad("size-infinity", job(size=INF), says=("size",)),
    Bad("seed-1e999", raw('{"model": "vgg16", "layer": "logits", "units": [700], "seed": 1e999}'), says=("seed",)),
    Bad("init-scale-infinity", job(init_scale=INF), says=("init_scale",)),
    Bad("prior-weight-nan", job(prior=[{"name": "tv", "weight": NAN}]), says=("prior.0.weight",)),
    Bad("unit-nan", job(units=[NAN]), says=("units",)),
    Bad("position-infinity", job(layer="conv13", kind="neuron", units=[1], position=[INF, 1]), says=("position",)),
    # Duplicates and empty lists.
    Bad("duplicated-unit", job(units=[1, 1]), says=("units listed more than once: [1]",)),
    Bad("duplicated-by-name", job(units=["paper towel", 700]), says=("more than once: [700]",)),
    Bad("duplicated-prior", job(prior=[{"name": "tv"}, {"name": "tv", "weight": 2}]), says=("prior", "once", "tv")),
    Bad("empty-units", job(units=[]), says=("at least one unit",)),
    # Several layers in one job (`layers`): refused naming the layer at fault, limits on the sum.
    Bad("layer-and-layers", job(layers=["conv4"]), says=("layers", "not both")),
    Bad(
        "layers-unknown-layer",
        job(layer=..., layers=["conv4", "conv99"]),
        says=("layers", "unknown layer 'conv99'", "valid layers", "conv13"),
    ),
    Bad(
        "layers-one-layer-twice",
        job(layer=..., layers=["conv4", "features.7"]),
        says=("conv4 and features.7 are the same layer",),
    ),
    Bad("layers-listed-twice", job(layer=..., layers=["conv4", "conv4"]), says=("listed more than once: conv4",)),
    Bad("layers-empty", job(layer=..., layers=[]), says=("layers", "at least 1 item")),
    Bad("layers-a-word", job(layer=..., layers="some"), says=("layers", "'all'")),
    Bad("layers-a-number", job(layer=..., layers=4), says=("layers",)),
    Bad("layers-of-numbers", job(layer=..., layers=[4]), says=("layers", "valid string")),
    Bad("layers-traversal", job(layer=..., layers=["conv1", "../../etc"]), says=("layers", "pattern")),
    Bad(
        "layers-unit-out-of-range-on-one",
        job(layer=..., layers=["logits", "conv1"], units=[100]),
        says=("unit 100 out of range for layer conv1", "valid units are 0-63"),
    ),
    Bad(
        "layers-class-name-on-a-conv-layer",
        job(layer=..., layers=["logits", "conv4"], units=["paper towel"]),
        says=("layer conv4", "only for class logits"),
    ),
    Bad(
        "layers-kind-on-logits",
        job(layer=..., layers=["conv1", "logits"], units=[0], kind="channel"),
        says=("does not apply to layer logits",),
    ),
    Bad(
        "layers-over-the-summed-limit",
        job(layer=..., layers=["conv1", "conv2"], units={"start": 0, "stop": 30}),
        says=("60 units in one job over 2 layers", "the limit is 50"),
    ),
    Bad(
        "layers-all-over-the-limit",
        job(layer=..., layers="all", units="all"),
        says=("units in one job over", "layers; the limit is 50"),
    ),
    # The server's limits.
    Bad("too-many-units-listed", job(layer="conv4", units=list(range(51))), says=("51 units", "limit is 50")),
    Bad("too-many-units-all", job(units="all"), says=("1000 units", "limit is 50")),
    Bad("too-many-units-range", job(units={"start": 0, "stop": 100}), says=("100 units", "limit is 50")),
    Bad("oversized-body", job(title=LONG), status=413, says=("too large", f"limit is {BODY_LIMIT} bytes")),
    # Unicode, path traversal and log-line forgery in every string that could
    # reach a storage key or a log line.
    Bad("model-traversal", job(model="../../etc/passwd"), says=("model", "valid models:")),
    Bad("model-with-slash", job(model="vgg16/../x"), says=("model",)),
    Bad("model-nul", job(model="vgg16\x00"), says=("model",)),
    Bad("model-newline-forgery", job(model="vgg16\nFORGED log line"), says=("model",)),
    Bad("model-fullwidth", job(model="ｖｇｇ16"), says=("model",)),
    Bad("model-lone-surrogate", job(model="vgg\ud80016"), says=("model",)),
    Bad("layer-traversal", job(layer="../../../etc"), says=("layer", "GET /v1/models/{model} lists the layers")),
    Bad("layer-dot-dot", job(layer=".."), says=("unknown layer '..'",)),
    Bad("layer-module-path-traversal", job(layer="features.0/../.."), says=("layer",)),
    Bad("layer-trailing-newline", job(layer="logits\n"), says=("layer",)),
    Bad("layer-newline-forgery", job(layer="logits\nFORGED log line"), says=("layer",)),
    Bad("layer-unicode", job(layer="lögits"), says=("layer",)),
    Bad("class-traversal", job(units=["../../etc/passwd"]), says=("unknown class name '../../etc/passwd'",)),
    Bad("class-newline-forgery", job(units=["paper towel\nFORGED log line"]), says=("units",)),
    Bad("class-bidi-override", job(units=["paper towel\u202e"]), says=("units", "printable", "U+202E")),
    Bad("class-lone-surrogate", job(units=["\ud800"]), says=("units",)),
    Bad("class-too-long", job(units=["x" * 101]), says=("units",)),
    Bad("title-newline-forgery", job(title="t\nFORGED log line"), says=("title",)),
    Bad("title-ansi-escape", job(title="\x1b[31mred"), says=("title",)),
    Bad("title-line-separator", job(title="a\u2028FORGED"), says=("title", "U+2028")),
    Bad("title-lone-surrogate", job(title="\udfff"), says=("title",)),
    Bad("title-too-long", job(title="t" * 201), says=("title", "at most 200")),
    # Recipes and their fields.
    Bad("unknown-recipe", job(recipe="deepdream"), says=("recipe", "'lecture'", "'lucid'")),
    Bad("recipe-not-a-string", job(recipe=["lucid"]), says=("recipe",)),
    Bad("epsilon-over-one", job(recipe="adversarial", epsilon=2.0, init_image="ab" * 32), says=("epsilon",)),
    Bad("epsilon-zero", job(recipe="adversarial", epsilon=0, init_image="ab" * 32), says=("epsilon",)),
    Bad("epsilon-without-an-image", job(recipe="lucid", epsilon=0.03), says=("epsilon", "param 'image'")),
    Bad("samples-zero", job(samples=0), says=("samples", "greater than or equal to 1")),
    Bad("samples-too-many", job(samples=17), says=("samples", "less than or equal to 16")),
    Bad("samples-over-the-unit-limit", job(units=list(range(10)), samples=6), says=("60 renders", "limit is 50")),
    Bad("unknown-transform", job(transforms=[{"name": "shear", "amount": 1}]), says=("transforms.0.name", "'jitter'")),
    Bad("transform-without-amount", job(transforms=[{"name": "jitter"}]), says=("transforms.0.amount",)),
    Bad(
        "transforms-eat-the-image",
        job(size=16, transforms=[{"name": "jitter", "amount": 12}], model="efficientnet_lite0"),
        says=("transforms", "pixel image"),
    ),
    Bad("unknown-param", job(param={"name": "wavelet"}), says=("param.name", "'fourier'", "'maco'")),
    Bad("param-decay-absurd", job(param={"name": "fourier", "decay": 99}), says=("param.decay",)),
    Bad("unknown-direction", job(direction="sideways"), says=("direction", "'max'", "'min'")),
    Bad("diversity-without-samples", job(diversity=5.0), says=("diversity", "samples >= 2")),
    Bad("diversity-layer-not-conv", job(samples=2, diversity_layer="logits"), says=("diversity_layer", "conv")),
    Bad("diversity-layer-unknown", job(samples=2, diversity_layer="conv99"), says=("unknown layer 'conv99'",)),
    Bad("adversarial-without-image", job(recipe="adversarial"), says=("init_image",)),
    Bad("init-image-not-a-key", job(recipe="adversarial", init_image="cat.jpg"), says=("init_image",)),
    Bad(
        "init-image-not-uploaded", job(recipe="adversarial", init_image="ab" * 32), says=("no image", "POST /v1/images")
    ),
    Bad("init-image-without-image-param", job(recipe="lucid", init_image="ab" * 32), says=("init_image", "'image'")),
    # Images.
    Bad(
        "image-as-text",
        b"not an image",
        path="/v1/images",
        headers={"content-type": "image/png"},
        says=("not a readable PNG or JPEG",),
    ),
    Bad("image-a-gif", GIF, path="/v1/images", headers={"content-type": "image/png"}, says=("PNG or JPEG", "GIF")),
    Bad(
        "image-wrong-content-type",
        b"x",
        path="/v1/images",
        headers={"content-type": "text/plain"},
        status=415,
        says=("Content-Type image/png or image/jpeg",),
    ),
    Bad(
        "image-too-large",
        b"\x89PNG" + b"0" * 200_001,
        path="/v1/images",
        headers={"content-type": "image/png"},
        status=413,
        says=("too large", "limit is 200000 bytes"),
    ),
    Bad("image-empty", b"", path="/v1/images", headers={"content-type": "image/jpeg"}, says=("not a readable",)),
    # Other routes.
    Bad("renders-negative-offset", method="GET", path=f"{NO_JOB}/renders", params={"offset": -1}, says=("offset",)),
    Bad("renders-zero-limit", method="GET", path=f"{NO_JOB}/renders", params={"limit": 0}, says=("limit",)),
    Bad("renders-absurd-limit", method="GET", path=f"{NO_JOB}/renders", params={"limit": 10**6}, says=("limit",)),
    Bad("renders-limit-a-word", method="GET", path=f"{NO_JOB}/renders", params={"limit": "x"}, says=("valid integer",)),
    Bad("status-traversal-id", method="GET", path="/v1/jobs/..%2F..%2Fetc%2Fpasswd", status=404, says=("Not Found",)),
    Bad("status-dot-dot-id", method="GET", path="/v1/jobs/..", status=404),
    Bad("status-unknown-id", method="GET", path=NO_JOB, status=404, says=("no job '0123456789abcdef'",)),
    Bad("status-unicode-id", method="GET", path="/v1/jobs/j\u00f6b\u202e", status=404, says=("no job",)),
    Bad("cancel-unknown-id", method="DELETE", path=NO_JOB, status=404, says=("no job",)),
    Bad("cancel-newline-id", method="DELETE", path="/v1/jobs/abc%0AFORGED", status=404, says=("'abc\\nFORGED'",)),
    Bad("retry-unknown-id", method="POST", path=f"{NO_JOB}/retry", status=404, says=("no job",)),
    Bad("model-detail-traversal", method="GET", path="/v1/models/..%2Fetc", status=404, says=("Not Found",)),
    Bad("model-detail-unknown", method="GET", path="/v1/models/vgg17", status=404, says=("valid models: ",)),
    Bad("unknown-route", method="GET", path="/v1/nothing", status=404, says=("Not Found",)),
    Bad("wrong-method", method="PUT", path="/v1/jobs", body=job(), status=405, says=("Method Not Allowed",)),
    # No token: refused before the body is even looked at.
    Bad("bad-body-without-token", job(units=[]), status=401, headers={"authorization": ""}, says=("missing bearer",)),
    Bad("bad-body-wrong-token", job(units=[]), status=401, headers={"authorization": "Bearer x"}, says=("invalid",)),
]


# Strict types, for every field of the body: a boolean is not an integer, a
# float is not an integer, a numeric string is not a number, and a list is not
# a scalar (pydantic's lax mode would accept most of these, `true` as unit 1).
WRONG_TYPES: dict[str, list[Any]] = {
    "model": [True, 16, 1.5, ["vgg16"]],
    "layer": [True, 5, ["logits"]],
    "units": [
        True,
        7,
        7.0,
        "7",
        [True],
        [False],
        [7.0],
        ["7"],
        [[7]],
        [{"unit": 7}],
        {"start": True, "stop": 3},
        {"start": 0.0, "stop": 3},
        {"start": "0", "stop": 3},
        {"start": 0, "stop": [3]},
    ],
    "kind": [True, 1, ["logit"]],
    "position": [[True, 1], [1.0, 1], ["1", 1], [[1], 1], "1,1", 1],
    "prior": [
        [{"name": "tv", "weight": True}],
        [{"name": "tv", "weight": "1"}],
        [{"name": True}],
        [["tv"]],
        [{"name": "tv", "weight": [1]}],
        {"name": "tv"},
    ],
    "steps": [True, 3.0, "3", [3]],
    "lr": [True, "0.1", [0.1]],
    "size": [True, 64.0, "64", [64]],
    "seed": [True, 0.0, "0", [0]],
    "init_scale": [True, "0.01", [0.01]],
    "precision": [True, 1, ["float32"]],
    "random_weights": [1, 0, "true", "false", [True]],
    "batch_size": [True, 4.0, "4", [4]],
    "title": [True, 5, ["t"]],
}
STRICT = [
    Bad(f"strict-{name}-{i}", job(**{name: value}), says=(name,))
    for name, values in WRONG_TYPES.items()
    for i, value in enumerate(values)
]


def _bucket(stack: LocalStack) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=stack.s3.endpoint_url, aws_access_key_id=stack.s3.access_key,
                      aws_secret_access_key=stack.s3.secret_key, region_name="us-east-1")  # fmt: skip
    try:
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dreamfarm")
                for o in page.get("Contents", [])]  # fmt: skip
    except s3.exceptions.NoSuchBucket:
        return []


def _records(stack: LocalStack) -> int:
    return int(redis.Redis.from_url(stack.redis.url).zcard("dreamfarm:jobs"))


def test_the_table_is_big_enough() -> None:
    assert len(BAD) >= 40
    assert len({b.name for b in BAD}) == len(BAD)


@pytest.mark.parametrize("bad", BAD + STRICT, ids=[b.name for b in BAD + STRICT])
def test_bad_input_is_refused_and_changes_nothing(stack: LocalStack, http: httpx.Client, bad: Bad) -> None:
    before = (queue_length(stack), _records(stack), _bucket(stack))
    r = bad.send(http)
    assert r.status_code == bad.status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.isprintable(), detail  # one line, no control characters
    for words in bad.says:
        assert words in detail, f"{words!r} not in {detail!r}"
    if r.status_code == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    assert (queue_length(stack), _records(stack), _bucket(stack)) == before


def test_chunked_oversized_body_is_refused(stack: LocalStack, http: httpx.Client) -> None:
    """A body without Content-Length (chunked) is limited too, without the
    server reading all of it."""
    before = (queue_length(stack), _records(stack))
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"model": "vgg16", "layer": "logits", "units": [700], "title": "'
        for _ in range(4096):  # up to 4 MiB
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    try:
        r = http.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    except httpx.TransportError:  # the server may close the connection on us, as it should
        pass
    else:
        assert r.status_code == 413, r.text
        assert "too large" in r.json()["detail"]
    assert sent < 4096 * 1024  # refused long before the end
    assert (queue_length(stack), _records(stack)) == before


def test_malformed_content_length_is_refused(stack: LocalStack) -> None:
    import socket

    host, port = stack.api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999\r\n\r\n{}")
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply


def test_within_the_limits_is_accepted(stack: LocalStack, http: httpx.Client) -> None:
    before = queue_length(stack)
    r = http.post("/v1/jobs", json=small_job(list(range(50)), layer="logits", steps=1000, size=256, batch_size=25))
    assert r.status_code == 202, r.text
    assert r.json()["units"] == 50 and queue_length(stack) == before + 2
    odd = "Käse · ünïcode ✓ ../../etc/passwd"  # printable text is fine in a title: it never becomes a key
    r2 = http.post("/v1/jobs", json=small_job(["paper towel"], title=odd))
    assert r2.status_code == 202, r2.text
    status = http.get(f"/v1/jobs/{r2.json()['id']}").json()
    assert status["title"] == odd
    body = json.dumps(small_job([3, 4])).encode()
    chunked = http.post("/v1/jobs", content=iter([body[:10], body[10:]]), headers={"content-type": "application/json"})
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 202, chunked.text  # a small body without Content-Length is fine
    for accepted in (r, r2, chunked):
        assert http.delete(f"/v1/jobs/{accepted.json()['id']}").status_code == 200


def test_no_forged_log_lines(stack: LocalStack) -> None:
    """Every FORGED attempt above was refused, and none became a log line of its own."""
    logs = (stack.root / "logs" / "api.log").read_text(errors="replace")
    assert not any(line.startswith("FORGED") for line in logs.splitlines())
