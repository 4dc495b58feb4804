"""An optimization's trace: per image, the unit's activation, the prior, the
objective and (with samples) the diversity term, every few steps. Points stay
on the device during the loop and are copied to the host once at the end."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from service.loss import LossParts


@dataclass
class TracePoint:
    step: int
    activation: list[float]
    prior: list[float]
    objective: list[float]
    diversity: list[float] | None = None


def trace_row(parts: LossParts) -> torch.Tensor:
    """(4, B) on the device: activation, prior, objective, diversity (NaN: none)."""
    div = parts.diversity if parts.diversity is not None else torch.full_like(parts.total, float("nan"))
    return torch.stack([parts.activation.detach(), parts.prior.detach(), parts.total.detach(), div.detach()]).float()


def trace_points(points: list[tuple[int, torch.Tensor]]) -> list[TracePoint]:
    if not points:
        return []
    rows = torch.stack([row for _, row in points]).cpu().tolist()  # one copy for the whole trace
    out = []
    for (step, _), (act, prior, total, div) in zip(points, rows):
        has_div = not all(v != v for v in div)  # NaN != NaN
        out.append(TracePoint(step, act, prior, total, div if has_div else None))
    return out
