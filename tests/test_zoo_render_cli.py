"""Transformers and channels-last networks through the command line, as a
user runs it: `dreamfarm models NAME` lists their token / NHWC layers, and
`dreamfarm render` renders a channel of a middle block and a logit of a timm
ViT and of torchvision's Swin-T (random weights, 4 steps, 64 px, on the
CPU): the images move away from their starting noise and the unit rises.

What the units did, measured (value on the starting noise → on the final
image, units 0 and 1; the weights are seeded, so these repeat):
timm ViT-Tiny block6 channels 1.04 → 47.9 (×46) and −3.55 → 50.1, logits
0.21 → 1.87 (×8.9) and −0.30 → 1.51; Swin-T block6 channels 2.17 → 169 (×78)
and 18.7 → 173 (×9.3), logits 0.23 → 9.76 (×42) and −0.58 → 10.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from service import display
from service.input_sides import side_rule
from service.parameterizations import initial_noise
from service.spec import RenderSpec

pytestmark = pytest.mark.slow

NETWORKS = ["timm/vit_tiny_patch16_224", "swin_t"]


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("timm/vit_tiny_patch16_224", ["blocks.5", "NLD", "197x192 (tokens x D, 1 class token, 14x14 patches)"]),
        ("swin_t", ["features.3", "NHWC", "28x28x192 (HxWxC)", "stage2"]),
    ],
)
def test_models_lists_token_and_channels_last_layers(
    capsys: pytest.CaptureFixture[str], name: str, wanted: list[str]
) -> None:
    assert main(["models", name]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in wanted), out
    block6 = next(line for line in out.splitlines() if line.startswith("block6 "))
    assert "channel/neuron" in block6 and ("NLD" in block6 or "NHWC" in block6)


def _render(out: Path, model: str, layer: str, units: str) -> list[dict[str, Any]]:
    # No prior: with random weights a logit's gradient is tiny beside the
    # lecture's edge prior on 0.01-scale noise, and in 4 steps the prior
    # would decide the image; without it the test sees the unit alone.
    code = main(["render", "--model", model, "--layer", layer, "--units", units, "--random-weights",
                 "--recipe", "lecture", "--steps", "4", "--size", "64", "--prior", "none", "--out", str(out),
                 "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"renders/{model}/*/*/*.json"))]


@pytest.mark.parametrize("model", NETWORKS)
@pytest.mark.parametrize("layer", ["block6", "logits"])
def test_a_middle_channel_and_a_logit_render(tmp_path: Path, model: str, layer: str) -> None:
    metas = _render(tmp_path, model, layer, "0-1")
    assert sorted(m["spec"]["unit"] for m in metas) == [0, 1]
    for m in metas:
        assert m["random_weights"] and m["spec"]["kind"] == ("logit" if layer == "logits" else "channel")
        spec = RenderSpec.model_validate(m["spec"])
        start = display.lecture_uint8(initial_noise([spec]))[0].numpy().astype(np.int16)
        shown = np.asarray(Image.open(tmp_path / m["png"]).convert("RGB")).astype(np.int16)
        assert start.shape == shown.shape == (64, 64, 3)
        assert np.abs(shown - start).mean() > 5, "the image is still its starting noise"
        # the trace's step 0 is the unit on the starting noise, before any update
        before, after = m["trace"][0]["activation"], m["activation"]
        assert after > before + max(0.5, abs(before)), (before, after)


@pytest.mark.parametrize("model", NETWORKS)
def test_the_default_recipe_renders_them_at_sides_they_accept(tmp_path: Path, model: str) -> None:
    """The default recipe crops and resizes what the network sees: a ViT's
    patch embedding takes only multiples of its patch, so the transforms
    sample their view at the nearest such side."""
    code = main(["render", "--model", model, "--layer", "logits", "--units", "3", "--random-weights",
                 "--steps", "3", "--size", "64", "--out", str(tmp_path), "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    (meta,) = [json.loads(p.read_text()) for p in tmp_path.glob("renders/**/3/*.json")]
    assert meta["recipe"] == "vivid" and meta["spec"]["resize"] is not None
    assert np.asarray(Image.open(tmp_path / meta["png"])).shape == (64, 64, 3)


def test_side_rules() -> None:
    import timm
    import torchvision

    dynamic = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True)
    strict = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    assert [side_rule(dynamic)(s) for s in (31, 52, 212, 3)] == [32, 48, 208, 16]
    assert side_rule(strict)(100) == 224
    assert side_rule(torchvision.models.vit_b_16())(200) == 224
    assert side_rule(torchvision.models.resnet18())(37) == 37
