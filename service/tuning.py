"""Tuning a recipe for one network: a seeded hill climb over a recipe's fields,
each candidate scored by how recognizable its renders of a few units are.

No I/O here: the caller gives a render function (specs → rendered batch) and
the judges; the result is data (`TuneResult`) that `service.tuned_recipes`
keeps in the bucket and that `"recipe": "tuned"` uses.

The score of a candidate (higher is better):

- class logits, with judges that share the network's classes (ImageNet):
  the judges' mean probability of the true class on the saved 8-bit PNGs
  (transfer to other networks is what makes a picture readable, not the
  renderer's own certainty, which every recipe maxes out);
- class logits of a network no judge shares classes with (a user's own):
  the network's own probability of the true class on the PNG seen through a
  few fixed changes of view (a centre crop, a mirror image), so a candidate
  that only wins on the exact pixels it optimized does not win;
- channels and neurons: the unit's activation on its render relative to the
  base recipe's (1.0 = as strong as the base), the network's own measure.

The base recipe itself is the first candidate, so the result is never worse
than the base on the tuning units.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from service import quality
from service.renderer import Judge
from service.spec import Recipe, RenderSpec, UnitKind
from service.tuning_moves import moves
from service.zoo import ModelEntry

Metric = Literal["judges_p_true", "own_p_true_views", "relative_activation"]


class RenderedBatch(Protocol):
    """What the search needs of a rendered batch (service.renderer.Rendered)."""

    @property
    def result(self) -> Any: ...  # .display (B, H, W, 3) uint8, .activation (B,)


RenderFn = Callable[[list[RenderSpec]], RenderedBatch]
ProgressFn = Callable[[int, int, float], None]  # candidates done, candidates in all, best score so far


@dataclass(frozen=True)
class Target:
    """What is rendered to score a candidate: units of one layer."""

    model: str
    layer: str
    kind: UnitKind
    units: tuple[int, ...]
    size: int
    seed: int = 0
    random_weights: bool = False
    weights_sha256: str | None = None  # a registered network's weights (service.zoo.registered)


@dataclass
class Trial:
    change: str  # "base", or the move that made it from the best so far ("lr x1.4")
    fields: dict[str, Any]
    score: float
    kept: bool


@dataclass
class TuneResult:
    base: str
    fields: dict[str, Any]  # the best recipe's fields (Recipe, JSON form, without size)
    score: float
    base_score: float
    metric: Metric
    units: tuple[int, ...]
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def improvement(self) -> float:
        return self.score - self.base_score


def metric_for(kind: UnitKind, entry: ModelEntry, judges: Sequence[Judge]) -> Metric:
    if kind != "logit":
        return "relative_activation"
    if any(j.entry.classes == entry.classes for j in judges):
        return "judges_p_true"
    return "own_p_true_views"


def recipe_fields(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json", exclude={"size"})


def specs_for(target: Target, fields: dict[str, Any]) -> list[RenderSpec]:
    first = RenderSpec(model=target.model, layer=target.layer, kind=target.kind, unit=target.units[0],
                       seed=target.seed, size=target.size, random_weights=target.random_weights,
                       weights_sha256=target.weights_sha256, **fields)  # fmt: skip
    return first.for_units((u, 0) for u in target.units)


def score(
    rendered: RenderedBatch, target: Target, metric: Metric, entry: ModelEntry, net: torch.nn.Module,
    judges: Sequence[Judge], reference: torch.Tensor | None = None,
) -> tuple[float, torch.Tensor]:  # fmt: skip
    """The batch's score under `metric`, and the per-unit values it averages
    (for relative activation: the raw activations, `reference` the base's)."""
    result = rendered.result
    idx = torch.tensor(target.units)
    if metric == "judges_p_true":
        per = [quality.probabilities(j.net, j.entry, result.display)[torch.arange(len(idx)), idx]
               for j in judges if j.entry.classes == entry.classes]  # fmt: skip
        values = torch.stack(per).mean(0)
        return float(values.mean()), values
    if metric == "own_p_true_views":
        views = [quality.probabilities(net, entry, shown, target.size)[torch.arange(len(idx)), idx]
                 for shown in _views(result.display)]  # fmt: skip
        values = torch.stack(views).mean(0)
        return float(values.mean()), values
    act = torch.as_tensor(result.activation, dtype=torch.float64).cpu()
    if reference is None:
        return 1.0, act
    rel = act / reference.abs().clamp_min(1e-8)
    return float(rel.mean()), act


def _views(shown: torch.Tensor) -> list[torch.Tensor]:
    """The PNG as saved, its centre 80% enlarged back to full size, and its mirror image."""
    side = shown.shape[1]
    cut = max(1, round(side * 0.1))
    pixels = shown.permute(0, 3, 1, 2).float()
    crop = F.interpolate(pixels[:, :, cut : side - cut, cut : side - cut], size=(side, side), mode="bilinear",
                         antialias=True, align_corners=False)  # fmt: skip
    as_uint8 = crop.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return [shown, as_uint8, shown.flip(2)]


def tune(
    render: RenderFn, target: Target, base_name: str, base: Recipe, *, entry: ModelEntry, net: torch.nn.Module,
    judges: Sequence[Judge] = (), budget: int = 8, seed: int = 0, progress: ProgressFn | None = None,
    min_gain: float = 0.005,
) -> TuneResult:  # fmt: skip
    """Seeded hill climb from `base`: each candidate changes one field of the
    best so far (moves in a seeded random order, each tried once per best);
    a candidate is kept when it beats the best by `min_gain`. `budget`
    candidates are rendered in all, the base included."""
    if budget < 1:
        raise ValueError("budget must be >= 1")
    t0 = time.perf_counter()
    metric = metric_for(target.kind, entry, judges)
    best = recipe_fields(base)
    rendered = render(specs_for(target, best))
    best_score, reference = score(rendered, target, metric, entry, net, judges)
    base_score = best_score
    trials = [Trial("base", best, best_score, True)]
    if progress:
        progress(1, budget, best_score)
    rng = random.Random(seed)
    seen = {_frozen(best)}
    queue = _shuffled(moves(best), rng)
    while len(trials) < budget and queue:
        name, move = queue.pop(0)
        candidate = move(best)
        if candidate is None or _frozen(candidate) in seen or not is_valid(candidate, target.size):
            continue
        seen.add(_frozen(candidate))
        value, _ = score(render(specs_for(target, candidate)), target, metric, entry, net, judges, reference)
        kept = value > best_score + min_gain
        trials.append(Trial(name, candidate, value, kept))
        if kept:
            best, best_score = candidate, value
            queue = _shuffled(moves(best), rng)  # from the new best, every move again
        if progress:
            progress(len(trials), budget, best_score)
    return TuneResult(base=base_name, fields=best, score=best_score, base_score=base_score, metric=metric,
                      units=target.units, trials=trials, seconds=time.perf_counter() - t0)  # fmt: skip


def _shuffled(items: list[Any], rng: random.Random) -> list[Any]:
    out = list(items)
    rng.shuffle(out)
    return out


def is_valid(fields: dict[str, Any], size: int) -> bool:
    try:
        Recipe.model_validate({**fields, "size": size})
    except ValueError:
        return False
    return True


def _frozen(fields: dict[str, Any]) -> str:
    from service.spec import canonical_json

    return canonical_json(fields)


def sample_units(count: int, available: int, seed: int) -> tuple[int, ...]:
    """`count` distinct units of a layer with `available`, seeded (sorted)."""
    return tuple(sorted(random.Random(seed).sample(range(available), min(count, available))))
