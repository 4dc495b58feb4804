"""How recognizable a render is: the saved 8-bit image classified like a photo
(its own preprocessing) by the network that rendered it, at the size it was
rendered, and by optional judge networks, each at its own input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from service.display import as_pixels
from service.zoo import ModelEntry

TOP = 5


@dataclass(frozen=True)
class Verdict:
    model: str
    top5: list[tuple[int, str, float]]  # (class index, name, probability)
    target_rank: int | None  # 1-based rank of the target class, None when not a class logit

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "top5": [{"index": i, "label": n, "p": round(p, 4)} for i, n, p in self.top5],
                "target_rank": self.target_rank}  # fmt: skip


def probabilities(net: nn.Module, entry: ModelEntry, shown: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, classes) softmax of `net` at `size` (default:
    its input size), on the CPU."""
    device = next(net.parameters()).device
    pixels = as_pixels(shown).to(device)
    side = size or entry.input_size
    if pixels.shape[-1] != side:
        pixels = F.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        logits = torch.as_tensor(net(entry.preprocessing.to_input(pixels.to(dtype))))
    return logits.float().softmax(dim=1).cpu()


def verdicts(
    net: nn.Module, entry: ModelEntry, shown: torch.Tensor, targets: list[int | None], size: int | None = None
) -> list[Verdict]:
    probs = probabilities(net, entry, shown, size)
    out = []
    for row, target in zip(probs, targets):
        p, idx = row.topk(min(TOP, row.numel()))  # a registered network may have fewer classes
        top = [(int(i), entry.classes[int(i)], float(v)) for i, v in zip(idx, p)]
        rank = int((row > row[target]).sum()) + 1 if target is not None else None
        out.append(Verdict(entry.name, top, rank))
    return out
