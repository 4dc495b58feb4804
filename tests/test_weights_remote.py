# ruff: noqa: F811
"""Weights from a bucket: fetched once into a cache, checked against their
sha256 before they are unpickled."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.errors import WeightsError
from service.s3 import S3Store
from service.weights_remote import bucket_fetcher, download, parse_s3_url
from service.zoo import Registry, load_network
from service.zoo.network import WeightsConfig
from service.zoo.weights import locate
from tests.stack_fixtures import s3_store, seaweed  # noqa: F401

pytestmark = pytest.mark.integration


def _entry_without_package():  # type: ignore[no-untyped-def]
    entry = Registry().get("efficientnet_lite0")
    return entry, dataclasses.replace(entry, weights=dataclasses.replace(entry.weights, package=None))


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/weights/v1/") == ("bucket", "weights/v1")
    with pytest.raises(WeightsError):
        parse_s3_url("https://example.com/x.pth")


def test_weights_are_fetched_from_the_bucket_and_verified(
    s3_store: S3Store, tmp_path: Path, empty_torch_home: Path
) -> None:
    entry, remote_entry = _entry_without_package()
    data = locate(entry.name, entry.weights).read_bytes()
    s3_store.put(f"weights/{entry.weights.filename}", data, "application/octet-stream")
    cfg = WeightsConfig(remote=bucket_fetcher(s3_store, "weights", tmp_path / "cache"), remote_name="s3://…/weights")
    net = load_network(remote_entry, config=cfg)
    assert sum(p.numel() for p in net.parameters()) > 4_000_000
    assert (tmp_path / "cache" / entry.weights.filename).is_file()
    # an explicit s3 object works the same way
    assert download(s3_store, f"weights/{entry.weights.filename}", tmp_path / "c2").read_bytes() == data


def test_tampered_bucket_weights_are_refused(s3_store: S3Store, tmp_path: Path, empty_torch_home: Path) -> None:
    entry, remote_entry = _entry_without_package()
    data = bytearray(locate(entry.name, entry.weights).read_bytes())
    data[50_000] ^= 0xFF
    s3_store.put(f"weights/{entry.weights.filename}", bytes(data), "application/octet-stream")
    cfg = WeightsConfig(remote=bucket_fetcher(s3_store, "weights", tmp_path / "cache"))
    with pytest.raises(WeightsError, match="refusing"):
        load_network(remote_entry, config=cfg)


def test_missing_in_bucket_names_every_place_looked(s3_store: S3Store, tmp_path: Path, empty_torch_home: Path) -> None:
    _entry, remote_entry = _entry_without_package()
    cfg = WeightsConfig(remote=bucket_fetcher(s3_store, "weights", tmp_path / "cache"), remote_name="s3://b/weights")
    with pytest.raises(WeightsError, match=r"s3://b/weights.*--random-weights"):
        load_network(remote_entry, config=cfg)
