"""Real local servers for integration tests: one Redis and one SeaweedFS S3
per test session, and a fresh bucket per test so tests cannot see each
other's objects. Import these from conftest.py (or explicitly)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devstack import RedisServer, SeaweedS3
from service.s3 import S3Store


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(data_dir=tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def store_for(server: SeaweedS3, bucket: str, **kwargs: object) -> S3Store:
    """An S3Store signed with the server's credentials (kwargs override)."""
    options: dict[str, object] = {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 2,
        "read_timeout": 10,
        "max_attempts": 0,
    }
    options.update(kwargs)
    return S3Store(bucket, **options)  # type: ignore[arg-type]


@pytest.fixture
def s3_store(seaweed: SeaweedS3) -> S3Store:
    return store_for(seaweed, f"test-{uuid.uuid4().hex[:16]}", create_bucket=True)
