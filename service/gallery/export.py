"""The gallery as a static site, and the index rebuilt from a store.

Both read the sidecars under `renders/` (a bucket, or a folder that
`dreamfarm render` wrote). The site is the live gallery's pages with
relative links: it works opened from a folder or served from a bucket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from service import layout
from service.architectures import Architectures
from service.errors import NotFound, StorageError
from service.gallery.index import Entry, Index, MemoryIndex
from service.gallery.pages import Gallery, StaticLinks
from service.storage import Store

Progress = Callable[[str], None]


def entries(store: Store, prefix: str = "renders/") -> Iterator[Entry]:
    """Every render's index entry, from its sidecar (unreadable ones skipped)."""
    for key in store.list(prefix):
        if not key.endswith(".json") or layout.is_alias_index(key):
            continue
        try:
            yield Entry.from_sidecar(json.loads(store.get(key)))
        except (StorageError, ValueError, KeyError):
            continue


def reindex(store: Store, index: Index, prefix: str = "renders/") -> int:
    """Add every render in `store` to `index`; returns how many."""
    n = 0
    for e in entries(store, prefix):
        index.add([e])
        n += 1
    return n


def export_site(
    source: Store, dest: Store, model: str, layer: str | None = None, *, files_prefix: str = "",
    copy_files: bool = True, progress: Progress | None = None,
) -> list[str]:  # fmt: skip
    """Write the pages of `model` (one layer, or all) into `dest`, with the
    PNGs and sidecars they show copied beside them (`copy_files`), or found
    at `files_prefix` relative to the site's root. Returns the pages written."""
    archs = Architectures()
    prefix = f"renders/{model}/" + (f"{archs.get(model).layer(layer).path}/" if layer else "")
    index = MemoryIndex(entries(source, prefix))
    if not index.entries:
        raise NotFound(f"no renders under {prefix} to export")
    gallery = Gallery(index, archs, source)
    pages = {"index.html": gallery.home(_links(0, files_prefix)),
             f"{model}/index.html": gallery.model(model, _links(1, files_prefix))}  # fmt: skip
    for path in index.layers(model):
        pages[f"{model}/{path}/index.html"] = gallery.layer(model, path, _links(2, files_prefix))
        _, units = index.units(model, path, 0, 10**7)
        for unit, _e in units:
            pages[f"{model}/{path}/{unit}.html"] = gallery.unit(model, path, unit, _links(2, files_prefix))
    for key, html in pages.items():
        dest.put(key, html.encode(), "text/html; charset=utf-8")
        if progress:
            progress(key)
    if copy_files:
        for e in index.entries.values():
            for key, kind in ((e.png, "image/png"), (e.sidecar, "application/json")):
                dest.put(key, source.get(key), kind)
    return list(pages)


def _links(depth: int, files_prefix: str) -> StaticLinks:
    return StaticLinks(depth, files_prefix=files_prefix)
