"""Auth, tenants and what client input may become.

Against the real stack (real Redis, real SeaweedFS, the API as its own
process, no worker) with three tenants and protected reads: every route
without a token, with a wrong one and with another tenant's; the per-tenant
limit on jobs in flight; tokens never in the logs. Then, in-process: the
constant-time comparison, settings validation, and storage keys."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

import api.security
from api.app import create_app
from api.deps import Services
from devstack import LocalStack
from service.config import Settings
from service.errors import StorageError
from service.jobstore import JobStore
from service.planning import plan_job
from service.request import JobRequest
from service.storage import LocalStore, check_key
from service.zoo import Architecture, Registry
from tests.service_helpers import queue_length, small_job

ACME, UMBRELLA = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
IN_FLIGHT = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"DREAMFARM_API_TOKENS": json.dumps({"acme": ACME, "umbrella": UMBRELLA}),
           "DREAMFARM_PROTECT_READS": "true", "DREAMFARM_MAX_JOBS_IN_FLIGHT": str(IN_FLIGHT)}  # fmt: skip
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), workers=0, extra_env=env) as s:
        yield s


def http(stack: LocalStack, token: str | None, **headers: str) -> httpx.Client:
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=stack.api_url, headers={**auth, **headers}, timeout=30)


def jobs(stack: LocalStack) -> JobStore:
    return JobStore.from_url(stack.redis.url)


@pytest.fixture(scope="module")
def acme_job(stack: LocalStack) -> str:
    with http(stack, ACME) as c:
        r = c.post("/v1/jobs", json=small_job([1, 2], title="acme's"))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


GENERAL: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/efficientnet_lite0", None),
    ("GET", "/v1/recipes", None),
    ("POST", "/v1/jobs", small_job([3])),
    ("POST", "/v1/images", None),
    ("GET", "/metrics", None),
]


def job_routes(job_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/renders", None),
        ("GET", f"/v1/jobs/{job_id}/events", None),
        ("DELETE", f"/v1/jobs/{job_id}", None),
        ("POST", f"/v1/jobs/{job_id}/retry", None),
        ("POST", f"/v1/jobs/{job_id}/atlas", None),
    ]


def routes(job_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return GENERAL + job_routes(job_id)


JOB_ROUTES = ["status", "renders", "cancel", "retry"]
BAD_AUTH = {
    "no-header": {},
    "empty-header": {"Authorization": ""},
    "wrong-token": {"Authorization": "Bearer not-the-token"},
    "token-prefix": {"Authorization": f"Bearer {ACME[:-1]}"},
    "token-plus-one": {"Authorization": f"Bearer {ACME}x"},
    "basic-scheme": {"Authorization": f"Basic {ACME}"},
    "bare-token": {"Authorization": ACME},
    "bearer-no-token": {"Authorization": "Bearer"},
    "two-tokens": {"Authorization": f"Bearer {ACME} {UMBRELLA}"},
}


@pytest.mark.integration
@pytest.mark.parametrize("how", list(BAD_AUTH))
def test_every_route_refuses_a_missing_or_wrong_token(stack: LocalStack, acme_job: str, how: str) -> None:
    before = queue_length(stack)
    with http(stack, None, **BAD_AUTH[how]) as c:
        for method, path, body in routes(acme_job):
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert queue_length(stack) == before
    assert jobs(stack).state(acme_job) == "queued"


@pytest.mark.integration
@pytest.mark.parametrize("intruder", ["umbrella", "default"])
def test_another_tenants_job_is_not_found(stack: LocalStack, acme_job: str, intruder: str) -> None:
    token = UMBRELLA if intruder == "umbrella" else stack.token
    before = queue_length(stack)
    with http(stack, token) as c:
        nobody = "0123456789abcdef"
        for (method, path, body), (_, missing_path, _) in zip(job_routes(acme_job), job_routes(nobody)):
            r = c.request(method, path, json=body)
            missing = c.request(method, missing_path, json=body)
            assert r.status_code == missing.status_code == 404, (method, path, r.text)
            # Not even the wording tells an existing job from a missing one.
            assert r.json()["detail"] == missing.json()["detail"].replace(nobody, acme_job)
        # Models are not per tenant.
        assert c.get("/v1/models").status_code == 200
    assert queue_length(stack) == before
    assert jobs(stack).state(acme_job) == "queued"  # the DELETE did nothing


@pytest.mark.integration
def test_the_owner_reaches_its_job(stack: LocalStack, acme_job: str) -> None:
    assert jobs(stack).get(acme_job)["tenant"] == "acme"
    with http(stack, ACME) as c:
        status = c.get(f"/v1/jobs/{acme_job}").json()
        assert status["title"] == "acme's" and status["state"] == "queued"
        assert len(c.get(f"/v1/jobs/{acme_job}/renders").json()["items"]) == 2
        r = c.post(f"/v1/jobs/{acme_job}/retry")
        assert r.status_code == 409 and "failed units" in r.json()["detail"]


@pytest.mark.integration
def test_retry_and_cancel_are_per_tenant(stack: LocalStack) -> None:
    with http(stack, ACME) as acme, http(stack, UMBRELLA) as umbrella:
        job = acme.post("/v1/jobs", json=small_job([5, 6])).json()["id"]
        store = jobs(stack)
        for key in store.order(job):
            store.mark(job, key, ok=False, reason="boom")
        assert store.state(job) == "done_with_failures"
        before = queue_length(stack)
        assert umbrella.post(f"/v1/jobs/{job}/retry").status_code == 404
        assert umbrella.delete(f"/v1/jobs/{job}").status_code == 404
        assert queue_length(stack) == before and store.state(job) == "done_with_failures"
        r = acme.post(f"/v1/jobs/{job}/retry")
        assert r.status_code == 202, r.text
        assert queue_length(stack) == before + 1 and store.state(job) == "running"
        assert acme.delete(f"/v1/jobs/{job}").json() == {"id": job, "cancelled": True, "state": "cancelled"}


@pytest.mark.integration
def test_jobs_in_flight_are_limited_per_tenant(stack: LocalStack) -> None:
    store = jobs(stack)
    with http(stack, UMBRELLA) as umbrella, http(stack, stack.token) as default:
        mine = []
        for i in range(IN_FLIGHT):
            r = umbrella.post("/v1/jobs", json=small_job([10 + i]))
            assert r.status_code == 202, r.text
            mine.append(r.json()["id"])
        before = (queue_length(stack), store.r.zcard("dreamfarm:jobs"))
        r = umbrella.post("/v1/jobs", json=small_job([20]))
        assert r.status_code == 429, r.text
        assert r.json()["detail"] == (
            f"too many jobs in flight: this token has {IN_FLIGHT} jobs queued or running and the limit is "
            f"{IN_FLIGHT}; wait for some to finish or cancel some"
        )
        assert (queue_length(stack), store.r.zcard("dreamfarm:jobs")) == before
        # Another tenant is not affected.
        other = default.post("/v1/jobs", json=small_job([20]))
        assert other.status_code == 202
        # A cancelled job, or a finished one, no longer counts.
        assert umbrella.delete(f"/v1/jobs/{mine.pop()}").status_code == 200
        mine.append(umbrella.post("/v1/jobs", json=small_job([21])).json()["id"])
        assert umbrella.post("/v1/jobs", json=small_job([22])).status_code == 429
        done = mine.pop(0)
        for key in store.order(done):
            store.mark(done, key, ok=True)
        assert store.state(done) == "done"
        again = umbrella.post("/v1/jobs", json=small_job([22]))
        assert again.status_code == 202, again.text
        for job in [*mine, again.json()["id"]]:
            umbrella.delete(f"/v1/jobs/{job}")
        default.delete(f"/v1/jobs/{other.json()['id']}")


@pytest.mark.integration
def test_gallery_pages_follow_the_read_rules(stack: LocalStack, acme_job: str) -> None:
    """Protected reads: no page without a token (a sign-in page says how);
    a bearer token or the sign-in cookie opens them; another tenant's job page
    is not found."""
    pages = ["/gallery", "/gallery/efficientnet_lite0", f"/gallery/jobs/{acme_job}"]
    with http(stack, None) as anonymous:
        for page in pages:
            r = anonymous.get(page)
            assert r.status_code == 401 and r.headers["content-type"].startswith("text/html"), page
            assert "/gallery/login" in r.text
        refused = anonymous.post("/gallery/login", content=f"token=nope&next=/gallery/jobs/{acme_job}")
        assert refused.status_code == 401 and "not accepted" in refused.text
        signed = anonymous.post("/gallery/login", content=f"token={ACME}&next=/gallery/jobs/{acme_job}")
        assert signed.status_code == 303 and signed.headers["location"] == f"/gallery/jobs/{acme_job}"
        cookie = signed.cookies.get("dreamfarm_token")
        assert cookie == ACME and "httponly" in signed.headers["set-cookie"].lower()
        with http(stack, None, Cookie=f"dreamfarm_token={ACME}") as browser:
            assert browser.get(f"/gallery/jobs/{acme_job}").status_code == 200
            assert browser.get("/v1/jobs/" + acme_job).status_code == 200  # the page's live progress
            assert browser.post("/v1/jobs", json=small_job([3])).status_code == 401  # a cookie never writes
        evil = anonymous.post("/gallery/login", content=f"token={ACME}&next=https://evil.example/")
        assert evil.headers["location"] == "/gallery"  # no open redirect
    with http(stack, UMBRELLA) as umbrella:
        assert umbrella.get("/gallery").status_code == 200
        assert umbrella.get(f"/gallery/jobs/{acme_job}").status_code == 404


@pytest.mark.integration
def test_tokens_are_never_logged(stack: LocalStack) -> None:
    # Runs last in this module: by now every token has been sent, right and wrong.
    with http(stack, ACME) as c:
        c.get("/v1/models")
    logs = "".join(p.read_text(errors="replace") for p in (stack.root / "logs").glob("*.log"))
    assert "submitted" in logs  # the API does log
    for token in (ACME, UMBRELLA, stack.token):
        assert token not in logs


# In-process: no servers needed.


@pytest.fixture(autouse=True)
def _no_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DREAMFARM_API_TOKEN", "DREAMFARM_API_TOKENS", "DREAMFARM_PROTECT_READS"):
        monkeypatch.delenv(name, raising=False)


def _app(tmp_path: Path, **settings: Any) -> TestClient:
    s = Settings(**settings)
    services = Services(s, store=LocalStore(tmp_path))  # never reaches Redis in these tests
    return TestClient(create_app(s, services), raise_server_exceptions=False)


def test_a_server_without_tokens_accepts_no_writes(tmp_path: Path) -> None:
    c = _app(tmp_path)
    r = c.post("/v1/jobs", json=small_job([1]))
    assert r.status_code == 401 and "no API token configured" in r.json()["detail"]
    assert c.delete("/v1/jobs/0123456789abcdef", headers={"Authorization": "Bearer x"}).status_code == 401
    assert c.get("/v1/models").status_code == 200  # reads stay open unless protect_reads


def test_tokens_are_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = api.security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.security.hmac, "compare_digest", spy)
    tenants = {f"t{i}": SecretStr(f"token-{i}-" + "x" * i) for i in range(5)}
    c = _app(tmp_path, api_tokens=tenants, protect_reads=True)
    for given in ("token-0-", "token-4-xxxx", "nope", "x" * 500):
        calls.clear()
        c.get("/v1/models", headers={"Authorization": f"Bearer {given}"})
        # Every token is compared, as a fixed-size digest, whether or not (and wherever) one matches.
        assert len(calls) == len(tenants)
        assert all(len(a) == len(b) == 32 for a, b in calls)
        assert all(given.encode() not in a for a, _ in calls)


def test_reads_are_protected_when_asked(tmp_path: Path) -> None:
    c = _app(tmp_path, api_token=SecretStr("s3cret"), protect_reads=True)
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200
    spec = c.get("/openapi.json").json()
    assert spec["paths"]["/v1/models"]["get"]["security"] == [{"HTTPBearer": []}]
    open_spec = _app(tmp_path, api_token=SecretStr("s3cret")).get("/openapi.json").json()
    assert "security" not in open_spec["paths"]["/v1/models"]["get"]  # documented as open when open


def test_tenant_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMFARM_API_TOKENS", json.dumps({"acme": "a-token", "umbrella": "u-token"}))
    monkeypatch.setenv("DREAMFARM_API_TOKEN", "d-token")
    s = Settings()
    assert set(s.tenant_tokens()) == {"acme", "umbrella", "default"}
    assert "a-token" not in repr(s) and "d-token" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("tokens", "single", "says"),
    [
        ({"acme": "same", "umbrella": "same"}, None, "share one token"),
        ({"acme": "same"}, "same", "share one token"),
        ({"default": "x"}, "y", "given both"),
        ({"ac me": "x"}, None, "tenant name"),
        ({"../etc": "x"}, None, "tenant name"),
        ({"acme\n": "x"}, None, "tenant name"),
        ({"acme": "   "}, None, "empty token"),
        ({}, "", "empty"),
    ],
)
def test_bad_tenant_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, tokens: dict[str, str], single: str | None, says: str
) -> None:
    monkeypatch.setenv("DREAMFARM_API_TOKENS", json.dumps(tokens))
    if single is not None:
        monkeypatch.setenv("DREAMFARM_API_TOKEN", single)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert says in str(err.value)
    assert "same" not in str(err.value)  # the tokens themselves are not echoed


@pytest.mark.parametrize("key", ["../x", "renders/../../etc/passwd", "/etc/passwd", "renders//x", "renders/./x",
                                 "renders/ü", "renders/x y", "renders\\..\\x", "", "renders/x\nFORGED",
                                 "renders/x\n"])  # fmt: skip
def test_unsafe_storage_keys_are_refused(key: str) -> None:
    with pytest.raises(StorageError):
        check_key(key)


def test_storage_keys_come_from_the_zoo_not_the_client(tmp_path: Path) -> None:
    """Units named by class name, a layer by alias: the keys hold the model's
    own name, the layer's module path and the unit index, nothing typed in."""
    arch = Architecture(Registry().get("efficientnet_lite0"), 64)
    request = JobRequest(model="efficientnet_lite0", layer="logits", units=["paper towel", "goldfish"],
                         title="../../etc/passwd")  # fmt: skip
    plan = plan_job(request, arch, LocalStore(tmp_path), batch_size=8)
    for unit in plan.units:
        from service import layout

        for key in (layout.render_png_key(unit.spec), layout.render_sidecar_key(unit.spec)):
            assert key.startswith(f"renders/efficientnet_lite0/{arch.layer('logits').path}/{unit.spec.unit}/")
            assert check_key(key) == key and ".." not in key
