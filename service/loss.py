"""The loss, assembled from the spec's objective terms: the unit (maximized
or minimized), the prior h on the image, and Lucid's diversity among the
samples of a unit. One value per image, so a batch's loss is a sum of
independent per-image (per-group, for diversity) losses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from service.objectives import UnitSelector, group_similarity, layout_in
from service.priors import combined_prior
from service.spec import RenderSpec


@dataclass
class LossParts:
    activation: torch.Tensor  # (B,) the unit's value f
    prior: torch.Tensor  # (B,) h(image)
    diversity: torch.Tensor | None  # (B,) similarity to the group's other samples
    total: torch.Tensor  # (B,) what is minimized


class Objective:
    def __init__(self, specs: Sequence[RenderSpec], device: torch.device) -> None:
        spec0 = specs[0]
        self.target = spec0.layer
        self.select = UnitSelector(spec0.kind, [s.unit for s in specs], [s.position for s in specs], device=device)
        self.prior = combined_prior(spec0.prior)
        self.sign = 1.0 if spec0.direction == "max" else -1.0
        self.diversity = spec0.diversity
        self.diversity_layer = spec0.diversity_layer or spec0.layer
        keys = [s.group_key() for s in specs]
        self.groups = [keys.index(k) for k in keys]

    @property
    def layers(self) -> list[str]:
        """The layers the loss reads, the target first."""
        return [self.target, self.diversity_layer] if self.diversity else [self.target]

    def unit(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.select(acts[self.target], layout_in(acts, self.target))

    def __call__(self, image: torch.Tensor, acts: dict[str, torch.Tensor]) -> LossParts:
        act = self.unit(acts).to(image.dtype)
        h = self.prior(image)
        # The lecture's h - f, or h + f to minimize the unit (a "negative").
        total = h - act if self.sign > 0 else h + act
        div = None
        if self.diversity:
            # Gram matrices over channels: a channels-last map or a token
            # sequence is read channels first, as a convolution's map is.
            at = layout_in(acts, self.diversity_layer).canonical(acts[self.diversity_layer])
            div = group_similarity(at, self.groups).to(image.dtype)
            total = total + self.diversity * div
        return LossParts(act, h, div, total)
