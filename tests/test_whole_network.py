"""A whole network in one job (`"layers": [...]` or `"layers": "all"`): what
"all" plans, that batches never mix layers, that refusals name the layer at
fault and cost nothing, that planning tens of thousands of specs stays cheap
without changing a key, and (over real Redis and a folder store) each
layer's counts, progress and atlas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from api.publisher import CeleryPublisher
from devstack import RedisServer
from service import layout, planning
from service.architectures import Architectures
from service.config import Settings
from service.contract import QUEUE
from service.errors import BadRequest, BadUnit, DreamfarmError, OverLimit, UnknownLayer
from service.images import png_bytes
from service.job_atlas import write_job_atlas
from service.jobstore import JobStore
from service.planning import batches, network_layers, plan_layers, plan_request
from service.request import JobRequest
from service.spec import RenderSpec
from service.storage import LocalStore, Store
from service.submission import Limits, Workflows
from service.zoo import Architecture

ARCHS = Architectures()


@pytest.fixture(scope="module")
def resnet18() -> Architecture:
    return ARCHS.get("resnet18")


def req(**kw: Any) -> JobRequest:
    return JobRequest.model_validate({"model": "resnet18", "random_weights": True, **kw})


def test_all_is_every_aliased_channel_layer_and_the_logits_with_every_unit(resnet18: Architecture) -> None:
    units, layers = plan_layers(req(layers="all", units="all"), resnet18)
    expected = [x for x in resnet18.layers if x.aliases and "channel" in x.kinds] + [resnet18.layer("logits")]
    assert [x.path for x in layers] == [x.path for x in expected] == [x.path for x in network_layers(resnet18)]
    # every conv of the network is there, with all its channels; the logits with all 1000 classes
    convs = [x for x in resnet18.layers if x.module_type == "Conv2d"]
    assert len(convs) == 20 and {x.path for x in convs} <= {x.path for x in layers}
    assert [x.units for x in layers] == [x.units for x in expected]
    assert (layers[-1].name, layers[-1].kind, layers[-1].units) == ("logits", "logit", 1000)
    assert layers[0].name == "conv1" and all(x.kind == "channel" for x in layers[:-1])
    assert len(units) == sum(x.units for x in expected)
    for x in layers:  # each layer's span holds its units, in order, and nothing else
        span = units[x.start : x.stop]
        assert {u.spec.layer for u in span} == {x.path} and [u.spec.unit for u in span] == list(range(x.units))
    assert units[-1].label == resnet18.entry.classes[999]
    assert len({u.spec.key() for u in units}) == len(units)

    groups = batches([u.spec for u in units], 32)
    assert all(len({s.layer for s in g}) == 1 for g in groups), "a batch mixed layers"
    assert sorted(s.key() for g in groups for s in g) == sorted(u.spec.key() for u in units)
    # a layer is batched on its own: ceil(units / 32) batches each
    assert len(groups) == sum(-(-x.units // 32) for x in layers)


def test_a_list_of_layers_applies_the_units_to_each(resnet18: Architecture) -> None:
    units, layers = plan_layers(req(layers=["conv4", "layer4", "logits"], units={"start": 3, "stop": 6}), resnet18)
    assert [(x.name, x.path, x.kind, x.units) for x in layers] == [
        ("conv4", "layer1.1.conv1", "channel", 3), ("layer4", "layer4", "channel", 3), ("logits", "fc", "logit", 3),
    ]  # fmt: skip
    assert [(u.spec.layer, u.spec.unit) for u in units[:3]] == [("layer1.1.conv1", u) for u in (3, 4, 5)]
    assert [u.label for u in units[6:]] == list(resnet18.entry.classes[3:6])
    # the same as three single-layer requests, key for key
    alone = [u.spec.key() for name in ("conv4", "layer4", "logits")
             for u in plan_request(req(layer=name, units={"start": 3, "stop": 6}), resnet18)]  # fmt: skip
    assert [u.spec.key() for u in units] == alone


def test_a_single_layer_request_plans_as_before(resnet18: Architecture) -> None:
    request = req(layer="conv4", units=[0, 5])
    units, layers = plan_layers(request, resnet18)
    old_style = planning.plan_units(resnet18, layer="conv4", units=[0, 5], recipe=planning.request_recipe(request,
                                    resnet18), random_weights=True)  # fmt: skip
    assert [u.spec for u in units] == [u.spec for u in old_style] and len(layers) == 1
    assert not request.several_layers and "layers" not in json.loads(request.record_json())
    assert JobRequest.model_validate_json(request.record_json()) == request
    several = req(layers=["conv4"], units=[0])
    assert several.several_layers and "layer" not in json.loads(several.record_json())
    assert JobRequest.model_validate_json(several.record_json()) == several


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"units": [1]}, "layer", "Field required"),
        ({"layer": "conv4", "layers": ["conv7"], "units": [1]}, "layers", "not both"),
        ({"layer": "conv4", "layers": "all", "units": [1]}, "layers", "not both"),
        ({"layers": [], "units": [1]}, "layers", "at least 1 item"),
        ({"layers": "some", "units": [1]}, "layers", "'all'"),
        ({"layers": ["conv4", "conv4"], "units": [1]}, "layers", "listed more than once: conv4"),
        ({"layers": ["../x"], "units": [1]}, "layers", "pattern"),
        ({"layers": [4], "units": [1]}, "layers", "valid string"),
    ],
)
def test_layer_or_layers_exactly_one_of_them(body: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        JobRequest.model_validate({"model": "resnet18", **body})
    assert any(err["loc"][0] == field and says in err["msg"] for err in e.value.errors()), e.value.errors()


def test_neither_layer_nor_layers_is_reported_beside_the_other_problems() -> None:
    with pytest.raises(ValidationError) as e:
        JobRequest.model_validate({"units": []})
    assert [err["loc"] for err in e.value.errors()] == [("model",), ("layer",), ("units",)]


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        ({"layers": ["conv1", "conv99"], "units": [0]}, UnknownLayer,
         ("unknown layer 'conv99' for resnet18", "valid layers: conv1", "logits")),
        ({"layers": ["conv4", "layer1.1.conv1"], "units": [0]}, BadRequest, ("same layer (layer1.1.conv1)",)),
        ({"layers": ["logits", "conv1"], "units": [100]}, BadUnit,
         ("unit 100 out of range for layer conv1 of resnet18", "valid units are 0-63")),
        ({"layers": ["logits", "conv1"], "units": {"start": 60, "stop": 70}}, BadUnit,
         ("unit range 60-69 out of range for layer conv1",)),
        ({"layers": ["logits", "conv1"], "units": ["Samoyed"]}, BadUnit, ("layer conv1", "names are only for class")),
        ({"layers": ["conv1", "logits"], "units": [0], "kind": "channel"}, BadUnit,
         ("kind 'channel' does not apply to layer logits",)),
        ({"layers": ["conv1", "logits"], "units": "all"}, OverLimit,
         ("1064 units in one job over 2 layers; the limit is 1000",)),
        ({"layers": "all", "units": [0, 1, 2], "recipe": "lucid", "samples": 16}, OverLimit,
         ("renders (units × samples) in one job over", "layers; the limit is 1000")),
    ],
)  # fmt: skip
def test_bad_layers_are_refused_naming_the_layer(
    resnet18: Architecture, body: dict[str, Any], error: type[DreamfarmError], says: tuple[str, ...]
) -> None:
    with pytest.raises(error) as e:
        plan_layers(req(**body), resnet18, max_units=1000)
    for words in says:
        assert words in str(e.value), str(e.value)
    assert e.value.field in ("layers", "units")


def test_over_the_limit_is_refused_before_any_spec_is_made(
    resnet18: Architecture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_specs(*_a: object, **_k: object) -> None:
        raise AssertionError("specs were made for a request over the limit")

    monkeypatch.setattr(planning, "_specs", no_specs)
    every = network_layers(resnet18)
    total = sum(x.units for x in every)
    assert total > 5000
    with pytest.raises(OverLimit, match=rf"^{total} units in one job over {len(every)} layers; the limit is 5000"):
        plan_layers(req(layers="all", units="all"), resnet18, max_units=5000)


def test_each_layer_measures_diversity_below_itself(resnet18: Architecture) -> None:
    units, _ = plan_layers(req(layers=["conv4", "logits"], units=[0], recipe="lucid", samples=2), resnet18)
    by_layer = {u.spec.layer: u.spec.diversity_layer for u in units}
    alone = {name: plan_request(req(layer=name, units=[0], recipe="lucid", samples=2), resnet18)[0].spec
             for name in ("conv4", "logits")}  # fmt: skip
    assert by_layer == {s.layer: s.diversity_layer for s in alone.values()}
    assert by_layer["layer1.1.conv1"] != by_layer["fc"]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"samples": 3, "diversity": 5.0, "diversity_layer": "layer1.0.conv1", "param": {"name": "fourier"}},
        {"kind": "neuron", "position": (1, 2), "seed": 9, "transforms": ({"name": "jitter", "amount": 4},)},
        {"direction": "min", "stop_margin": 2.0, "prior": ()},
    ],
)
def test_copies_for_other_units_have_the_keys_of_specs_made_from_scratch(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"model": "resnet18", "layer": "layer1.1.conv1", "kind": "channel", "unit": 0,
                            "size": 64, **fields}  # fmt: skip
    first = RenderSpec(**base)
    pairs = [(u, k) for u in (0, 1, 7, 10, 63, 1234) for k in range(first.samples)]
    copies = first.for_units(pairs)
    fresh = [RenderSpec(**{**base, "unit": u, "sample": k}) for u, k in pairs]
    assert copies == fresh
    assert [c.key() for c in copies] == [RenderSpec(**f.model_dump()).key() for f in fresh]
    assert [c.batch_key() for c in copies] == [f.batch_key() for f in fresh]
    assert [c.canonical_json() for c in copies] == [f.canonical_json() for f in fresh]
    with pytest.raises(ValueError):
        first.for_units([(0, first.samples)])


def test_a_spec_keeps_its_key_but_a_changed_copy_does_not() -> None:
    spec = RenderSpec(model="resnet18", layer="fc", kind="logit", unit=3)
    key, batch = spec.key(), spec.batch_key()
    assert spec == RenderSpec(model="resnet18", layer="fc", kind="logit", unit=3)  # a kept key changes no equality
    assert hash(spec) == hash(RenderSpec(model="resnet18", layer="fc", kind="logit", unit=3))
    assert "key" not in spec.model_dump() and "content key" not in repr(spec)
    other = spec.model_copy(update={"steps": 3})
    assert other.key() != key and other.key() == RenderSpec(**other.model_dump()).key()
    assert other.batch_key() != batch and spec.model_copy().key() == key


def test_planning_a_whole_resnet50_is_quick() -> None:
    """Every channel of every aliased conv layer, block and stage of a
    ResNet-50, and its logits (the CPU is shared: a generous bound)."""
    import time

    arch = ARCHS.get("resnet50")
    t0 = time.perf_counter()
    units, _ = plan_layers(JobRequest(model="resnet50", layers="all", units="all", random_weights=True), arch)
    groups = batches([u.spec for u in units], 32)
    seconds = time.perf_counter() - t0
    assert len(units) == sum(x.units for x in network_layers(arch)) > 25_000 and len(groups) > 800
    assert seconds < 10, f"planning {len(units)} units took {seconds:.1f}s"


# Over real Redis: the job's per-layer status, its atlases, a retry.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(data_dir=tmp_path_factory.mktemp("redis-layers")) as s:
        yield s


@pytest.fixture
def flows(server: RedisServer, tmp_path: Path) -> Iterator[Workflows]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    publisher = CeleryPublisher(Settings(redis_url=server.url))
    yield Workflows(JobStore(client), LocalStore(tmp_path), publisher, ARCHS, Limits(max_units_per_job=20))


def _queued_layers(flows: Workflows) -> list[tuple[str, set[str]]]:
    """(batch id, the layers of its specs) of each batch on the queue."""
    import base64

    from kombu.utils.encoding import bytes_to_str

    out = []
    for m in flows.jobs.r.lrange(QUEUE, 0, -1):  # type: ignore[union-attr]
        body = json.loads(bytes_to_str(base64.b64decode(json.loads(m)["body"])))  # type: ignore[no-untyped-call]
        batch = body[1]["batch"]
        out.append((batch["batch_id"], {i["spec"]["layer"] for i in batch["items"]}))
    return out


def _file_renders(store: Store, units: list[planning.PlannedUnit]) -> None:
    tile = png_bytes(np.full((8, 8, 3), 128, dtype=np.uint8))
    for u in units:
        store.put(layout.render_png_key(u.spec), tile, "image/png")


@pytest.mark.integration
def test_each_layer_counts_progresses_and_gets_its_atlas(flows: Workflows) -> None:
    body = req(layers=["conv1", "logits"], units=[0, 1, 2], batch_size=2, steps=2, size=64)
    plan = flows.submit(body, "acme")
    jobs, job = flows.jobs, plan.job_id
    assert [(x.name, x.path, x.units) for x in plan.layers] == [("conv1", "conv1", 3), ("logits", "fc", 3)]
    queued = _queued_layers(flows)
    assert len(queued) == 4 and all(len(layers) == 1 for _, layers in queued)  # batches never mix layers
    mapped = jobs.r.hgetall(f"dreamfarm:job:{job}:batch_layer")
    assert {b: {"conv1": "0", "fc": "1"}[layers.pop()] for b, layers in queued} == mapped

    s = jobs.summary(job)
    assert s["layer"] == "conv1" and json.loads(jobs.get(job)["request"])["layers"] == ["conv1", "logits"]
    assert [(x["layer"], x["path"], x["kind"], x["units"], x["pending"], x["progress"]) for x in s["layers"]] == [
        ("conv1", "conv1", "channel", 3, 3, 0.0), ("logits", "fc", "logit", 3, 3, 0.0),
    ]  # fmt: skip
    conv_batch = next(b for b, layers in _queued_layers(flows) if "conv1" in layers)
    jobs.set_progress(job, conv_batch, 2, 0.75)  # a running batch counts towards its own layer only
    s = jobs.summary(job)
    assert [x["progress"] for x in s["layers"]] == [pytest.approx(0.5), 0.0]

    conv, logits = plan.units[:3], plan.units[3:]
    for u in conv:
        jobs.mark(job, u.spec.key(), True)
    jobs.mark(job, logits[0].spec.key(), True)
    jobs.mark(job, logits[1].spec.key(), False, "boom")
    s = jobs.summary(job)
    assert [(x["done"], x["failed"], x["pending"]) for x in s["layers"]] == [(3, 0, 0), (1, 1, 1)]
    assert s["layers"][0]["progress"] == 1.0 and s["layers"][1]["progress"] == pytest.approx(2 / 3, abs=1e-3)
    assert jobs.mark(job, logits[2].spec.key(), True)  # the last unit: the job is finished, its atlas asked for
    assert jobs.summary(job)["state"] == "done_with_failures"

    _file_renders(flows.store, [u for u in plan.units if u is not logits[1]])
    first = write_job_atlas(job, jobs, flows.store)
    s = jobs.summary(job)
    keys = set(flows.store.list(""))
    conv_atlas, logits_atlas = (x["atlas_key"] for x in s["layers"])
    assert first == s["atlas_key"] == conv_atlas and logits_atlas and logits_atlas != conv_atlas
    for name, akey in (("conv1", conv_atlas), ("logits", logits_atlas)):
        assert {f"jobs/{job}/atlases/{name}.png", f"jobs/{job}/atlases/{name}.json"} <= keys
        assert {f"atlases/{akey}.png", f"atlases/{akey}.json"} <= keys
        manifest = json.loads(flows.store.get(f"jobs/{job}/atlases/{name}.json"))
        assert manifest["atlas_key"] == akey and manifest["title"] == f"resnet18 · {name}"
    assert [t["unit"] for t in json.loads(flows.store.get(f"jobs/{job}/atlases/logits.json"))["tiles"]] == [0, 2]
    assert f"jobs/{job}/atlas.png" not in keys  # a job with layers has its atlases per layer only
    record = json.loads(flows.store.get(f"jobs/{job}.json"))
    assert [x["atlas_key"] for x in record["layers"]] == [conv_atlas, logits_atlas] and len(record["units"]) == 6

    # The gallery's job page lists the layers, each with its atlas.
    from service.gallery.index import MemoryIndex
    from service.gallery.pages import Gallery, LiveLinks

    live = LiveLinks(flows.store)
    for x in s["layers"]:
        x["atlas_file"] = live.file(layout.atlas_keys(x["atlas_key"])[0])
    page = Gallery(MemoryIndex([]), ARCHS, flows.store).job(s, live, live.file(layout.atlas_keys(first)[0]))
    assert page.count("<tr><td><a href=") == 2
    assert (
        f'href="{live.layer("resnet18", "conv1")}">conv1' in page
        and f'href="{live.layer("resnet18", "fc")}">logits' in page
    )
    assert all(live.file(layout.atlas_keys(k)[0]) in page for k in (conv_atlas, logits_atlas))

    # A retry re-enqueues the failed unit in a batch of its layer, and counts it there.
    flows.jobs.r.delete(QUEUE)
    assert flows.retry(job, "acme") == 1
    ((batch, layers),) = _queued_layers(flows)
    assert layers == {"fc"} and jobs.r.hget(f"dreamfarm:job:{job}:batch_layer", batch) == "1"
    s = jobs.summary(job)
    assert s["atlas_key"] is None and [x["atlas_key"] for x in s["layers"]] == [None, None]
    assert [(x["done"], x["failed"], x["pending"]) for x in s["layers"]] == [(3, 0, 0), (2, 0, 1)]


@pytest.mark.integration
def test_cached_units_count_per_layer_and_a_single_layer_job_is_as_before(flows: Workflows) -> None:
    single = flows.submit(req(layer="conv1", units=[0, 1], steps=2, size=64), "acme")
    for u in single.units:
        flows.store.put(layout.render_sidecar_key(u.spec), b"{}", "application/json")
    s = flows.jobs.summary(single.job_id)
    assert s["layers"] is None and "layers" not in json.loads(flows.jobs.get(single.job_id)["request"])
    assert "layers" not in flows.jobs.get(single.job_id) and not flows.jobs.r.exists(
        f"dreamfarm:job:{single.job_id}:batch_layer"
    )

    several = flows.submit(req(layers=["conv1", "conv2"], units=[0, 1, 2], steps=2, size=64), "acme")
    assert len(several.cached) == 2 and sum(len(b) for b in several.batches) == 4
    s = flows.jobs.summary(several.job_id)
    assert [(x["cached"], x["pending"]) for x in s["layers"]] == [(2, 1), (0, 3)]
    assert s["layers"][0]["progress"] == pytest.approx(2 / 3, abs=1e-3)
    with pytest.raises(OverLimit, match="21 units in one job over 3 layers; the limit is 20"):
        flows.submit(req(layers=["conv1", "conv2", "conv3"], units={"start": 0, "stop": 7}), "acme")


# The CLI: --layers for render (locally) and submit.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unit", "1"], "give one layer with --layer L, or several with --layers L1,L2"),
        (["--layer", "conv1", "--layers", "conv2", "--unit", "1"], "not both"),
        (["--layers", " , ", "--unit", "1"], "--layers takes layer names separated by commas"),
        (["--layers", "conv1,conv99", "--unit", "1"], "unknown layer 'conv99'"),
        (["--layers", "conv1,logits", "--unit", "100"], "unit 100 out of range for layer conv1"),
    ],
)
def test_cli_layers_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from cli.main import main

    code = main(["render", "--model", "resnet18", "--random-weights", *args, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_cli_layers_become_the_request() -> None:
    from cli.args import layers_from_args

    assert layers_from_args("conv4", None) == {"layer": "conv4"}
    assert layers_from_args(None, "conv4, conv7,logits") == {"layers": ["conv4", "conv7", "logits"]}
    assert layers_from_args(None, "ALL") == {"layers": "all"}


@pytest.mark.slow
def test_render_several_layers_locally_files_an_atlas_per_layer(tmp_path: Path) -> None:
    from cli.main import main

    code = main(["render", "--model", "resnet18", "--random-weights", "--layers", "conv1,logits", "--units", "0-1",
                 "--steps", "1", "--size", "32", "--precision", "float32", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    assert len(list(tmp_path.glob("renders/resnet18/conv1/*/*.json"))) == 2
    assert len(list(tmp_path.glob("renders/resnet18/fc/*/*.json"))) == 2
    for name in ("conv1", "logits"):
        manifest = json.loads((tmp_path / "atlases" / f"{name}.json").read_text())
        assert [t["unit"] for t in manifest["tiles"]] == [0, 1] and (tmp_path / "atlases" / f"{name}.png").exists()
    assert not (tmp_path / "atlas.png").exists()
