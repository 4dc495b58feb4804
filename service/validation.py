"""Turning pydantic's validation errors into one line a person can act on."""

from __future__ import annotations

from pydantic import ValidationError

from service.errors import one_line


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        msg = err.get("msg", "invalid")
        got = err.get("input")
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        parts.append(f"{loc}: {msg} (got {shown[:80]})")
    return one_line("; ".join(parts))
