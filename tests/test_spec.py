from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from service.spec import Param, PriorTerm, Recipe, RenderSpec, Transform

IMAGE = {"param": Param(name="image"), "init_image": "ab" * 32}


def _spec(**kw: object) -> RenderSpec:
    base: dict[str, object] = {"model": "vgg16", "layer": "classifier.6", "kind": "logit", "unit": 700}
    base.update(kw)
    return RenderSpec(**base)  # type: ignore[arg-type]


def test_equal_specs_have_equal_keys() -> None:
    assert _spec().key() == _spec().key()
    assert len(_spec().key()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"model": "vgg19"}, {"layer": "features.28"}, {"kind": "neuron"}, {"unit": 701}, {"seed": 1},
        {"steps": 100}, {"lr": 0.05}, {"size": 128}, {"init_scale": 0.02}, {"precision": "float32"},
        {"random_weights": True}, {"engine_version": "999"}, {"prior": (PriorTerm(name="tv", weight=1.0),)},
        {"prior": (PriorTerm(name="edge_energy", weight=2.0),)},
        {"param": Param(name="fourier")}, {"param": Param(name="maco")}, {"param": Param(decay=1.5)},
        {"param": Param(decorrelate=False)}, {"transforms": (Transform(name="jitter", amount=4),)},
        {"direction": "min"}, {"samples": 2}, {"samples": 2, "diversity": 1.0}, {"samples": 2, "sample": 1},
        {"diversity_layer": "features.3"}, IMAGE, {**IMAGE, "epsilon": 0.03}, {"stop_margin": 1.0},
        {"weights_sha256": "c" * 64}, {"resize": (0.5, 1.2)}, {"param": Param(flat_below=4.0)},
        {"grad_clip": 1.0}, {"resize": (0.5, 1.2), "resize_axes": "apart"},
    ],
)  # fmt: skip
def test_any_field_change_changes_the_key(change: dict[str, object]) -> None:
    assert _spec(**change).key() != _spec().key()


def test_every_field_is_covered_by_the_change_list() -> None:
    # If a field is added to RenderSpec, the test above must learn about it.
    covered = {"model", "layer", "kind", "unit", "seed", "steps", "lr", "size", "init_scale", "precision",
               "random_weights", "engine_version", "prior", "position", "param", "transforms", "direction",
               "samples", "diversity", "diversity_layer", "epsilon", "stop_margin", "sample", "init_image",
               "weights_sha256", "resize", "resize_axes", "grad_clip"}  # fmt: skip
    assert set(RenderSpec.model_fields) == covered


def test_position_changes_key_and_needs_neuron() -> None:
    a = _spec(layer="features.28", kind="neuron", unit=3)
    b = _spec(layer="features.28", kind="neuron", unit=3, position=(1, 2))
    assert a.key() != b.key()
    with pytest.raises(ValidationError):
        _spec(position=(1, 2))


def test_equivalent_priors_give_one_key() -> None:
    a = _spec(prior=(PriorTerm(name="tv", weight=0.5), PriorTerm(name="edge_energy")))
    b = _spec(prior=(PriorTerm(name="edge_energy"), PriorTerm(name="tv", weight=0.5), PriorTerm(name="none")))
    assert a.key() == b.key()


def test_default_recipe_is_the_lectures() -> None:
    r = Recipe()
    assert (r.steps, r.lr, r.size, r.init_scale) == (250, 0.1, 224, 0.01)
    assert [(t.name, t.weight) for t in r.prior] == [("edge_energy", 1.0)]


@pytest.mark.parametrize(
    "bad",
    [{"steps": 0}, {"steps": -5}, {"lr": 0}, {"lr": math.nan}, {"lr": math.inf}, {"size": 4}, {"unit": -1},
     {"kind": "pixel"}, {"prior": ({"name": "blur"},)}, {"prior": ({"name": "tv", "weight": -1},)},
     {"prior": ({"name": "tv", "weight": math.nan},)}, {"model": ""}, {"extra": 1}],
)  # fmt: skip
def test_bad_fields_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _spec(**bad)


def test_batch_key_ignores_unit_and_seed_only() -> None:
    assert _spec(unit=1, seed=3).batch_key() == _spec(unit=2).batch_key()
    assert _spec(steps=10).batch_key() != _spec().batch_key()


def test_noise_seed_ignores_recipe() -> None:
    assert _spec(steps=10).noise_seed() == _spec(steps=250).noise_seed()
    assert _spec(unit=1).noise_seed() != _spec(unit=2).noise_seed()


def test_lecture_keys_did_not_change_when_recipes_came() -> None:
    """A lecture render's key, as computed before recipes existed: fields added
    since are left out of the key while they hold their defaults."""
    assert _spec().key() == "2e0f99bc2c4b565e221055427181a9d81cd02e65fcf34993cb4aaa8b8ee498fe"


def test_samples_share_a_batch_but_not_their_noise() -> None:
    a, b = _spec(samples=3, sample=0), _spec(samples=3, sample=2)
    assert a.batch_key() == b.batch_key() and a.group_key() == b.group_key()
    assert a.noise_seed() != b.noise_seed() and a.key() != b.key()
    assert _spec(**IMAGE).batch_key() == _spec(**{**IMAGE, "init_image": "cd" * 32}).batch_key()


@pytest.mark.parametrize(
    "bad",
    [{"samples": 2, "sample": 2}, {"diversity": 1.0}, {"epsilon": 0.03}, {"param": Param(name="image")},
     {"init_image": "ab" * 32}, {**IMAGE, "epsilon": 2.0}, {"transforms": ({"name": "shear", "amount": 1},)},
     {"param": {"name": "wavelet"}}],
)  # fmt: skip
def test_inconsistent_recipes_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _spec(**bad)
