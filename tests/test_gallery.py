"""The gallery's pages and its static export, in-process: an index and a
folder of real renders (`dreamfarm render`'s layout). The live gallery over
HTTP in a browser is tests/test_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import main
from service.architectures import Architectures
from service.errors import NotFound
from service.gallery.export import entries, export_site
from service.gallery.index import MemoryIndex
from service.gallery.pages import Gallery, LiveLinks, StaticLinks
from service.storage import LocalStore

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four classes, lecture and lucid (two samples), as `dreamfarm render` files them."""
    out = tmp_path_factory.mktemp("renders")
    common = ["render", "--model", MODEL, "--layer", "logits", "--steps", "2", "--size", "64", "--out", str(out),
              "--quiet", "--device", "cpu"]  # fmt: skip
    assert main([*common, "--units", "Samoyed", "goldfish", "king crab", "hourglass", "--recipe", "lecture"]) == 0
    assert main([*common, "--unit", "Samoyed", "--recipe", "lucid", "--samples", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def gallery(folder: Path) -> Gallery:
    store = LocalStore(folder)
    return Gallery(MemoryIndex(entries(store)), Architectures(), store)


def links(folder: Path) -> LiveLinks:
    return LiveLinks(LocalStore(folder))


def test_pages_from_model_to_unit(gallery: Gallery, folder: Path) -> None:
    home = gallery.home(links(folder))
    assert f'href="/gallery/{MODEL}"' in home and ">6<" in home  # six renders
    model = gallery.model(MODEL, links(folder))
    assert 'href="/gallery/efficientnet_lite0/_fc"' in model and "logits" in model
    layer = gallery.layer(MODEL, "_fc", links(folder))
    assert layer.count('class="tile"') == 4 and "Samoyed" in layer and "goldfish" in layer
    unit = gallery.unit(MODEL, "_fc", 258, links(folder))
    assert unit.count('class="render"') == 3  # lecture + two lucid samples
    assert "sample 2 of 2" in unit and "lucid" in unit and "lecture" in unit
    assert unit.count("<svg") == 3 and "top-5" in unit and "sidecar" in unit


def test_search_by_name_or_index(gallery: Gallery, folder: Path) -> None:
    found = gallery.layer(MODEL, "_fc", links(folder), q="crab")
    assert found.count('class="tile"') == 1 and "king crab" in found
    assert gallery.layer(MODEL, "_fc", links(folder), q="604").count('class="tile"') == 1
    assert "No unit matches" in gallery.layer(MODEL, "_fc", links(folder), q="zebra")


@pytest.mark.parametrize(
    ("call", "says"),
    [(lambda g, li: g.model("vgg17", li), "unknown model 'vgg17'"),
     (lambda g, li: g.model("vgg16", li), "no renders of vgg16"),
     (lambda g, li: g.layer(MODEL, "conv99", li), "unknown layer 'conv99'"),
     (lambda g, li: g.layer(MODEL, "_fc", li, page=2), "no page 2"),
     (lambda g, li: g.unit(MODEL, "_fc", 999, li), "no renders of unit 999")],
)  # fmt: skip
def test_what_is_not_there_is_not_found(gallery: Gallery, folder: Path, call: object, says: str) -> None:
    with pytest.raises(NotFound, match=says):
        call(gallery, links(folder))  # type: ignore[operator]


def test_static_export_links_resolve_within_the_folder(folder: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pages = export_site(LocalStore(folder), LocalStore(site), MODEL)
    assert set(pages) >= {"index.html", f"{MODEL}/index.html", f"{MODEL}/_fc/index.html", f"{MODEL}/_fc/258.html"}
    for page in pages:
        html = (site / page).read_text()
        for target in re.findall(r'(?:href|src)="([^"#:]+)"', html):
            assert (site / page).parent.joinpath(target).resolve().is_file(), f"{page} → {target}"
    side = json.loads(next(site.glob("renders/*/*/*/*.json")).read_text())
    assert side["key"]


def test_static_links_can_point_elsewhere_for_files() -> None:
    assert StaticLinks(2, files_prefix="../").file("renders/x.png") == "../../../renders/x.png"
