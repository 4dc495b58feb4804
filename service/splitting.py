"""Rendering a batch that may not fit the device: on out-of-memory, split it
in halves and try again, down to single units, before giving up on any."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

S = TypeVar("S")
R = TypeVar("R")


class InjectedOutOfMemory(RuntimeError):
    """Raised by fault injection to simulate a device out of memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | InjectedOutOfMemory):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class Piece(Generic[S, R]):
    specs: list[S]
    result: R | None
    error: str | None = None


def render_splitting(
    render: Callable[[list[S]], R],
    specs: Sequence[S],
    *,
    on_split: Callable[[int, int], None] | None = None,
    after_oom: Callable[[], None] | None = None,
    together: Callable[[S], object] | None = None,
) -> list[Piece[S, R]]:
    """Render `specs`; each piece that runs out of memory is split in two.
    A single unit (or group: consecutive specs with equal `together(spec)`,
    which are never split) that still runs out of memory is returned with its
    error. Other exceptions propagate."""
    pieces: list[Piece[S, R]] = []
    stack: list[list[list[S]]] = [_groups(specs, together)]
    while stack:
        groups = stack.pop()
        part = [s for g in groups for s in g]
        try:
            pieces.append(Piece(part, render(part)))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if after_oom is not None:
                after_oom()
            if len(groups) == 1:
                pieces.append(Piece(part, None, f"out of memory even alone: {exc}"))
                continue
            half = len(groups) // 2
            if on_split is not None:
                on_split(len(part), sum(len(g) for g in groups[:half]))
            stack.extend([groups[half:], groups[:half]])
    return pieces


def _groups(specs: Sequence[S], together: Callable[[S], object] | None) -> list[list[S]]:
    out: list[list[S]] = []
    for s in specs:
        if together is not None and out and together(out[-1][0]) == together(s):
            out[-1].append(s)
        else:
            out.append([s])
    return out
