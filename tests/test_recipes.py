"""Recipes beyond the lecture: parameterizations, per-image transforms,
diversity groups, minimizing, and the adversarial recipe, in the engine and
through the render workflow."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from skimage import data as samples

from service import engine, recipes
from service.errors import DreamfarmError
from service.images import decode_image, square_pixels
from service.request import RecipeName
from service.spec import RESIZE_LEVELS, RenderSpec
from service.transforms import RandomTransforms, output_size
from service.zoo import Registry, load_network

MODEL = "efficientnet_lite0"
PREP = Registry().get(MODEL).preprocessing


def specs(units: list[int], recipe: str = "lucid", **kw: Any) -> list[RenderSpec]:
    fields = {**recipes.recipe(recipe).model_dump(), "steps": 4, "size": 64, **kw}
    return [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, **fields) for u in units]


@pytest.fixture(scope="module")
def lite0_f64(registry: Registry) -> nn.Module:
    return load_network(registry.get(MODEL)).double()


def test_the_request_schema_knows_every_recipe() -> None:
    assert set(RecipeName.__args__) == set(recipes.names())  # type: ignore[attr-defined]


@pytest.mark.parametrize("recipe", ["lucid", "maco", "vivid"])
def test_batch_independence_with_transforms_float64(lite0_f64: nn.Module, recipe: str) -> None:
    """Each image draws its own transforms: rendered together or alone, the same image."""
    batch = specs([258, 700, 121], recipe)
    together = engine.render(lite0_f64, "_fc", batch, preprocessing=PREP, precision="float64")
    for i, spec in enumerate(batch):
        alone = engine.render(lite0_f64, "_fc", [spec], preprocessing=PREP, precision="float64")
        assert (alone.images[0] - together.images[i]).abs().max().item() < 1e-8


def test_diversity_groups_are_independent_float64(lite0_f64: nn.Module) -> None:
    """The samples of a unit share a loss term; two units' groups do not meet."""
    a = specs([258, 258], samples=2, diversity=5.0, diversity_layer="_blocks.5")
    a = [s.model_copy(update={"sample": k}) for k, s in enumerate(a)]
    b = [s.model_copy(update={"unit": 700}) for s in a]
    together = engine.render(lite0_f64, "_fc", a + b, preprocessing=PREP, precision="float64")
    for offset, group in ((0, a), (2, b)):
        alone = engine.render(lite0_f64, "_fc", group, preprocessing=PREP, precision="float64")
        assert (alone.images - together.images[offset : offset + 2]).abs().max().item() < 1e-8
        assert together.trace[-1].diversity is not None and together.trace[-1].diversity[offset] > 0
    # The samples of one unit start apart and are pushed apart.
    assert (together.images[0] - together.images[1]).abs().max().item() > 0.05


def test_transforms_are_drawn_per_image_and_keep_the_canvas_rules() -> None:
    steps = recipes.recipe("lucid").transforms
    assert output_size(steps, 224) == 224 + 24 - 8 - 4
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64).expand(2, 3, 32, 32)
    out = RandomTransforms(steps, [1, 2], 32, fill=0.5)(x)
    assert out.shape == (2, 3, 32 + 24 - 12, 32 + 24 - 12)
    assert not torch.equal(out[0], out[1])  # same image, own draws
    again = RandomTransforms(steps, [1], 32, fill=0.5)(x[:1])
    assert torch.equal(again[0], out[0])


# vivid resizes the network's view down to 0.6×: of a 64-px image that is
# 38 px, too little for Lite0 to climb surely in 12 steps, so it climbs at 128.
@pytest.mark.parametrize(("recipe", "size", "steps"), [("lucid", 64, 12), ("maco", 64, 12), ("vivid", 128, 24)])
def test_pixel_space_recipes_climb_and_save_the_image_itself(lite0: nn.Module, recipe: str, size: int,
                                                             steps: int) -> None:  # fmt: skip
    chosen = specs([258, 700], recipe, steps=steps, size=size)
    res = engine.render(lite0, "_fc", chosen, preprocessing=PREP, precision="float32")
    assert res.images.min() >= 0 and res.images.max() <= 1
    expected = (res.images.double().permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # as display rounds
    assert torch.equal(res.display, expected)
    first, last = res.trace[0].activation, res.trace[-1].activation
    assert all(b > a for a, b in zip(first, last))


def test_resize_is_a_function_of_the_step_only() -> None:
    """`resize`: every image of a batch is seen at the step's side (whatever
    its seed), the sides cover the range, and each image still draws its own
    transforms."""
    steps = recipes.recipe("vivid").transforms
    low, high = 0.5, 1.2
    a = RandomTransforms(steps, [1, 2], 64, fill=0.5, resize=(low, high))
    b = RandomTransforms(steps, [3], 64, fill=0.5, resize=(low, high))
    sides = [a.side(step) for step in range(64)]
    assert sides == [b.side(step) for step in range(64)]
    assert min(sides) == round(a.out_size * low) and max(sides) == round(a.out_size * high)
    assert len(set(sides)) == RESIZE_LEVELS
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64).expand(2, 3, 64, 64)
    for step in (0, 1, 2):
        out = a(x, step)
        assert out.shape[-2:] == (sides[step], sides[step])
        assert not torch.equal(out[0], out[1])
    # Without transforms, resize alone is a plain resize of the image.
    plain = RandomTransforms([], [1], 64, fill=0.5, resize=(0.5, 0.5))(x[:1], 0)
    expected = F.interpolate(x[:1], size=(32, 32), mode="bilinear", align_corners=False)
    assert (plain - expected).abs().max().item() < 1e-12


def test_resize_apart_stretches_each_axis_by_its_own_factor() -> None:
    """`resize_axes` "apart": height and width each take their own factor of
    the step (the same for every image of a batch), every pair of levels
    comes up, and the image is stretched to that shape."""
    steps = recipes.recipe("vivid").transforms
    a = RandomTransforms(steps, [1, 2], 64, fill=0.5, resize=(0.5, 1.2), resize_axes="apart")
    b = RandomTransforms(steps, [3], 64, fill=0.5, resize=(0.5, 1.2), resize_axes="apart")
    shapes = [a.shape(step) for step in range(256)]
    assert shapes == [b.shape(step) for step in range(256)]
    assert len(set(shapes)) == RESIZE_LEVELS**2
    assert [h for h, _ in shapes] == [RandomTransforms(steps, [1], 64, 0.5, (0.5, 1.2)).side(s) for s in range(256)]
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    plain = RandomTransforms([], [1], 64, fill=0.5, resize=(0.5, 1.2), resize_axes="apart")
    h, w = plain.shape(1)
    assert h != w
    expected = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    assert (plain(x, 1) - expected).abs().max().item() < 1e-12
    vivid = specs([258], "vivid")[0]
    apart = vivid.model_copy(update={"resize_axes": "apart"})
    assert "resize_axes" not in vivid.content() and apart.content()["resize_axes"] == "apart"
    assert apart.key() != vivid.key() and apart.batch_key() != vivid.batch_key()
    with pytest.raises(DreamfarmError, match="needs resize"):
        recipes.recipe("lucid", {"resize_axes": "apart"})


def test_the_new_fields_change_the_key_only_when_set() -> None:
    """`resize` and `param.flat_below` are left out of the key at their
    defaults: the renders made before them keep their keys."""
    lucid = specs([258], steps=256, size=224)[0]
    # lucid's key as computed before the fields existed (git 7af80d9).
    assert lucid.key() == "d71cc89d0ad6813165e3ca4966c9a5a00ce02060eb237980b5d57eafaea909b0"
    assert "resize" not in lucid.content() and "flat_below" not in lucid.content()["param"]  # type: ignore[operator]
    resized = lucid.model_copy(update={"resize": (0.5, 1.2)})
    flat = lucid.model_copy(update={"param": lucid.param.model_copy(update={"flat_below": 4.0})})
    assert len({lucid.key(), resized.key(), flat.key()}) == 3
    assert resized.batch_key() != lucid.batch_key() and flat.batch_key() != lucid.batch_key()
    vivid = specs([258], "vivid")[0]
    assert vivid.resize is not None and vivid.content()["resize"] == list(vivid.resize)
    clipped = lucid.model_copy(update={"grad_clip": 1.0})
    assert "grad_clip" not in lucid.content() and clipped.key() != lucid.key()
    assert clipped.batch_key() != lucid.batch_key()


def test_grad_clip_rescales_each_image_alone() -> None:
    """Each image's gradient, over all its tensors, to at most the norm; an
    image already within it untouched: what one image gets does not depend on
    the others."""
    a = torch.zeros(3, 2, 4, dtype=torch.float64)
    b = torch.zeros(3, 5, dtype=torch.float64)
    a.grad = torch.randn(3, 2, 4, dtype=torch.float64) * torch.tensor([10.0, 0.01, 3.0]).view(3, 1, 1)
    b.grad = torch.randn(3, 5, dtype=torch.float64)
    before = [a.grad.clone(), b.grad.clone()]
    engine.clip_per_image([a, b], 1.0)
    norms = (a.grad.flatten(1).pow(2).sum(1) + b.grad.pow(2).sum(1)).sqrt()
    old = (before[0].flatten(1).pow(2).sum(1) + before[1].pow(2).sum(1)).sqrt()
    for i in range(3):
        expected = min(1.0, 1.0 / old[i].item())
        assert norms[i].item() == pytest.approx(min(1.0, old[i].item()), rel=1e-9)
        assert torch.allclose(a.grad[i], before[0][i] * expected) and torch.allclose(b.grad[i], before[1][i] * expected)


def test_resize_is_validated() -> None:
    with pytest.raises(DreamfarmError, match="resize is"):
        recipes.recipe("vivid", {"resize": (1.2, 0.5)})
    with pytest.raises(DreamfarmError, match="at least 8 pixels"):
        recipes.recipe("vivid", {"size": 64, "resize": (0.1, 1.0)})


def test_minimize_lowers_the_unit(lite0: nn.Module) -> None:
    up = engine.render(lite0, "_fc", specs([258], steps=10), preprocessing=PREP, precision="float32")
    down = engine.render(lite0, "_fc", specs([258], steps=10, direction="min"), preprocessing=PREP, precision="float32")
    assert float(down.activation[0]) < float(up.activation[0])
    assert float(down.activation[0]) < down.trace[0].activation[0]


def _photo(size: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(samples.chelsea()).save(buf, format="PNG")
    return square_pixels(decode_image(buf.getvalue()), size)[None]


@pytest.mark.parametrize(("epsilon", "target"), [(4 / 255, 700), (2 / 255, 999)])
def test_adversarial_png_fools_the_network_within_epsilon(lite0: nn.Module, epsilon: float, target: int) -> None:
    """The cat photo, a target class, a small L∞ budget: the saved 8-bit image
    is the target, top-1, and no 8-bit value moved more than epsilon."""
    from service import quality

    photo = _photo(224)
    spec = specs([target], "adversarial", steps=120, size=224, epsilon=epsilon, init_image="ab" * 32)[0]
    res = engine.render(lite0, "_fc", [spec], preprocessing=PREP, precision="float32", originals=photo)
    assert res.original is not None
    entry = Registry().get(MODEL)
    before = quality.verdicts(lite0, entry, res.original, [target])[0]
    after = quality.verdicts(lite0, entry, res.display, [target])[0]
    assert before.top5[0][1] in ("tabby", "tiger cat", "Egyptian cat") and before.target_rank != 1
    assert after.target_rank == 1
    moved = (res.display.int() - res.original.int()).abs().max().item()
    assert moved <= int(epsilon * 255 + 1e-9)
    assert res.steps_taken[0] < 120  # stopped early, once the saved image was the target


def test_inconsistent_recipe_overrides_are_one_line_errors() -> None:
    with pytest.raises(DreamfarmError, match="epsilon bounds a perturbation"):
        recipes.recipe("lucid", {"epsilon": 0.1})
    with pytest.raises(DreamfarmError, match="unknown recipe 'deepdream'; valid recipes: lecture, lucid"):
        recipes.recipe("deepdream")
