"""Atlases: labelled grids of renders, and the manifest that maps each tile
back to its unit, label and render key."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from service import layout
from service.images import read_png
from service.spec import RenderSpec, canonical_json
from service.storage import Store, check_key

LABEL_HEIGHT = 18
PAD = 4


@dataclass(frozen=True)
class Tile:
    png: bytes
    caption: str
    unit: int
    key: str
    label: str | None = None


def atlas_key(render_keys: Sequence[str]) -> str:
    """An atlas is named by its content: the render keys in order."""
    return hashlib.sha256("\n".join(render_keys).encode()).hexdigest()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    if draw.textlength(text, font=font) <= width:  # type: ignore[arg-type]
        return text
    while text and draw.textlength(text + "…", font=font) > width:  # type: ignore[arg-type]
        text = text[:-1]
    return text + "…"


def columns_for(tiles: int, samples: int = 1) -> int:
    """About square, but a unit's samples always side by side on one row."""
    units = max(1, tiles // max(1, samples))
    if samples <= 1:
        return max(1, math.ceil(math.sqrt(tiles)))
    return samples * max(1, math.ceil(math.sqrt(units) / samples))


def build_atlas(
    tiles: Sequence[Tile], *, columns: int | None = None, tile_size: int = 160, title: str | None = None
) -> tuple[bytes, dict[str, object]]:
    """A PNG grid with each tile's caption under it, and its manifest."""
    if not tiles:
        raise ValueError("an atlas needs at least one tile")
    cols = columns or columns_for(len(tiles))
    rows = math.ceil(len(tiles) / cols)
    title_h = LABEL_HEIGHT + PAD if title else 0
    cell_w, cell_h = tile_size + PAD, tile_size + LABEL_HEIGHT + PAD
    sheet = Image.new("RGB", (cols * cell_w + PAD, rows * cell_h + PAD + title_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    if title:
        draw.text((PAD, PAD), _fit(draw, title, font, sheet.width - 2 * PAD), fill="black", font=font)
    entries = []
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = PAD + c * cell_w, title_h + PAD + r * cell_h
        img = read_png(tile.png).resize((tile_size, tile_size), Image.Resampling.LANCZOS)
        sheet.paste(img, (x, y))
        caption = _fit(draw, tile.caption, font, tile_size)
        draw.text((x + tile_size / 2, y + tile_size + 2), caption, fill="black", font=font, anchor="ma")
        entries.append(
            {"index": i, "row": r, "col": c, "x": x, "y": y, "size": tile_size, "unit": tile.unit,
             "label": tile.label, "caption": tile.caption, "render_key": tile.key}
        )  # fmt: skip
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    manifest: dict[str, object] = {
        "atlas_key": atlas_key([t.key for t in tiles]),
        "title": title,
        "columns": cols,
        "rows": rows,
        "tile_size": tile_size,
        "tiles": entries,
    }
    return buf.getvalue(), manifest


def manifest_bytes(manifest: dict[str, object]) -> bytes:
    return canonical_json(manifest).encode()


def local_atlas(
    store: Store, specs: Sequence[tuple[RenderSpec, str, str | None]], title: str, name: str = "atlas"
) -> tuple[str, str]:
    """An atlas of renders already in `store` ((spec, caption, label) each),
    filed as <name>.png + <name>.json (the CLI's folder layout: atlas.* at its
    root, or atlases/<layer>.* for each layer of a job with several)."""
    tiles = [Tile(store.get(layout.render_png_key(s)), caption, s.unit, s.key(), label) for s, caption, label in specs]
    samples = specs[0][0].samples if specs else 1
    png, manifest = build_atlas(tiles, title=title, columns=columns_for(len(tiles), samples))
    png_key, json_key = check_key(f"{name}.png"), check_key(f"{name}.json")
    store.put(png_key, png, "image/png")
    store.put(json_key, manifest_bytes(manifest), "application/json")
    return png_key, json_key
