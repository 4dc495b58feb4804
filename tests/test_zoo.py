from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage import data as skdata

from service.errors import BadUnit, UnknownLayer, UnknownModel, WeightsError
from service.zoo import Architecture, Registry, load_network
from service.zoo.network import WeightsConfig


def _photo(name: str) -> torch.Tensor:
    img: np.ndarray = getattr(skdata, name)()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)


@pytest.mark.parametrize(
    ("photo", "accepted"),
    [("chelsea", {"Egyptian cat", "tabby", "tiger cat"}), ("coffee", {"espresso", "cup", "coffee mug"})],
)
def test_bundled_network_classifies_real_photos(
    lite0: nn.Module, registry: Registry, photo: str, accepted: set[str]
) -> None:
    entry = registry.get("efficientnet_lite0")
    with torch.no_grad():
        logits = lite0(entry.preprocessing.to_input(_photo(photo)))
    assert entry.classes[int(logits.argmax())] in accepted


def test_preprocessing_belongs_to_the_entry(registry: Registry) -> None:
    lite = registry.get("efficientnet_lite0").preprocessing
    px = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1)
    # TF-Lite scaling: (pixel*255 - 127) / 128
    assert torch.allclose(lite.to_input(px).flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))
    assert torch.allclose(lite.to_pixels(lite.to_input(px)), px)
    assert registry.get("vgg16").preprocessing.mean == (0.485, 0.456, 0.406)


def test_vgg16_aliases_follow_the_lecture(registry: Registry) -> None:
    arch = Architecture(registry.get("vgg16"))
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    for i, idx in enumerate(convs, start=1):
        assert arch.layer(f"conv{i}").path == f"features.{idx}"
    assert arch.layer("fc1").path == "classifier.0"
    assert arch.layer("logits").path == "classifier.6" == arch.layer("fc3").path
    assert arch.layer("features.28").units == 512
    assert arch.layer("conv4").shape == (128, 112, 112)
    assert arch.layer("logits").kinds == ("logit",)
    assert arch.layer("conv4").kinds == ("channel", "neuron")


@pytest.mark.parametrize("name", ["resnet50", "alexnet", "googlenet", "efficientnet_lite0", "mobilenet_v2"])
def test_every_family_has_logits_and_convs(registry: Registry, name: str) -> None:
    arch = Architecture(registry.get(name))
    assert arch.layer("logits").units == 1000
    assert arch.layer("conv1").kinds == ("channel", "neuron")


def test_class_names_resolve(registry: Registry) -> None:
    arch = Architecture(registry.get("vgg16"))
    logits = arch.layer("logits")
    assert arch.unit(logits, "logit", "paper towel") == 700
    assert arch.unit(logits, "logit", "Samoyed") == 258
    assert arch.unit(logits, "logit", "samoyed") == 258
    assert arch.unit(logits, "logit", "700") == 700
    assert arch.label(logits, "logit", 700) == "paper towel"


def test_unknown_model_lists_models(registry: Registry) -> None:
    with pytest.raises(UnknownModel, match=r"unknown model 'vgg17'.*vgg16"):
        registry.get("vgg17")


def test_unknown_layer_lists_valid_layers(registry: Registry) -> None:
    arch = Architecture(registry.get("vgg16"))
    with pytest.raises(UnknownLayer) as info:
        arch.layer("conv14")
    msg = str(info.value)
    assert "conv13" in msg and "logits" in msg and "\n" not in msg


def test_unit_out_of_range_and_wrong_kind(registry: Registry) -> None:
    arch = Architecture(registry.get("vgg16"))
    with pytest.raises(BadUnit, match="valid units are 0-999"):
        arch.unit(arch.layer("logits"), "logit", 1000)
    with pytest.raises(BadUnit, match="valid units are 0-127"):
        arch.unit(arch.layer("conv4"), "channel", 128)
    with pytest.raises(BadUnit, match="names are only for class logits"):
        arch.unit(arch.layer("conv4"), "channel", "Samoyed")
    with pytest.raises(BadUnit, match="did you mean"):
        arch.unit(arch.layer("logits"), "logit", "samoyd")
    with pytest.raises(BadUnit, match="valid kinds"):
        arch.kind(arch.layer("logits"), "channel")


def test_missing_weights_names_file_place_and_flag(registry: Registry, empty_torch_home: Path) -> None:
    with pytest.raises(WeightsError) as info:
        load_network(registry.get("vgg16"))
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and str(empty_torch_home) in msg and "--random-weights" in msg


def test_weights_from_torch_hub_cache_are_found_and_checked(registry: Registry, empty_torch_home: Path) -> None:
    # A file with the right name but the wrong content is refused (sha256 prefix in the name).
    ckpt = empty_torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, ckpt / "alexnet-owt-7be5be79.pth")
    with pytest.raises(WeightsError, match="sha256"):
        load_network(registry.get("alexnet"))


def test_tampered_weights_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    entry = registry.get("efficientnet_lite0")
    from service.zoo.weights import locate

    src = locate(entry.name, entry.weights)
    bad = tmp_path / src.name
    shutil.copy(src, bad)
    with bad.open("r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="refusing"):
        load_network(entry, config=WeightsConfig(path=str(bad)))


def test_random_weights_are_seeded_and_frozen(registry: Registry) -> None:
    entry = registry.get("alexnet")
    a, b = load_network(entry, random_weights=True), load_network(entry, random_weights=True)
    pa, pb = next(a.parameters()), next(b.parameters())
    assert torch.equal(pa, pb)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
