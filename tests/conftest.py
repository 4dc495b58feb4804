from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.nn as nn

from service.zoo import Registry, load_network


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Precision verdicts and the like go to a throwaway folder, not ~/.cache.
    old = os.environ.get("DREAMFARM_CACHE")
    os.environ["DREAMFARM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("DREAMFARM_CACHE", None)
    else:
        os.environ["DREAMFARM_CACHE"] = old


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry()


@pytest.fixture(scope="session")
def lite0(registry: Registry) -> nn.Module:
    """The bundled pretrained EfficientNet-Lite0, frozen, on the CPU."""
    return load_network(registry.get("efficientnet_lite0"))


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


# Real Redis and SeaweedFS servers for the integration tests.
from tests.stack_fixtures import redis_server, s3_store, seaweed  # noqa: E402, F401
