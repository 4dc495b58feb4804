"""Listing a zoo of ~1,450 networks stays short and cheap: `dreamfarm models`
prints one line per family, `--family` and `--search` narrow it down, none of
them imports torch or timm; `GET /v1/models` leaves timm's out unless asked,
and a timm network's layers are at `GET /v1/models/timm/<name>`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.zoo import Registry

PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from cli.main import main

    out = {}
    for argv in (["models"], ["models", "--family", "timm"], ["models", "--family", "timm/convnext"],
                 ["models", "--family", "swin"], ["models", "--search", "ViT_TINY"], ["models", "--search", "zzz"]):
        with contextlib.redirect_stdout(io.StringIO()) as text:
            code = main(argv)
        out[" ".join(argv)] = [code, text.getvalue()]
    out["heavy"] = sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def listed() -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def _out(listed: dict[str, object], argv: str) -> list[str]:
    code, text = listed[argv]  # type: ignore[misc]
    assert code == 0
    return str(text).splitlines()


def test_listing_imports_neither_torch_nor_timm(listed: dict[str, object]) -> None:
    assert listed["heavy"] == []


def test_the_overview_is_one_line_per_family(listed: dict[str, object], registry: Registry) -> None:
    lines = _out(listed, "models")
    assert len(lines) < 40 < len(registry)
    assert lines[0].startswith("efficientnet_lite0 ships pretrained")
    swin = next(line for line in lines if line.startswith("swin "))
    assert " 6  swin_b, swin_s, swin_t" in swin
    timm = next(line for line in lines if line.startswith("timm/*"))
    assert "timm/vision_transformer" in timm and "--family timm" in timm


def test_family_and_search_narrow_it_down(listed: dict[str, object]) -> None:
    families = _out(listed, "models --family timm")
    assert 50 < len(families) < 150 and any(line.startswith("timm/convnext ") for line in families)
    convnext = _out(listed, "models --family timm/convnext")
    assert all(line.startswith("timm/") and "(convnext)" in line for line in convnext) and len(convnext) > 10
    assert [line.split()[0] for line in _out(listed, "models --family swin")] == [
        "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    ]  # fmt: skip
    found = [line.split()[0] for line in _out(listed, "models --search ViT_TINY")]
    assert "timm/vit_tiny_patch16_224" in found and all("vit_tiny" in n for n in found)
    assert _out(listed, "models --search zzz") == ["no model matches"]


def test_an_unknown_family_names_close_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    assert main(["models", "--family", "swim"]) == 2
    assert "did you mean swin" in capsys.readouterr().err


# ---- the API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from api.app import create_app
    from api.deps import Services
    from service.config import Settings
    from service.storage import LocalStore

    settings = Settings(protect_reads=False)
    services = Services(settings, store=LocalStore(Path(tmp_path_factory.mktemp("store"))))  # no Redis needed
    return TestClient(create_app(settings, services), raise_server_exceptions=False)


def test_the_api_lists_torchvision_by_default_and_timm_when_asked(api: TestClient, registry: Registry) -> None:
    names = [m["name"] for m in api.get("/v1/models").json()]
    assert names[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert "vgg16" in names and "vit_b_16" in names and not any(n.startswith("timm/") for n in names)
    assert len(names) < 100
    convnext = api.get("/v1/models", params={"family": "timm/convnext"}).json()
    assert convnext and all(m["family"] == "timm/convnext" for m in convnext)
    assert len(api.get("/v1/models", params={"family": "timm"}).json()) == sum(
        n.startswith("timm/") for n in registry.names()
    )
    found = [m["name"] for m in api.get("/v1/models", params={"search": "SWIN_T"}).json()]
    assert "swin_t" in found and "timm/swin_tiny_patch4_window7_224" in found
    r = api.get("/v1/models", params={"family": "swim"})
    assert r.status_code == 422 and "swin" in r.json()["detail"] and r.json()["field"] == "family"


def test_the_api_describes_token_and_channels_last_layers(api: TestClient) -> None:
    vit = api.get("/v1/models/timm/vit_tiny_patch16_224")
    assert vit.status_code == 200, vit.text
    body = vit.json()
    block = next(x for x in body["layers"] if "block6" in x["aliases"])
    assert (block["layout"], block["shape"], block["units"]) == ("NLD", [197, 192], 192)
    swin = next(x for x in api.get("/v1/models/swin_t").json()["layers"] if "stage2" in x["aliases"])
    assert (swin["layout"], swin["shape"], swin["units"]) == ("NHWC", [28, 28, 192], 192)
    vgg = api.get("/v1/models/vgg16").json()
    assert next(x for x in vgg["layers"] if "conv4" in x["aliases"])["layout"] == "NCHW"
    missing = api.get("/v1/models/timm/vit_tiny_patch16_225")
    assert missing.status_code == 404 and "timm/vit_tiny_patch16_224" in missing.json()["detail"]
