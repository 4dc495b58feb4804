"""The zoo's torch-free catalog of torchvision's and timm's classifiers
(service/zoo/catalog_generated.py) says what the installed libraries say,
and the registry builds every one of them under its own metadata. If a test
here fails after an upgrade: `python -m service.zoo.generate_catalog`."""

from __future__ import annotations

import pytest
import torchvision

from service.zoo import Registry
from service.zoo import catalog_generated as gen
from service.zoo.catalog import IMAGENET_CLASSES, TORCHVISION_CHECKPOINTS
from service.zoo.generate_catalog import _Norms, _output_width, base_version, timm_rows, torchvision_rows


def test_versions_are_the_installed_ones() -> None:
    import timm

    installed = (base_version(torchvision.__version__), base_version(timm.__version__))
    assert installed == (gen.TORCHVISION_VERSION, gen.TIMM_VERSION)


def test_every_torchvision_classifier_is_listed_as_torchvision_publishes_it() -> None:
    norms = _Norms()
    rows = torchvision_rows(norms)
    assert set(rows) == set(torchvision.models.list_models(module=torchvision.models))
    named = {k: v for k, v in gen.NORMALIZATIONS.items()}
    for name, (weights, filename, crop, norm, classes) in rows.items():
        got = gen.TORCHVISION[name]
        assert got[:3] == (weights, filename, crop) and got[4] == classes, name
        assert named[got[3]] == norms.table()[norm], name


def test_every_timm_architecture_is_listed_with_its_pretrained_cfg() -> None:
    import timm

    norms = _Norms()
    rows = timm_rows(norms, widths=False)  # the widths need builds: a sample below
    assert set(rows) == set(timm.list_models()) == set(gen.TIMM)
    table = norms.table()
    for name, (module, tag, size, norm, classes, _width) in rows.items():
        got = gen.TIMM[name]
        assert got[:3] == (module, tag, size) and got[4] == classes, name
        assert gen.NORMALIZATIONS[got[3]] == table[norm], name
        assert classes or got[5] > 0, name


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "davit_base_fl"])
def test_a_backbone_without_classifier_has_its_output_width(name: str) -> None:
    if name not in gen.TIMM or gen.TIMM[name][4] != 0:
        pytest.skip(f"{name} is not a backbone without classifier in this timm")
    assert gen.TIMM[name][5] == _output_width(name)


def test_the_registry_names_them_all_and_keeps_the_old_names_first(registry: Registry) -> None:
    names = registry.names()
    old = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", *TORCHVISION_CHECKPOINTS]
    assert names[: len(old)] == old  # today's names, in today's order
    assert set(gen.TORCHVISION) <= set(names)
    assert {f"timm/{n}" for n in gen.TIMM} <= set(names)
    assert len(names) == 3 + len(gen.TORCHVISION) + len(gen.TIMM)


def test_metadata_comes_from_each_architecture(registry: Registry) -> None:
    # torchvision: the DEFAULT weights' crop size and normalization
    assert registry.get("inception_v3").input_size == 299
    assert registry.get("vit_h_14").input_size == 518
    assert registry.get("swin_v2_t").input_size == 256
    assert registry.get("efficientnet_v2_l").preprocessing.mean == (0.5, 0.5, 0.5)
    assert registry.get("vit_b_16").weights.expected_hash() == "c867db91"
    # ... except where a network the zoo had before would change its renders'
    # keys: efficientnet_b1 keeps 224 (its weights were published at 240).
    assert registry.get("efficientnet_b1").input_size == 224
    # timm: the default pretrained cfg
    vit = registry.get("timm/vit_tiny_patch16_224")
    assert (vit.input_size, vit.preprocessing.mean, vit.num_classes) == (224, (0.5, 0.5, 0.5), 1000)
    assert vit.classes == IMAGENET_CLASSES and vit.source == "timm" and vit.family == "timm/vision_transformer"
    assert registry.get("timm/convnext_tiny").preprocessing.std == (0.229, 0.224, 0.225)
    # no ImageNet-1k names for other class counts: numbered ones, as many as there are outputs
    in21k = next(f"timm/{n}" for n, row in gen.TIMM.items() if row[4] == 21843)
    assert registry.get(in21k).classes[:2] == ("class 0", "class 1") and len(registry.get(in21k).classes) == 21843
    # a backbone without classifier: its outputs are its pooled features
    eva = registry.get("timm/eva02_tiny_patch14_224")
    assert eva.num_classes == 0 and eva.classes[:1] == ("feature 0",)
    assert len(eva.classes) == gen.TIMM["eva02_tiny_patch14_224"][5] == 192


def test_unknown_model_suggests_close_names_without_listing_the_zoo(registry: Registry) -> None:
    from service.errors import UnknownModel

    with pytest.raises(UnknownModel) as info:
        registry.get("vit_tiny_patch16_224")
    msg = str(info.value)
    assert "timm/vit_tiny_patch16_224" in msg and "--search" in msg and len(msg) < 400
