"""A render's optimization trace as a small inline SVG chart (no JavaScript,
no image files): the unit's activation over the steps."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 240, 80, 4


def trace_svg(points: Sequence[dict[str, float]], field: str = "activation") -> str:
    values = [(float(p["step"]), float(p[field])) for p in points if field in p]
    if len(values) < 2:
        return ""
    xs, ys = [v[0] for v in values], [v[1] for v in values]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0

    def at(x: float, y: float) -> str:
        return f"{PAD + (x - x0) / dx * (WIDTH - 2 * PAD):.1f},{HEIGHT - PAD - (y - y0) / dy * (HEIGHT - 2 * PAD):.1f}"

    path = " ".join(at(x, y) for x, y in values)
    title = escape(f"{field}: {ys[0]:.3g} at step {xs[0]:.0f} → {ys[-1]:.3g} at step {xs[-1]:.0f}")
    return (
        f'<svg class="trace" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fafafa" stroke="#ddd"/>'
        f'<polyline fill="none" stroke="#3465a4" stroke-width="1.5" points="{path}"/>'
        f'<text x="{PAD + 2}" y="12" font-size="10" fill="#555">{y1:.3g}</text>'
        f'<text x="{PAD + 2}" y="{HEIGHT - 6}" font-size="10" fill="#555">{y0:.3g}</text></svg>'
    )
