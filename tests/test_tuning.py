"""Recipes tuned per network: the search (service.tuning), the record kept in
the bucket (service.tuned_recipes), `"recipe": "tuned"` in a job, and the
whole path over HTTP (POST /v1/tunes → a real worker → the bucket → the next
job) and from the command line. Networks with random weights at small sizes:
the search's mechanics, not its pictures (docs/recipes.md has those)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from devstack import LocalStack
from service import recipes, tuned_recipes, tuning
from service.architectures import Architectures
from service.errors import BadRequest
from service.planning import first_kind, plan_request
from service.renderer import Renderer
from service.request import JobRequest
from service.spec import Recipe
from service.storage import LocalStore
from service.tune_run import TuneRequest, run
from tests.service_helpers import bucket_keys, client, wait_for

SMALL = {"model": "resnet18", "count": 2, "budget": 4, "steps": 2, "size": 32, "recipe": "lucid",
         "random_weights": True}  # fmt: skip


@pytest.fixture(scope="module")
def archs() -> Architectures:
    return Architectures()


def _renderer_for(archs: Architectures) -> Any:
    made: dict[str, Renderer] = {}

    def renderer_for(spec: Any) -> Renderer:
        if spec.model not in made:
            made[spec.model] = Renderer(archs.registry.get(spec.model), device=torch.device("cpu"),
                                        random_weights=spec.random_weights)  # fmt: skip
        return made[spec.model]

    return renderer_for


def test_every_move_gives_a_valid_distinct_recipe() -> None:
    for name in ("lecture", "lucid", "maco", "vivid"):
        fields = tuning.recipe_fields(recipes.recipe(name))
        labels = [label for label, _ in tuning.moves(fields)]
        # The resize's axes are a move only where the recipe resizes.
        assert any(label.startswith("resize axes") for label in labels) == (fields.get("resize") is not None)
        valid = 0
        for label, move in tuning.moves(fields):
            changed = move(fields)
            if changed is None:  # the move would leave its bounds
                continue
            assert changed != fields, (name, label)
            # A move the recipe's own checks refuse is skipped by the search (not rendered, not counted).
            valid += tuning.is_valid(changed, 224)
        assert valid >= 4, name


def test_search_starts_from_the_base_never_ends_below_it_and_is_deterministic(archs: Architectures) -> None:
    request = TuneRequest.model_validate(SMALL)
    arch = archs.get("resnet18", 32)
    seen: list[tuple[int, int, float]] = []
    first = run(request, arch, _renderer_for(archs), lambda d, t, b: seen.append((d, t, b)))
    assert first.trials[0].change == "base" and first.trials[0].kept
    assert len(first.trials) == request.budget
    assert first.score >= first.base_score
    assert [d for d, _, _ in seen] == list(range(1, request.budget + 1))  # progress once per candidate
    assert all(b2 >= b1 for (_, _, b1), (_, _, b2) in itertools.pairwise(seen))  # the best never goes down
    assert first.metric == "own_p_true_views"  # no judge shares resnet18's classes here: its own, on changed views
    assert first.fields["steps"] == recipes.recipe("lucid").steps  # the search's 2 steps are not the recipe's
    Recipe.model_validate({**first.fields, "size": 224})
    again = run(request, arch, _renderer_for(archs))
    assert again.fields == first.fields and again.score == pytest.approx(first.score, abs=1e-6)


def test_a_channel_layer_is_scored_by_its_own_activation(archs: Architectures) -> None:
    request = TuneRequest.model_validate({**SMALL, "layer": "layer1", "budget": 2})
    record = run(request, archs.get("resnet18", 32), _renderer_for(archs))
    assert record.kind == "channel" and record.metric == "relative_activation"
    assert record.base_score == 1.0  # the base against itself


def test_the_tuned_recipe_fills_a_request_and_the_request_wins(tmp_path: Path, archs: Architectures) -> None:
    store = LocalStore(tmp_path)
    arch = archs.get("resnet18", 32)
    fields = {**tuning.recipe_fields(recipes.recipe("lucid")), "lr": 0.0731}
    record = tuned_recipes.TunedRecipe(model="resnet18", kind="logit", layer="fc", base="lucid", fields=fields,
                                       score=0.5, base_score=0.4, metric="own_p_true_views", units=[1, 2], budget=2,
                                       steps=2, size=32)  # fmt: skip
    body = {"model": "resnet18", "layer": "logits", "units": [3], "recipe": "tuned", "size": 32,
            "random_weights": True}  # fmt: skip
    with pytest.raises(BadRequest, match="no tuned recipe for resnet18"):
        tuned_recipes.resolve(JobRequest.model_validate(body), "logit", store, "tune it")
    key = tuned_recipes.save(store, record)
    assert key == "tuned/local/resnet18/logit.json"  # the command line's own (a service keeps each tenant's)
    request = tuned_recipes.resolve(JobRequest.model_validate(body), "logit", store, "tune it")
    assert first_kind(request, arch) == "logit"
    spec = plan_request(request, arch)[0].spec
    assert spec.lr == 0.0731 and spec.param.name == "fourier" and spec.steps == fields["steps"]
    # A field the request sets itself is the request's; the rest stay the tuned recipe's.
    mine = tuned_recipes.resolve(JobRequest.model_validate({**body, "steps": 3}), "logit", store, "tune it")
    spec = plan_request(mine, arch)[0].spec
    assert spec.steps == 3 and spec.lr == 0.0731
    # Each tenant's searches are its own, and a registered network's are for its weights.
    with pytest.raises(BadRequest, match="no tuned recipe"):
        tuned_recipes.resolve(JobRequest.model_validate(body), "logit", store, "tune it", tenant="other")
    with pytest.raises(BadRequest, match="other weights"):
        tuned_recipes.resolve(JobRequest.model_validate(body), "logit", store, "tune it", weights_sha256="ab" * 32)
    # A field at Recipe's default is left to planning: samples still get their default diversity term.
    many = tuned_recipes.resolve(JobRequest.model_validate({**body, "samples": 2}), "logit", store, "tune it")
    assert plan_request(many, arch)[0].spec.diversity > 0
    # An unresolved "tuned" request is never planned with some other recipe's fields.
    with pytest.raises(BadRequest, match="resolved"):
        plan_request(JobRequest.model_validate(body), arch)


# -- over HTTP, with a real worker, and from the command line -----------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("tunestack"))
    with LocalStack(root, workers=1, extra_env={"DREAMFARM_CACHE": str(root / "cache")}) as s:
        yield s


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with client(stack) as c:
        yield c


def _wait_tune(http: httpx.Client, url: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = http.get(url).json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"tuning run did not finish in {timeout}s: {status}")


@pytest.mark.integration
@pytest.mark.slow
def test_a_search_over_http_keeps_a_recipe_the_next_job_uses(stack: LocalStack, http: httpx.Client) -> None:
    body = {**SMALL, "model": "resnet18", "seed": 7}
    job = {"model": "resnet18", "layer": "logits", "units": [5, 6], "recipe": "tuned", "size": 32, "steps": 2,
           "random_weights": True}  # fmt: skip
    r = http.post("/v1/jobs", json=job)
    assert r.status_code == 422 and "POST /v1/tunes" in r.json()["detail"]  # nothing tuned yet: says how
    r = http.post("/v1/tunes", json=body)
    assert r.status_code == 202, r.text
    status = _wait_tune(http, r.json()["status_url"])
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == body["budget"]
    result = status["result"]
    assert result["key"] == "tuned/default/resnet18/logit.json" and result["key"] in bucket_keys(stack, "tuned/")
    assert result["score"] >= result["base_score"]
    # The same request again is the same run: no second search.
    again = http.post("/v1/tunes", json=body)
    assert again.status_code == 202 and again.json()["id"] == status["id"] and again.json()["state"] == "done"
    assert again.json()["finished_at"] == status["finished_at"]
    # The next job naming the tuned recipe renders with its fields (its own steps win).
    r = http.post("/v1/jobs", json=job)
    assert r.status_code == 202, r.text
    done = wait_for(http, r.json()["id"])
    assert done["state"] == "done" and done["recipe"] == "tuned"
    assert done["request"]["steps"] == 2
    item = http.get(f"/v1/jobs/{r.json()['id']}/renders").json()["items"][0]
    spec = httpx.get(item["sidecar_url"], timeout=30).json()["spec"]
    for name, value in result["fields"].items():  # the render's spec: every field the tuned recipe's
        if name != "steps":
            assert spec[name] == value, name
    assert spec["steps"] == 2


@pytest.mark.integration
def test_bad_searches_are_refused_at_once(http: httpx.Client) -> None:
    cases = [
        ({**SMALL, "model": "resnet181"}, "resnet18"),  # close matches named
        ({**SMALL, "units": [5000]}, "not in layer"),
        ({**SMALL, "recipe": "adversarial"}, "starts from one of the presets"),
        ({**SMALL, "budget": 0}, "budget"),
        ({**SMALL, "layer": "nope"}, "unknown layer"),
    ]
    for body, words in cases:
        r = http.post("/v1/tunes", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)
        assert words in json.dumps(r.json()), (body, r.text)
    assert http.get("/v1/tunes/0123456789abcdef01234567").status_code == 404


@pytest.mark.integration
@pytest.mark.slow
def test_dreamfarm_tune_locally_then_render_with_the_tuned_recipe(tmp_path: Path) -> None:
    env = {**os.environ, "DREAMFARM_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "cli.main"]
    tune = subprocess.run([*cli, "tune", "--model", "resnet18", "--count", "2", "--budget", "2", "--steps", "2",
                           "--size", "32", "--recipe", "lucid", "--random-weights", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert tune.returncode == 0, tune.stderr
    record = json.loads((tmp_path / "cache" / "tuned" / "local" / "resnet18" / "logit.json").read_text())
    out = tmp_path / "out"
    render = subprocess.run([*cli, "render", "--model", "resnet18", "--layer", "logits", "--unit", "3", "--recipe",
                             "tuned", "--steps", "2", "--size", "32", "--random-weights", "--device", "cpu", "--out",
                             str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert render.returncode == 0, render.stderr
    side = json.loads(next(out.glob("renders/resnet18/fc/3/*.json")).read_text())
    assert side["recipe"] == "tuned"
    assert side["spec"]["lr"] == record["fields"]["lr"] and side["spec"]["param"] == record["fields"]["param"]
    # With nothing tuned, the command says how to make one.
    other = subprocess.run([*cli, "render", "--model", "resnet34", "--layer", "logits", "--unit", "3", "--recipe",
                            "tuned", "--size", "32", "--random-weights", "--out", str(out), "--quiet"],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert other.returncode != 0 and "dreamfarm tune --model resnet34" in other.stderr
