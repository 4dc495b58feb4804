"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema
(schemathesis), against the real stack: real Redis, real SeaweedFS, the API
as its own process, no worker (nothing renders).

For every operation, valid and invalid inputs, deterministic and bounded:
no 5xx, every status code documented, every body matching its documented
schema, invalid input refused with a 4xx, and routes that declare auth
refusing requests without it.

(schemathesis's pytest integration, `schemathesis.pytest.from_fixture`, does
not run under pytest 9, so each operation's Hypothesis strategy is driven
here with `@given` directly: `APIOperation.as_strategy`.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api.app import create_app
from devstack import LocalStack
from service.config import Settings
from tests.service_helpers import small_job

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 50
JOB_ROUTE = "{job_id}"


def _can_be_invalid(op: dict[str, Any]) -> bool:
    """A typed body or a query parameter can be invalid; a path parameter that
    is any string cannot, nor a raw binary body (an uploaded image: any bytes
    fit its schema, and the server judges them)."""
    content = op.get("requestBody", {}).get("content", {})
    typed_body = any(c.get("schema", {}).get("format") != "binary" for c in content.values())
    return typed_body or any(p["in"] != "path" for p in op.get("parameters", []))


def _operations() -> dict[tuple[str, str], bool]:
    """(method, path) → whether some of its input can be invalid. The same
    routes the live server documents; no server needed to list them."""
    spec = create_app(Settings(api_token="x", protect_reads=True)).openapi()  # type: ignore[arg-type]
    return {(method.upper(), path): _can_be_invalid(op) for path, item in spec["paths"].items()
            for method, op in item.items()}  # fmt: skip


OPERATIONS = _operations()
# Job routes are fuzzed twice: with generated ids (404s) and with a real job's id.
CASES = [
    pytest.param(m, p, real, mode, id=f"{m} {p}{' real-id' if real else ''} {mode.value}")
    for (m, p), can_be_invalid in sorted(OPERATIONS.items())
    for real in ((False, True) if JOB_ROUTE in p else (False,))
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or can_be_invalid
]


class Bearer(requests.auth.AuthBase):
    """The token as explicit auth, so schemathesis's `ignored_auth` check
    knows it, and probes the same request without it."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"DREAMFARM_PROTECT_READS": "1", "DREAMFARM_MAX_JOBS_IN_FLIGHT": "20"}
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), workers=0, extra_env=env) as s:
        yield s


@pytest.fixture(scope="module")
def auth(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


@pytest.fixture(scope="module")
def job_id(stack: LocalStack, auth: dict[str, str]) -> str:
    r = httpx.post(f"{stack.api_url}/v1/jobs", json=small_job([1, 2]), headers=auth)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def api_schema(stack: LocalStack) -> Any:
    config = schemathesis.Config.from_dict(
        {
            # The token is ours to send (Bearer below), not generated data.
            "generation": {"with-security-parameters": False},
            "checks": {
                # A random but well-formed model name is rightly refused (422).
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json", config=config)


@pytest.mark.parametrize(("method", "path", "real_job", "mode"), CASES)
def test_operation_conforms_to_the_schema(
    api_schema: Any, stack: LocalStack, job_id: str, method: str, path: str, real_job: bool, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    fixed = {"job_id": job_id} if real_job else None
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)  # fmt: skip
    def check(case: Any) -> None:
        case.call_and_validate(auth=Bearer(stack.token))

    check()


def test_every_operation_is_fuzzed() -> None:
    assert {"GET /v1/jobs/{job_id}", "POST /v1/jobs", "DELETE /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/retry",
            "GET /v1/jobs/{job_id}/renders", "GET /v1/models", "GET /v1/models/{name}", "GET /v1/recipes",
            "POST /v1/images", "GET /v1/jobs/{job_id}/events", "POST /v1/jobs/{job_id}/atlas"} <= {
        f"{m} {p}" for m, p in OPERATIONS
    }  # fmt: skip


MODELS = ["efficientnet_lite0", "vgg16", "resnet18", "squeezenet1_1", "mobilenet_v3_small"]


def _near_valid_jobs() -> st.SearchStrategy[dict[str, Any]]:
    """Job bodies close to valid, which the schema alone rarely produces (a
    random unit list is out of range, a random layer name unknown): so that
    planning, the server's limits and acceptance are fuzzed too."""
    units = st.one_of(
        st.lists(st.integers(0, 1100), min_size=1, max_size=6),
        st.lists(st.sampled_from(["paper towel", "Samoyed", "geyser", "goldfish", "nope", "../x"]), min_size=1,
                 max_size=4),
        st.just("all"),
        st.fixed_dictionaries({"start": st.integers(0, 1100), "stop": st.integers(0, 1100)}),
    )  # fmt: skip
    prior = st.lists(
        st.fixed_dictionaries({"name": st.sampled_from(["edge_energy", "tv", "l2", "none"]),
                               "weight": st.floats(0, 10)}), max_size=3,
    )  # fmt: skip
    optional = {
        "kind": st.sampled_from(["logit", "channel", "neuron"]),
        "position": st.tuples(st.integers(0, 40), st.integers(0, 40)),
        "prior": prior,
        "steps": st.integers(1, 6000),
        "lr": st.floats(1e-4, 100),
        "size": st.integers(16, 600),
        "seed": st.integers(0, 2**63 - 1),
        "precision": st.sampled_from(["auto", "float32", "bfloat16"]),
        "batch_size": st.integers(1, 1024),
        "title": st.text(max_size=40),
    }
    return st.fixed_dictionaries(
        {
            "model": st.sampled_from(
                ["efficientnet_lite0", "vgg16", "resnet18", "squeezenet1_1", "mobilenet_v3_small"]
            ),
            "layer": st.sampled_from(["logits", "conv1", "conv4", "conv13", "block3", "head", "features.0", "fc1"]),
            "units": units,
        },
        optional=optional,
    )


def test_near_valid_jobs(api_schema: Any, stack: LocalStack) -> None:
    operation = api_schema["/v1/jobs"]["POST"]
    outcomes: Counter[int] = Counter()

    @given(body=_near_valid_jobs())
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)  # fmt: skip
    def check(body: dict[str, Any]) -> None:
        response = operation.Case(body=body, media_type="application/json").call_and_validate(auth=Bearer(stack.token))
        outcomes[response.status_code] += 1
        if response.status_code == 202:  # keep the tenant under its in-flight limit
            job = response.json()["id"]
            assert httpx.delete(f"{stack.api_url}/v1/jobs/{job}", auth=None,
                                headers={"Authorization": f"Bearer {stack.token}"}).status_code == 200  # fmt: skip

    check()
    assert outcomes[202] > 0 and outcomes[422] > 0, outcomes
