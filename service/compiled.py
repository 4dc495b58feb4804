"""A compiled forward that must prove itself before it is trusted.

`torch.compile` generates code for the machine it runs on (C++ through the
host compiler on a CPU, Triton on a GPU), and what it generates is not the
eager kernels: on some CPUs and kernel sets it has returned NaN where eager
returns numbers, and it needs a working compiler at all. So the first call
runs both the compiled and the eager forward on the same input; the compiled
one is kept only if it ran and agrees with eager within the arithmetic's own
rounding. Otherwise the eager forward is used from then on, and `reason` says
why (the engine reports it in the batch's result).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]

# Largest |compiled − eager| over max |eager| accepted, by the dtype the
# forward computes in (bf16 autocast: the network runs in bf16).
TOLERANCE = {torch.float64: 1e-7, torch.float32: 1e-3, torch.bfloat16: 5e-2}


class CheckedCompiled:
    def __init__(self, eager: Forward, compile_fn: Callable[[], Forward]) -> None:
        self.eager = eager
        self._compile_fn = compile_fn
        self._compiled: Forward | None = None
        self.checked = False
        self.reason: str | None = None  # why the compiled forward was dropped

    @property
    def in_use(self) -> bool:
        return self.checked and self.reason is None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self._compiled(x) if self._compiled is not None and self.reason is None else self.eager(x)
        self.checked = True
        try:
            self._compiled = self._compile_fn()
            out = self._compiled(x)
        except Exception as exc:  # no compiler, an unsupported op …: eager still renders
            self.reason = f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return self.eager(x)
        with torch.no_grad():
            expected = self.eager(x)
        self.reason = disagreement(out, expected)
        return out if self.reason is None else self.eager(x)


def disagreement(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """None if `got` is `expected` up to the rounding of its dtype, else why not."""
    if got.shape != expected.shape:
        return f"compiled output has shape {tuple(got.shape)}, eager {tuple(expected.shape)}"
    got, expected = got.detach(), expected.detach()
    if not bool(torch.isfinite(got).all()):
        return "compiled output is not finite"
    scale = float(expected.abs().max()) or 1.0
    diff = float((got.to(expected.dtype) - expected).abs().max()) / scale
    tol = TOLERANCE.get(got.dtype, 1e-3)
    if diff > tol:
        return f"compiled output differs from eager by {diff:.2g} (relative; tolerance {tol:g})"
    return None
