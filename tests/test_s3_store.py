"""S3Store against a real SeaweedFS S3 gateway with authentication on."""

# Fixtures are imported by name, so pytest's parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from devstack import SeaweedS3
from service.config import Settings
from service.errors import StorageError
from service.s3 import METADATA_BUDGET, S3Store, fit_metadata
from service.storage import Store
from tests.stack_fixtures import redis_server, s3_store, seaweed, store_for  # noqa: F401

pytestmark = pytest.mark.integration

UNSAFE_KEYS = ["../x", "a/../b", "/abs"]


def http_status(url: str, *, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_is_a_store(s3_store: S3Store) -> None:
    assert isinstance(s3_store, Store)


def test_round_trip(s3_store: S3Store) -> None:
    s3_store.put("renders/m/l/1/k1.png", b"\x89PNG one", "image/png", {"unit": "1"})
    s3_store.put("renders/m/l/2/k2.json", b'{"a": 1}', "application/json")
    s3_store.put("atlases/a.png", b"atlas", "image/png")

    assert s3_store.get("renders/m/l/1/k1.png") == b"\x89PNG one"
    assert s3_store.get("renders/m/l/2/k2.json") == b'{"a": 1}'
    assert s3_store.exists("renders/m/l/1/k1.png")
    assert not s3_store.exists("renders/m/l/1/nope.png")
    assert list(s3_store.list("renders/")) == ["renders/m/l/1/k1.png", "renders/m/l/2/k2.json"]
    assert list(s3_store.list("renders/m/l/2")) == ["renders/m/l/2/k2.json"]
    assert list(s3_store.list("nothing/")) == []
    assert len(list(s3_store.list(""))) == 3

    # overwrite replaces the whole object
    s3_store.put("atlases/a.png", b"atlas v2", "image/png")
    assert s3_store.get("atlases/a.png") == b"atlas v2"

    with pytest.raises(StorageError, match="no object"):
        s3_store.get("renders/m/l/1/nope.png")


def test_list_paginates(s3_store: S3Store) -> None:
    keys = [f"p/{i:02d}.bin" for i in range(11)]
    for k in keys:
        s3_store.put(k, k.encode(), "application/octet-stream")
    s3_store.list_page_size = 3  # four pages
    assert list(s3_store.list("p/")) == keys


def test_metadata_over_limit_is_trimmed(s3_store: S3Store, seaweed: SeaweedS3) -> None:
    metadata = {"spec-key": "abc123", "label": "paper towel — ünïcode", "Bad Key!": "v"}
    metadata |= {f"big-{i}": "x" * 400 for i in range(10)}
    s3_store.put("meta/obj.png", b"png", "image/png", metadata)
    assert s3_store.get("meta/obj.png") == b"png"

    head = seaweed.client().head_object(Bucket=s3_store.bucket, Key="meta/obj.png")
    stored: dict[str, str] = head["Metadata"]
    assert sum(len(k) + len(v) for k, v in stored.items()) <= METADATA_BUDGET
    assert stored["spec-key"] == "abc123"  # early entries survive whole
    assert stored["label"] == "paper towel ? ?n?code"
    assert stored["badkey"] == "v"
    assert all(v.isascii() for v in stored.values())
    assert head["ContentType"] == "image/png"


def test_fit_metadata_budget() -> None:
    fitted = fit_metadata({"a": "x" * 1000, "b": "y" * 1000, "c": "z" * 1000, "d": "tiny"})
    assert fitted["a"] == "x" * 1000
    assert fitted["b"] == "y" * (METADATA_BUDGET - 1001 - 1)  # truncated to fill the budget
    assert "c" not in fitted and "d" not in fitted  # nothing left for them
    assert sum(len(k) + len(v) for k, v in fitted.items()) == METADATA_BUDGET
    assert fit_metadata(None) == {}


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_refused(s3_store: S3Store, key: str) -> None:
    with pytest.raises(StorageError, match="unsafe"):
        s3_store.put(key, b"x", "text/plain")
    with pytest.raises(StorageError, match="unsafe"):
        s3_store.get(key)
    with pytest.raises(StorageError, match="unsafe"):
        s3_store.exists(key)
    with pytest.raises(StorageError, match="unsafe"):
        s3_store.url(key)
    assert list(s3_store.list("")) == []


def test_presigned_url_serves_the_bytes(s3_store: S3Store) -> None:
    s3_store.put("renders/x/y.png", b"the render", "image/png")
    status, body = http_status(s3_store.url("renders/x/y.png", expires_s=60))
    assert (status, body) == (200, b"the render")


def test_presigned_urls_can_name_a_public_endpoint(seaweed: SeaweedS3, s3_store: S3Store) -> None:
    # Workers reach the bucket at 127.0.0.1; clients are told "localhost".
    public = f"http://localhost:{seaweed.port}"
    store = store_for(seaweed, s3_store.bucket, public_endpoint_url=public)
    store.put("renders/x/p.png", b"public", "image/png")
    url = store.url("renders/x/p.png", expires_s=60)
    assert url.startswith(public + "/")
    assert http_status(url) == (200, b"public")


def test_tampered_presigned_url_refused(s3_store: S3Store) -> None:
    s3_store.put("renders/x/y.png", b"the render", "image/png")
    url = s3_store.url("renders/x/y.png", expires_s=60)
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    sig = query["X-Amz-Signature"][0]
    query["X-Amz-Signature"] = [("0" if sig[0] != "0" else "1") + sig[1:]]
    tampered = parts._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()
    assert tampered != url
    status, body = http_status(tampered)
    assert status == 403
    assert b"the render" not in body

    # the signature covers the key: the same URL for another object fails too
    s3_store.put("renders/x/other.png", b"other", "image/png")
    assert http_status(url.replace("/y.png?", "/other.png?"))[0] == 403


def test_expired_presigned_url_refused(s3_store: S3Store) -> None:
    s3_store.put("renders/x/y.png", b"the render", "image/png")
    url = s3_store.url("renders/x/y.png", expires_s=1)
    time.sleep(2)
    assert http_status(url)[0] == 403


def test_presign_lifetime_checked(s3_store: S3Store) -> None:
    with pytest.raises(StorageError, match="lifetime"):
        s3_store.url("a.png", expires_s=0)
    with pytest.raises(StorageError, match="lifetime"):
        s3_store.url("a.png", expires_s=8 * 24 * 3600)


def test_anonymous_requests_refused(s3_store: S3Store, seaweed: SeaweedS3) -> None:
    s3_store.put("renders/x/y.png", b"the render", "image/png")
    base = f"{seaweed.endpoint_url}/{s3_store.bucket}"
    assert http_status(f"{base}/renders/x/y.png")[0] == 403
    assert http_status(f"{base}?list-type=2")[0] == 403
    assert http_status(f"{base}/anon.png", method="PUT", data=b"evil")[0] == 403
    assert not s3_store.exists("anon.png")


def test_wrong_secret_refused(s3_store: S3Store, seaweed: SeaweedS3) -> None:
    s3_store.put("renders/x/y.png", b"the render", "image/png")
    bad_secret = "not-the-secret-" + uuid.uuid4().hex
    bad = store_for(seaweed, s3_store.bucket, secret_access_key=bad_secret)
    calls = [
        lambda: bad.put("renders/x/evil.png", b"evil", "image/png"),
        lambda: bad.get("renders/x/y.png"),
        lambda: bad.exists("renders/x/y.png"),
        lambda: list(bad.list("")),
        bad.ping,
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        msg = str(info.value)
        assert bad_secret not in msg and seaweed.secret_key not in msg
        assert "\n" not in msg
    assert not s3_store.exists("renders/x/evil.png")


def test_error_message_names_operation_and_key(s3_store: S3Store, seaweed: SeaweedS3) -> None:
    bad = store_for(seaweed, s3_store.bucket, secret_access_key="wrong")
    with pytest.raises(StorageError, match=r"S3 put s3://.*/renders/k\.png failed \(SignatureDoesNotMatch"):
        bad.put("renders/k.png", b"x", "image/png")


def test_ensure_bucket_and_ping(seaweed: SeaweedS3) -> None:
    store = store_for(seaweed, f"test-{uuid.uuid4().hex[:16]}")
    with pytest.raises(StorageError, match="does not exist"):
        store.ping()
    with pytest.raises(StorageError):
        store.put("a.png", b"x", "image/png")  # no implicit bucket creation on put... or refused
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.ping()
    # a second store asking to create the same bucket is fine too
    again = store_for(seaweed, store.bucket, create_bucket=True)
    again.put("a.png", b"x", "image/png")
    assert store.get("a.png") == b"x"


@pytest.mark.parametrize(
    ("options", "match"),
    [({"endpoint_url": "not a url"}, "Invalid endpoint"), ({"region": "bad region!"}, "region")],
)
def test_bad_client_settings_are_storage_errors(options: dict[str, str], match: str) -> None:
    with pytest.raises(StorageError, match=match):
        S3Store("bucket", **options)  # type: ignore[arg-type]


def test_from_settings(seaweed: SeaweedS3) -> None:
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    settings = Settings(
        s3_endpoint_url=seaweed.endpoint_url,
        s3_access_key_id=SecretStr(seaweed.access_key),
        s3_secret_access_key=SecretStr(seaweed.secret_key),
        s3_bucket=bucket,
        s3_create_bucket=True,
    )
    store = S3Store.from_settings(settings)
    store.ping()
    store.put("s.json", b"{}", "application/json")
    assert store.get("s.json") == b"{}"
    assert seaweed.secret_key not in repr(store)


def test_outage_raises_storage_error_and_restart_keeps_objects(tmp_path: Path) -> None:
    server = SeaweedS3(data_dir=tmp_path / "weed").start()
    try:
        store = store_for(server, "outage", create_bucket=True, connect_timeout=1)
        store.put("renders/a.png", b"before stop", "image/png")
        server.stop()

        for call in (
            lambda: store.put("renders/b.png", b"during", "image/png"),
            lambda: store.exists("renders/a.png"),
            lambda: store.get("renders/a.png"),
            lambda: list(store.list("renders/")),
            store.ping,
        ):
            with pytest.raises(StorageError, match="failed"):
                call()

        server.start()  # same data dir, same port
        assert store.get("renders/a.png") == b"before stop"
        assert store.exists("renders/a.png")
        assert not store.exists("renders/b.png")

        # a crash (SIGKILL) loses nothing acknowledged either
        store.put("renders/c.png", b"before kill", "image/png")
        server.kill()
        with pytest.raises(StorageError):
            store.exists("renders/c.png")
        server.start()
        assert store.get("renders/c.png") == b"before kill"
        assert list(store.list("renders/")) == ["renders/a.png", "renders/c.png"]
    finally:
        server.stop()
