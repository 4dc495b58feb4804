"""Stopping each image once it is done: for a class logit with a
`stop_margin`, an image stops when its *saved* 8-bit image is classified as
the target with at least that margin over every other class (the adversarial
recipe). A stopped image keeps its values while the rest of the batch goes
on; the batch ends when every image has stopped. Each image is judged on its
own, so stopping keeps batch independence."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from service.display import as_pixels
from service.parameterizations import Parameterized
from service.spec import RenderSpec

CHECK_EVERY = 5


class EarlyStop:
    def __init__(
        self, specs: Sequence[RenderSpec], param: Parameterized, classify: Callable[[torch.Tensor], torch.Tensor],
        shown: Callable[[], torch.Tensor],
    ) -> None:  # fmt: skip
        spec0 = specs[0]
        self.margin = spec0.stop_margin
        self.enabled = self.margin is not None and spec0.kind == "logit" and spec0.direction == "max"
        self.param, self.classify, self.shown = param, classify, shown
        self.units = torch.tensor([s.unit for s in specs])
        self.taken: list[int | None] = [None] * len(specs)
        self.frozen: dict[int, list[torch.Tensor]] = {}

    @property
    def all_stopped(self) -> bool:
        return self.enabled and all(t is not None for t in self.taken)

    def steps_taken(self, ran: int) -> list[int]:
        return [t if t is not None else ran for t in self.taken]

    def after_step(self, step: int) -> None:
        if not self.enabled:
            return
        self._restore()
        if (step + 1) % CHECK_EVERY:
            return
        with torch.no_grad():
            logits = self.classify(as_pixels(self.shown())).float().cpu()
        rows = torch.arange(len(self.taken))
        target = logits[rows, self.units]
        others = logits.clone()
        others[rows, self.units] = -torch.inf
        margin = target - others.max(dim=1).values
        assert self.margin is not None
        for i in torch.nonzero(margin >= self.margin).flatten().tolist():
            if self.taken[i] is None:
                self.taken[i] = step + 1
                self.frozen[i] = [p.detach()[i].clone() for p in self.param.params]

    def _restore(self) -> None:
        """Adam moves every image; a stopped one is put back where it stopped."""
        with torch.no_grad():
            for i, values in self.frozen.items():
                for p, v in zip(self.param.params, values):
                    p[i] = v
