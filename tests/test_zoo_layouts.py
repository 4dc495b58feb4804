"""Layers of every kind of network: token sequences (ViT), channels-last maps
(Swin, ConvNeXt's inner layers) and channels-first maps are all listed, with
their layout, and a unit means the same on each; every family has its
landmarks (logits, blockN, stageN, head/prepool); weights load from
safetensors or a state dict, never by running code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from service import engine
from service.errors import BadRequest, BadUnit, WeightsError
from service.objectives import LayerProbe, UnitSelector
from service.spec import RenderSpec
from service.zoo import Architecture, Registry, load_network
from service.zoo.layouts import NCHW, LayerLayout, TokenInfo, layout_of
from service.zoo.network import WeightsConfig

VIT = "timm/vit_tiny_patch16_224"

# ---- what a unit is, on each layout -------------------------------------------------------------


def test_channel_and_neuron_mean_the_same_channels_first_or_last() -> None:
    maps = torch.randn(3, 5, 4, 4, dtype=torch.float64)  # (B, C, H, W)
    last = maps.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    units, where = [0, 2, 4], [None, (0, 3), (1, 1)]
    for kind in ("channel", "neuron"):
        first = UnitSelector(kind, units, where)(maps, NCHW)
        assert torch.equal(first, UnitSelector(kind, units, where)(last, LayerLayout("NHWC"))), kind
    # channel: summed over every position; neuron: the centre unless given
    assert torch.equal(UnitSelector("channel", units)(maps, NCHW), maps[[0, 1, 2], units].sum(dim=(1, 2)))
    neuron = UnitSelector("neuron", units, where)(maps, NCHW)
    assert neuron.tolist() == [maps[0, 0, 2, 2].item(), maps[1, 2, 0, 3].item(), maps[2, 4, 1, 1].item()]


def test_channel_and_neuron_on_tokens() -> None:
    tokens = torch.randn(3, 1 + 9, 5, dtype=torch.float64)  # a class token, then 3x3 patches
    with_cls = LayerLayout("NLD", prefix_tokens=1, class_token=True, grid=(3, 3))
    units = [0, 2, 4]
    # channel: one feature summed over all tokens, the class token included
    summed = UnitSelector("channel", units)(tokens, with_cls)
    assert torch.allclose(summed, tokens[[0, 1, 2], :, units].sum(dim=1))
    # neuron: the class token by default, else (row, col) of the patch grid after it
    neuron = UnitSelector("neuron", units, [None, (0, 2), (2, 1)])(tokens, with_cls)
    assert neuron.tolist() == [tokens[0, 0, 0].item(), tokens[1, 1 + 2, 2].item(), tokens[2, 1 + 7, 4].item()]
    # without a class token: the centre patch
    patches = tokens[:, 1:]
    plain = LayerLayout("NLD", grid=(3, 3))
    assert UnitSelector("neuron", [1])(patches[:1], plain).item() == patches[0, 4, 1].item()


def test_the_layout_comes_from_the_shape_and_then_the_module() -> None:
    none = TokenInfo()
    conv, linear = nn.Conv2d(3, 8, 1), nn.Linear(8, 8)
    assert layout_of(conv, (8, 14, 14), none) == NCHW
    assert layout_of(linear, (14, 14, 8), none).layout == "NHWC"  # type: ignore[union-attr]
    # all three sides equal: a Linear works on the last dimension, a conv on the second
    assert layout_of(linear, (8, 8, 8), none).layout == "NHWC"  # type: ignore[union-attr]
    assert layout_of(conv, (8, 8, 8), none) == NCHW
    assert layout_of(nn.Sequential(conv, nn.ReLU(), nn.Dropout()), (8, 8, 8), none) == NCHW
    # attention's inner tensors (heads, tokens, head width) are no layer
    assert layout_of(linear, (3, 197, 64), none) is None
    tokens = layout_of(linear, (197, 192), TokenInfo(prefix=1, class_token=True))
    assert tokens == LayerLayout("NLD", 1, True, (14, 14))


# ---- the zoo's layers on real architectures (traced on the meta device) -----------------------


def test_a_timm_vit_lists_token_layers_with_its_class_token(registry: Registry) -> None:
    arch = Architecture(registry.get(VIT))
    block = arch.layer("block6")
    assert (block.path, block.layout, block.shape, block.units) == ("blocks.5", "NLD", (197, 192), 192)
    assert block.arrangement.class_token and block.arrangement.grid == (14, 14)
    assert block.kinds == ("channel", "neuron") and "1 class token" in block.describe()
    assert arch.layer("logits").path == "head" and arch.layer("logits").units == 1000
    assert arch.position(block, "neuron", (13, 13)) == (13, 13)
    with pytest.raises(BadUnit, match="outside the 14x14 grid"):
        arch.position(block, "neuron", (14, 0))
    # diversity's Gram matrices work on tokens too
    assert arch.conv_layer("block3", before="block6").path == "blocks.2"


def test_swin_lists_channels_last_maps(registry: Registry) -> None:
    arch = Architecture(registry.get("swin_t"))
    stage = arch.layer("stage2")
    assert (stage.path, stage.layout, stage.shape, stage.units) == ("features.3", "NHWC", (28, 28, 192), 192)
    assert arch.position(stage, "neuron", (27, 0)) == (27, 0)
    assert arch.layer("prepool").path == "norm" and arch.layer("prepool").layout == "NHWC"


def test_convnext_inner_layers_are_read_channels_last(registry: Registry) -> None:
    """torchvision's ConvNeXt permutes to channels-last inside each block:
    its LayerNorm and Linear layers have as many units as features, not as
    rows (which is what reading them as NCHW gave)."""
    arch = Architecture(registry.get("convnext_tiny"))
    norm = arch.layer("features.1.0.block.2")
    assert (norm.layout, norm.shape, norm.units) == ("NHWC", (56, 56, 96), 96)
    assert arch.layer("conv1").layout == "NCHW" and arch.layer("block1").shape == (96, 56, 56)


# family → (layout of its blocks, whether it is built in stages)
FAMILIES = {
    "vit_b_16": ("NLD", False),
    "swin_t": ("NHWC", True),
    "convnext_tiny": ("NCHW", True),
    "resnet50": ("NCHW", True),
    "regnet_y_400mf": ("NCHW", True),
    "maxvit_t": ("NCHW", True),
    "efficientnet_v2_s": ("NCHW", True),
    "inception_v3": ("NCHW", False),
    VIT: ("NLD", False),
    "timm/convnext_tiny": ("NCHW", True),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_has_its_landmarks(registry: Registry, name: str) -> None:
    layout, staged = FAMILIES[name]
    arch = Architecture(registry.get(name))
    order = [x.path for x in arch.layers]
    logits = arch.layer("logits")
    assert logits.kinds == ("logit",) and logits.units == len(arch.entry.classes) == 1000
    blocks = [a for x in arch.layers for a in x.aliases if a.startswith("block")]
    assert blocks == [f"block{i}" for i in range(1, len(blocks) + 1)] and len(blocks) >= 4
    for alias in ("block1", blocks[-1]):
        assert arch.layer(alias).layout == layout and arch.layer(alias).kinds == ("channel", "neuron")
    last_block = arch.layer(blocks[-1])
    prepool = arch.layer("prepool")  # what the classifier sees
    assert prepool.has_positions and order.index(last_block.path) <= order.index(prepool.path)
    assert order.index(prepool.path) < order.index(logits.path)
    stages = [a for x in arch.layers for a in x.aliases if a.startswith("stage")]
    assert (len(stages) >= 3) == staged, stages
    # `head` is that layer too, unless the network has a module called head
    # (timm's and torchvision's Swin classifier): then it is that module.
    head = arch.layer("head")
    assert head is prepool or head.path == "head"


def test_landmarks_of_the_older_networks_are_added_not_changed(registry: Registry) -> None:
    arch = Architecture(registry.get("resnet50"))
    assert arch.layer("conv1").path == "conv1" and arch.layer("logits").path == "fc" == arch.layer("fc1").path
    assert arch.layer("stage4").path == "layer4" and arch.layer("block16").path == "layer4.2"
    assert arch.layer("conv1").aliases == ("conv1",)
    # the default diversity layer is chosen among the aliases they had
    assert arch.conv_layer(None, before="logits").path == arch.conv_layer(None, before="fc").path
    lite = Architecture(registry.get("efficientnet_lite0"))
    assert lite.layer("head").path == "_conv_head" and lite.layer("block6").path == "_blocks.5"
    with pytest.raises(Exception, match="unknown layer 'prepool'"):
        lite.layer("prepool")  # its landmarks are its own


@pytest.mark.parametrize(
    ("name", "logits"),
    [("timm/deit_tiny_distilled_patch16_224", "head"), ("timm/dla34", "fc"), ("timm/volo_d1_224", "head")],
)
def test_logits_where_the_output_is_computed_after_the_last_module(registry: Registry, name: str, logits: str) -> None:
    """DeiT averages a class and a distillation head, VOLO adds a per-token
    head to its class head, DLA flattens a 1x1 convolution's map: the logits
    are the class head."""
    arch = Architecture(registry.get(name))
    assert arch.layer("logits").path == logits and arch.layer("logits").units == 1000
    assert arch.layer("logits").kinds == ("logit",) and arch.layer("prepool").units != 1000


def test_a_backbone_without_classifier_has_an_output_but_no_logits(registry: Registry) -> None:
    arch = Architecture(registry.get("timm/eva02_tiny_patch14_224"))
    out = arch.layer("output")
    assert out.kinds == ("neuron",) and out.units == 192 == len(arch.entry.classes)
    assert all(x.kinds != ("logit",) for x in arch.layers)
    with pytest.raises(BadRequest, match="no activation map"):
        arch.conv_layer("output", before="output")


# ---- the engine on a token network: batch independence in float64 -------------------------------


@pytest.fixture(scope="module")
def vit64(registry: Registry) -> nn.Module:
    return load_network(registry.get(VIT), random_weights=True).double()


def _specs(layer: str, kind: str, units: list[int], **kw: object) -> list[RenderSpec]:
    base: dict[str, object] = {"model": VIT, "layer": layer, "kind": kind, "steps": 4, "size": 48,
                               "random_weights": True}  # fmt: skip
    base.update(kw)
    return [RenderSpec(unit=u, **base) for u in units]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize(("layer", "kind"), [("blocks.5", "channel"), ("blocks.5", "neuron"), ("head", "logit")])
def test_batch_independence_float64_on_tokens(vit64: nn.Module, registry: Registry, layer: str, kind: str) -> None:
    """Three units together give the images each gives alone (a 3x3 patch
    grid and its class token at 48 px: the ViT resamples its position
    embedding to the size)."""
    specs = _specs(layer, kind, [0, 7, 100])
    pre = registry.get(VIT).preprocessing
    together = engine.render(vit64, layer, specs, precision="float64", preprocessing=pre)
    for i, spec in enumerate(specs):
        alone = engine.render(vit64, layer, [spec], precision="float64", preprocessing=pre)
        assert (alone.images[0] - together.images[i]).abs().max().item() < 1e-8


def test_the_probe_reads_a_layer_as_the_zoo_lists_it(vit64: nn.Module, registry: Registry) -> None:
    arch = Architecture(registry.get(VIT), 48)
    probe = LayerProbe(vit64, ["blocks.5", "patch_embed"])
    acts = probe.all(torch.zeros(1, 3, 48, 48, dtype=torch.float64))
    for path in ("blocks.5", "patch_embed"):
        assert acts.layouts[path] == arch.layer(path).arrangement  # type: ignore[attr-defined]
    assert arch.layer("patch_embed").layout == "NHWC"  # timm's dynamic-size patch embedding


# ---- weights: tensors only, from files -----------------------------------------------------------


def test_timm_weights_load_from_safetensors_and_from_a_state_dict(registry: Registry, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    entry = registry.get(VIT)
    trained = load_network(entry, random_weights=True, seed=7)
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"state_dict": state}, tmp_path / f"timm-{VIT.split('/')[1]}.pth")  # a training checkpoint
    for config in (WeightsConfig(path=str(tmp_path / "model.safetensors")), WeightsConfig(weights_dir=str(tmp_path))):
        net = load_network(entry, config=config)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), state.values()))
        assert not net.training and not any(p.requires_grad for p in net.parameters())


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this ran while loading",))


def test_a_file_that_would_run_code_is_refused(registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "model.pth"
    with bad.open("wb") as f:
        pickle.dump({"head.weight": _Payload()}, f, protocol=2)
    with pytest.raises(WeightsError, match="could not be read"):
        load_network(registry.get(VIT), config=WeightsConfig(path=str(bad)))


def test_weights_that_do_not_fit_are_refused(registry: Registry, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(3, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(WeightsError, match="does not fit timm/vit_tiny_patch16_224"):
        load_network(registry.get(VIT), config=WeightsConfig(path=str(tmp_path / "x.safetensors")))


def test_missing_timm_weights_name_the_files_looked_for(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        load_network(registry.get(VIT), config=WeightsConfig(weights_dir=str(tmp_path), torch_home=str(tmp_path)))
    msg = str(info.value)
    assert "timm-vit_tiny_patch16_224.safetensors" in msg and "--random-weights" in msg


def test_googlenet_and_inception_are_built_as_googles_weights_expect(registry: Registry) -> None:
    for name in ("googlenet", "inception_v3"):
        entry = registry.get(name)
        assert entry.build_for_weights is not None and entry.adapt_state is not None
        assert entry.build_for_weights().transform_input and not entry.build().transform_input  # type: ignore[union-attr]
        kept = entry.adapt_state({"fc.weight": torch.zeros(1), "aux1.fc.weight": torch.zeros(1),
                                  "AuxLogits.fc.weight": torch.zeros(1)}, nn.Identity())  # fmt: skip
        assert list(kept) == ["fc.weight"]


def test_random_weights_work_for_networks_built_with_torch_in_their_constructor(registry: Registry) -> None:
    # torchvision's RegNet works out its widths with torch: not on the meta device
    net = load_network(registry.get("regnet_x_400mf"), random_weights=True)
    assert Architecture(registry.get("regnet_x_400mf")).layer("stage4").units == 400
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
