"""The precision policy: a bf16 probe sized to the job it decides for, a
verdict keyed by what changes bf16's effect, and a probe that a killed worker
leaves half-done for the next one to finish.

These tests run on any CPU: a device "with fast bf16" is simulated where the
policy asks (bf16 itself runs everywhere, only slower without AMX/AVX512-BF16).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from service import precision, precision_policy, recipes
from service.precision_policy import PROBE_BUDGET, ProbeSize, job_cost, probe_size, verdict_id
from service.renderer import Renderer
from service.spec import RenderSpec
from service.storage import LocalStore
from service.zoo import Registry

MODEL = "efficientnet_lite0"


def _job(units: int, steps: int, size: int, **kw: object) -> list[RenderSpec]:
    return [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, steps=steps, size=size, **kw)  # type: ignore[arg-type]
            for u in range(units)]  # fmt: skip


@pytest.mark.parametrize("units", [1, 4, 16, 32, 1000])
@pytest.mark.parametrize("steps", [5, 10, 64, 250, 1000])
@pytest.mark.parametrize("size", [64, 128, 224, 299])
def test_the_probe_never_costs_more_than_a_tenth_of_the_job(units: int, steps: int, size: int) -> None:
    job = _job(units, steps, size)
    probe = probe_size(job)
    if probe is not None:
        assert probe.cost() <= PROBE_BUDGET * job_cost(job) + 1e-9
        assert precision_policy.MIN_PROBE_STEPS <= probe.steps <= min(steps, precision_policy.PROBE_STEPS)
        assert probe.size <= size and probe.units <= units


def test_small_jobs_get_no_probe_and_large_ones_the_full_probe() -> None:
    assert probe_size(_job(16, 10, 224)) is None  # the VGG16 job: 160 image-steps
    assert probe_size(_job(32, 250, 224)) == ProbeSize(4, 64, 160)  # one API batch of a 250-step job
    medium = probe_size(_job(8, 200, 128))
    assert medium is not None and precision_policy.MIN_PROBE_STEPS <= medium.steps < 64


def test_the_verdict_is_keyed_by_parameterization_not_by_unit_or_seed() -> None:
    cpu = torch.device("cpu")
    a, b = _job(2, 64, 128)
    assert verdict_id(a, cpu) == verdict_id(b, cpu) == verdict_id(a.model_copy(update={"seed": 7}), cpu)
    lucid = recipes.recipe("lucid", {"steps": 64, "size": 128}).model_dump()
    fourier = RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=0, **lucid)
    assert verdict_id(fourier, cpu) != verdict_id(a, cpu)
    assert verdict_id(a, cpu) != verdict_id(a.model_copy(update={"layer": "_blocks.5", "kind": "channel"}), cpu)


@pytest.fixture
def fast_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_policy, "bfloat16_is_fast", lambda _d: True)
    monkeypatch.setattr(precision, "bfloat16_is_fast", lambda _d: True)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Registry().get(MODEL), device=torch.device("cpu"))


class Killed(BaseException):
    """A worker's death: not an Exception, so nothing in the policy may catch it."""


class Counting:
    """Wraps Renderer.measure: counts each precision's probe half; can fail one (a killed worker)."""

    def __init__(self, renderer: Renderer, fail: str | None = None) -> None:
        self.renderer, self.fail = renderer, fail
        self.calls: list[str] = []
        self.real = Renderer.measure.__get__(renderer)  # the real one, not an earlier wrapper

    def __call__(self, specs: list[RenderSpec], name: str) -> precision.Measurement:
        self.calls.append(name)
        if name == self.fail:
            raise Killed("worker killed mid-probe")
        return self.real(specs, name)


def _fresh(renderer: Renderer) -> None:
    renderer.decided.clear()
    renderer.guard_report = None


@pytest.mark.usefixtures("fast_bf16")
def test_a_small_job_renders_in_float32_without_probing_and_says_so_once(
    renderer: Renderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fresh(renderer)
    counting = Counting(renderer)
    monkeypatch.setattr(renderer, "measure", counting)
    notes: list[str] = []
    job = _job(16, 10, 224)
    for _batch in range(3):
        precision_policy.decide(renderer, job, LocalStore(tmp_path), on_note=notes.append)
    assert counting.calls == [] and len(notes) == 1
    assert renderer.resolved_precision(job[0]) == "float32"
    assert list(tmp_path.rglob("*.json")) == []  # no verdict stored: a larger job may still probe


@pytest.mark.slow
@pytest.mark.usefixtures("fast_bf16")
def test_a_probe_cut_short_resumes_from_its_float32_half(
    renderer: Renderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker dies in the probe's bf16 half; the next measures only
    bf16, stores the verdict, and a third renderer reads it without probing."""
    store = LocalStore(tmp_path)
    job = _job(8, 200, 96)  # large enough for a probe, small enough for a test
    probe = probe_size(job)
    assert probe is not None
    _fresh(renderer)
    killed = Counting(renderer, fail="bfloat16")
    monkeypatch.setattr(renderer, "measure", killed)
    with pytest.raises(Killed):
        precision_policy.decide(renderer, job, store)
    assert killed.calls == ["float32", "bfloat16"]
    assert precision_policy.load(store, job[0], renderer.device) is None  # no verdict yet, only the half

    _fresh(renderer)
    resumed = Counting(renderer)
    monkeypatch.setattr(renderer, "measure", resumed)
    precision_policy.decide(renderer, job, store)
    assert resumed.calls == ["bfloat16"]
    report = precision_policy.load(store, job[0], renderer.device)
    assert report is not None and renderer.guard_report == report
    (verdict,) = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json") if "float32" not in p.name]
    assert verdict["probe"] == {"units": probe.units, "steps": probe.steps, "size": probe.size}
    assert verdict["probe_seconds"] > 0 and verdict["param"] == "pixel"

    _fresh(renderer)
    third = Counting(renderer)
    monkeypatch.setattr(renderer, "measure", third)
    precision_policy.decide(renderer, job, store)
    assert third.calls == [] and renderer.guard_report == report
    expected = "bfloat16" if report.accepted else "float32"
    assert renderer.resolved_precision(job[0]) == expected


def test_without_fast_bf16_nothing_is_probed(
    renderer: Renderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision_policy, "bfloat16_is_fast", lambda _d: False)
    _fresh(renderer)
    counting = Counting(renderer)
    monkeypatch.setattr(renderer, "measure", counting)
    precision_policy.decide(renderer, _job(32, 250, 224), LocalStore(tmp_path))
    assert counting.calls == [] and renderer.guard_report is None
