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
) -> list[Piece[S, R]]:
    """Render `specs`; each piece that runs out of memory is split in two.
    A single unit that still runs out of memory is returned with its error.
    Other exceptions propagate."""
    pieces: list[Piece[S, R]] = []
    stack: list[list[S]] = [list(specs)]
    while stack:
        part = stack.pop()
        try:
            pieces.append(Piece(part, render(part)))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if after_oom is not None:
                after_oom()
            if len(part) == 1:
                pieces.append(Piece(part, None, f"out of memory even alone: {exc}"))
                continue
            half = len(part) // 2
            if on_split is not None:
                on_split(len(part), half)
            stack.extend([part[half:], part[:half]])
    return pieces
