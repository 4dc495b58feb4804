"""The moves of the recipe search (service.tuning): each changes one field
of a recipe (JSON form) within bounds, or says it cannot (None)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Recipe fields the search never changes: cost (steps, size, samples), and
#: what a request means rather than how it is drawn.
FIXED = ("steps", "size", "samples", "diversity", "diversity_layer", "epsilon", "stop_margin", "precision",
         "direction")  # fmt: skip
#: Multiplicative moves on top-level numbers, and their bounds.
SCALED: dict[str, tuple[tuple[float, ...], float, float]] = {
    "lr": ((0.5, 0.7, 1.4, 2.0), 1e-4, 10.0),
    "init_scale": ((0.5, 2.0), 1e-4, 2.0),
}
TRANSFORM_MOVES: dict[str, tuple[tuple[float, ...], float, float]] = {
    "scale": ((0.5, 1.5, 2.0), 0.02, 0.6),
    "rotate": ((0.5, 2.0), 1.0, 45.0),
    "jitter": ((0.5, 2.0), 1.0, 32.0),
}
DECAY_STEPS = (-0.5, -0.25, 0.25, 0.5)
PRIOR_SCALES = (0.3, 3.0)


def moves(fields: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], dict[str, Any] | None]]]:
    """Every move that applies to a recipe with these fields: (its name,
    fields → changed fields, or None when the move leaves its bounds)."""
    out: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any] | None]]] = []
    for name, (factors, low, high) in SCALED.items():
        if name == "init_scale" and fields.get("param", {}).get("name") in ("maco", "image"):
            continue  # MaCo draws a phase, "image" starts from a photo: no starting scale to change
        for f in factors:
            out.append((f"{name} x{f:g}", _scaled(name, f, low, high)))
    if fields.get("param", {}).get("name") in ("fourier", "maco"):
        for d in DECAY_STEPS:
            out.append((f"decay {d:+g}", _decay(d)))
    names = {t["name"] for t in fields.get("transforms", [])}
    for name, (factors, low, high) in TRANSFORM_MOVES.items():
        if name in names:
            for f in factors:
                out.append((f"{name} x{f:g}", _transform(name, f, low, high)))
    for term in fields.get("prior", []):
        for f in PRIOR_SCALES:
            out.append((f"{term['name']} weight x{f:g}", _prior(term["name"], f)))
    if fields.get("resize") is not None:
        other = "together" if fields.get("resize_axes", "together") == "apart" else "apart"
        out.append((f"resize axes {other}", _resize_axes(other)))
    return out


def _scaled(name: str, f: float, low: float, high: float) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def move(fields: dict[str, Any]) -> dict[str, Any] | None:
        value = float(fields[name]) * f
        return {**fields, name: _round(value)} if low <= value <= high else None

    return move


def _decay(d: float) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def move(fields: dict[str, Any]) -> dict[str, Any] | None:
        value = float(fields["param"]["decay"]) + d
        return {**fields, "param": {**fields["param"], "decay": _round(value)}} if 0 <= value <= 4 else None

    return move


def _transform(name: str, f: float, low: float, high: float) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def move(fields: dict[str, Any]) -> dict[str, Any] | None:
        changed = []
        for t in fields["transforms"]:
            if t["name"] == name:
                value = float(t["amount"]) * f
                if not low <= value <= high:
                    return None
                t = {**t, "amount": _round(value) if name in ("scale", "rotate") else float(round(value))}
            changed.append(t)
        return {**fields, "transforms": changed}

    return move


def _prior(name: str, f: float) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def move(fields: dict[str, Any]) -> dict[str, Any] | None:
        terms = [{**t, "weight": _round(float(t["weight"]) * f)} if t["name"] == name else t for t in fields["prior"]]
        return {**fields, "prior": terms}

    return move


def _resize_axes(value: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def move(fields: dict[str, Any]) -> dict[str, Any] | None:
        return {**fields, "resize_axes": value}

    return move


def _round(x: float) -> float:
    return float(f"{x:.4g}")  # keys of equal recipes must be equal: no float noise in the fields
