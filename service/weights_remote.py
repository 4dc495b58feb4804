"""Network weights kept in a bucket: `s3://bucket/prefix/<checkpoint file>`.

A worker fetches a checkpoint it does not have locally into a cache folder,
once; the file is then checked against its expected sha256 like any other
(`service.zoo.weights.verify`) before it is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from service.config import Settings
from service.errors import StorageError, WeightsError
from service.s3 import S3Store
from service.storage import Store, check_key, write_atomically
from service.zoo import WeightsConfig
from service.zoo.weights import Fetcher


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' → ('bucket', 'some/prefix')."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise WeightsError(f"weights URL must look like s3://bucket/prefix, got {url!r}")
    return u.netloc, u.path.strip("/")


def from_settings(settings: Settings, url: str) -> tuple[S3Store, str, Path]:
    """The store for `url`'s bucket (the configured endpoint and keys), the
    key or prefix inside it, and the local cache folder."""
    bucket, key = parse_s3_url(url)
    store = S3Store.from_settings(settings.model_copy(update={"s3_bucket": bucket, "s3_create_bucket": False}))
    cache = Path(settings.weights_cache_dir or Path.home() / ".cache" / "dreamfarm" / "weights")
    return store, key, cache


def bucket_fetcher(store: Store, prefix: str, cache_dir: Path) -> Fetcher:
    def fetch(filename: str) -> Path | None:
        dest = cache_dir / filename
        if dest.is_file():
            return dest
        key = check_key(f"{prefix}/{filename}" if prefix else filename)
        if not store.exists(key):
            return None
        write_atomically(dest, store.get(key))
        return dest

    return fetch


def download(store: Store, key: str, cache_dir: Path) -> Path:
    """One explicit object (`--weights s3://bucket/key`) into the cache."""
    name = key.rsplit("/", 1)[-1]
    fetched = bucket_fetcher(store, key.rsplit("/", 1)[0] if "/" in key else "", cache_dir)(name)
    if fetched is None:
        raise StorageError(f"no weights object {key!r} in the bucket")
    return fetched


def weights_config(settings: Settings, *, path: str | None = None, torch_home: str | None = None) -> WeightsConfig:
    """Where this process finds weights: an explicit file or `s3://bucket/key`
    (fetched once into the cache), TORCH_HOME, DREAMFARM_WEIGHTS_DIR, and as
    a last resort DREAMFARM_WEIGHTS_URL (a bucket prefix of checkpoints)."""
    if path and path.startswith("s3://"):
        store, key, cache = from_settings(settings, path)
        path = str(download(store, key, cache))
    remote: dict[str, Any] = {}
    if settings.weights_url:
        store, prefix, cache = from_settings(settings, settings.weights_url)
        remote = {"remote": bucket_fetcher(store, prefix, cache), "remote_name": settings.weights_url}
    return WeightsConfig(path=path, torch_home=torch_home, weights_dir=settings.weights_dir, **remote)
