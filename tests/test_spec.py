from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from service.spec import PriorTerm, Recipe, RenderSpec


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
    ],
)  # fmt: skip
def test_any_field_change_changes_the_key(change: dict[str, object]) -> None:
    assert _spec(**change).key() != _spec().key()


def test_every_field_is_covered_by_the_change_list() -> None:
    # If a field is added to RenderSpec, the test above must learn about it.
    covered = {"model", "layer", "kind", "unit", "seed", "steps", "lr", "size", "init_scale", "precision",
               "random_weights", "engine_version", "prior", "position"}  # fmt: skip
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
