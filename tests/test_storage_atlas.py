from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.atlas import Tile, build_atlas
from service.errors import StorageError
from service.images import png_bytes, read_png
from service.storage import LocalStore


def test_local_store_round_trip_and_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("renders/m/l/1/abc.png", b"png", "image/png")
    store.put("renders/m/l/1/abc.json", b"{}", "application/json")
    assert store.exists("renders/m/l/1/abc.json") and not store.exists("renders/m/l/1/zzz.json")
    assert store.get("renders/m/l/1/abc.png") == b"png"
    assert list(store.list("renders/m/")) == ["renders/m/l/1/abc.json", "renders/m/l/1/abc.png"]
    assert not list(tmp_path.rglob(".tmp-*"))
    with pytest.raises(StorageError):
        store.get("renders/none")


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a//b", "a/./b", "a b", "ä", "a\nb", ""])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError):
        LocalStore(tmp_path).put(key, b"x", "text/plain")


def test_atlas_grid_and_manifest() -> None:
    tiles = [
        Tile(png_bytes(np.full((32, 32, 3), 40 * i, dtype=np.uint8)), f"unit {i}", i, f"key{i}", None) for i in range(5)
    ]
    png, manifest = build_atlas(tiles, tile_size=48, title="t")
    img = read_png(png)
    assert manifest["columns"] == 3 and manifest["rows"] == 2
    entries = manifest["tiles"]
    assert isinstance(entries, list)
    assert [e["render_key"] for e in entries] == [f"key{i}" for i in range(5)]
    # Each tile's pixels are where the manifest says.
    for e in entries:
        px = img.getpixel((e["x"] + 10, e["y"] + 10))
        assert abs(px[0] - 40 * e["unit"]) <= 2
    json.dumps(manifest)
