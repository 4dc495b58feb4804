"""The gallery's pages, as HTML strings: the same templates live (the API,
images through short-lived presigned URLs) and static (an export, relative
links and copied files). Stable URLs: model → layer (by module path) → unit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.architectures import Architectures
from service.errors import DreamfarmError, NotFound, StorageError
from service.gallery.index import Entry, Index
from service.gallery.svg import trace_svg
from service.storage import Store
from service.zoo import Architecture

PER_PAGE = 120
_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())


class Links(Protocol):
    live: bool

    def home(self) -> str: ...

    def model(self, model: str) -> str: ...

    def layer(self, model: str, layer: str, page: int = 1, q: str = "") -> str: ...

    def unit(self, model: str, layer: str, unit: int) -> str: ...

    def job(self, job_id: str) -> str: ...

    def file(self, key: str) -> str: ...


@dataclass
class LiveLinks:
    """The API's routes; files through presigned URLs that expire."""

    store: Store
    expires_s: int = 900
    root: str = "/gallery"
    live: bool = True

    def home(self) -> str:
        return self.root

    def model(self, model: str) -> str:
        return f"{self.root}/{model}"

    def layer(self, model: str, layer: str, page: int = 1, q: str = "") -> str:
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in (("page", page if page > 1 else ""), ("q", q)) if v})
        return f"{self.root}/{model}/{layer}" + (f"?{query}" if query else "")

    def unit(self, model: str, layer: str, unit: int) -> str:
        return f"{self.root}/{model}/{layer}/{unit}"

    def job(self, job_id: str) -> str:
        return f"{self.root}/jobs/{job_id}"

    def file(self, key: str) -> str:
        return self.store.url(key, self.expires_s)


@dataclass
class StaticLinks:
    """Relative links between files of an exported site; `depth`: how many
    folders below the site's root the page is."""

    depth: int
    files_prefix: str = ""  # where the PNGs and sidecars are, from the site's root
    live: bool = False

    def _up(self, path: str) -> str:
        return "../" * self.depth + path

    def home(self) -> str:
        return self._up("index.html")

    def model(self, model: str) -> str:
        return self._up(f"{model}/index.html")

    def layer(self, model: str, layer: str, page: int = 1, q: str = "") -> str:
        return self._up(f"{model}/{layer}/index.html")

    def unit(self, model: str, layer: str, unit: int) -> str:
        return self._up(f"{model}/{layer}/{unit}.html")

    def job(self, job_id: str) -> str:
        return "#"

    def file(self, key: str) -> str:
        return self._up(self.files_prefix + key)


class Gallery:
    def __init__(self, index: Index, architectures: Architectures, store: Store) -> None:
        self.index = index
        self.archs = architectures
        self.store = store

    def arch(self, model: str) -> Architecture:
        if model not in self.archs.registry.names():
            raise NotFound(f"unknown model {model[:64]!r}; the gallery has: {', '.join(self.index.models()) or 'none'}")
        return self.archs.get(model)

    def layer_path(self, model: str, layer: str) -> str:
        """A layer's module path (its stable name in URLs) from a path or an alias."""
        try:
            return self.arch(model).layer(layer).path
        except DreamfarmError as exc:
            raise NotFound(str(exc)) from None

    def home(self, links: Links) -> str:
        models = [(m, n, self.archs.registry.get(m).description) for m, n in sorted(self.index.models().items())
                  if m in self.archs.registry.names()]  # fmt: skip
        return _render("home.html", links, title="dreamfarm gallery", models=models)

    def model(self, model: str, links: Links) -> str:
        arch = self.arch(model)
        counts = self.index.layers(model)
        if not counts:
            raise NotFound(f"no renders of {model} yet")
        order = {x.path: i for i, x in enumerate(arch.layers)}
        layers = [(path, arch.layer(path).name, n, arch.layer(path)) for path, n in counts.items() if path in order]
        layers.sort(key=lambda t: order[t[0]])
        return _render("model.html", links, title=model, model=model, entry=arch.entry, layers=layers)

    def layer(self, model: str, layer: str, links: Links, page: int = 1, q: str = "") -> str:
        arch = self.arch(model)
        info = arch.layer(self.layer_path(model, layer))
        only = self._search(arch, info.path, q)
        per_page = PER_PAGE if links.live else 10**7
        total, units = self.index.units(model, info.path, (page - 1) * per_page, per_page, only)
        pages = max(1, math.ceil(total / per_page))
        if not 1 <= page <= pages:
            raise NotFound(f"no page {page} of {model} {info.name}: it has {pages} page(s)")
        if total == 0 and not q:
            raise NotFound(f"no renders of {model} {info.name} yet")
        tiles = [(u, arch.label(info, info.default_kind, u), e) for u, e in units]
        return _render("layer.html", links, title=f"{model} · {info.name}", model=model, layer=info, tiles=tiles,
                       page=page, pages=pages, total=total, q=q)  # fmt: skip

    def _search(self, arch: Architecture, layer: str, q: str) -> list[int] | None:
        """Units matching `q`: an index, or (for class logits) part of a class name."""
        q = q.strip()
        if not q:
            return None
        if q.isdigit():
            return [int(q)]
        info = arch.layer(layer)
        if info.default_kind != "logit":
            return []
        words = q.lower()
        return [i for i, name in enumerate(arch.entry.classes[: info.units]) if words in name.lower()]

    def unit(self, model: str, layer: str, unit: int, links: Links) -> str:
        arch = self.arch(model)
        info = arch.layer(self.layer_path(model, layer))
        entries = self.index.renders(model, info.path, unit)
        if not entries:
            raise NotFound(f"no renders of unit {unit} of {model} {info.name}")
        renders = [self._detail(e) for e in entries]
        label = arch.label(info, info.default_kind, unit)
        return _render("unit.html", links, title=f"{model} · {info.name} · {label or unit}", model=model, layer=info,
                       unit=unit, label=label, renders=renders)  # fmt: skip

    def _detail(self, entry: Entry) -> dict[str, Any]:
        """A render with what its sidecar adds (spec, trace, quality); the entry alone if that cannot be read."""
        try:
            side = json.loads(self.store.get(entry.sidecar))
        except (StorageError, ValueError):
            side = {}
        return {"entry": entry, "side": side, "svg": trace_svg(side.get("trace") or []),
                "spec": json.dumps(side.get("spec") or {}, indent=1, sort_keys=True)}  # fmt: skip

    def job(self, summary: dict[str, Any], links: Links, atlas_url: str | None) -> str:
        return _render("job.html", links, title=f"job {summary['id']}", job=summary, atlas_url=atlas_url)


def error_page(status: int, message: str, links: Links) -> str:
    return _render("error.html", links, title=f"{status}", status=status, message=message)


def login_page(links: Links, next_url: str, failed: bool = False) -> str:
    return _render("login.html", links, title="sign in", next_url=next_url, failed=failed)


def _render(template: str, links: Links, **context: Any) -> str:
    return _ENV.get_template(template).render(links=links, **context)
