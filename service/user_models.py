"""Registered networks in the bucket: the workflows behind `/v1/models`
(register, attach weights, delete), who may see which, and the zoo as one
tenant sees it. No HTTP: the API calls these, and so could any other client.

A registered network is `models/<name>/manifest.json` (written last: it
exists iff that object does) and its weights `weights/<sha256>` (the file as
uploaded, content-addressed). Everything is checked before anything is
stored (`service.zoo.registered`), so a refused registration or upload
leaves the bucket as it was.

A tenant sees its own networks and the public ones; another tenant's
private network does not exist for it (NotFound, as for a job).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from service import layout
from service.errors import (
    BadWeights,
    Conflict,
    Forbidden,
    NameTaken,
    NotFound,
    ObjectMissing,
    PayloadTooLarge,
    StorageError,
    one_line,
)
from service.jobstore import JobStore
from service.storage import Store, write_atomically
from service.zoo.registered import (
    SOURCE,
    ModelManifest,
    ModelRegistration,
    check_registration,
    check_weights,
    entry_of,
    weights_format,
)
from service.zoo.registry import ModelEntry, Registry
from service.zoo.weights import Fetcher

log = logging.getLogger("dreamfarm.models")
#: How long a process trusts its list of manifests: another API replica's
#: registration shows here within this long (this process's own at once).
TTL_S = 2.0


class RegisteredModels:
    """The registered networks of one bucket, listed at most every `ttl_s`."""

    def __init__(self, store: Store, ttl_s: float = TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._listed: tuple[float, dict[str, ModelManifest]] | None = None
        self._registries: dict[tuple[int, str | None], Registry] = {}
        self._version = 0

    # Reading.

    def all(self) -> dict[str, ModelManifest]:
        """name → manifest, every tenant's."""
        with self._lock:
            if self._listed is not None and time.monotonic() - self._listed[0] < self.ttl_s:
                return self._listed[1]
        found = {}
        for key in self.store.list(layout.MODELS_PREFIX):
            if key.endswith("/" + layout.MANIFEST) and (m := self._read(key)) is not None:
                found[m.name] = m
        with self._lock:
            if self._listed is None or found != self._listed[1]:
                self._version += 1
                self._registries.clear()
            self._listed = (time.monotonic(), found)
        return found

    def find(self, name: str) -> ModelManifest | None:
        """The manifest of `name` as the bucket has it now (no cache)."""
        key = layout.model_manifest_key(name)
        return self._read(key) if self.store.exists(key) else None

    def visible(self, tenant: str | None) -> list[ModelManifest]:
        """What `tenant` sees (None: anyone, without a token): its own and the public ones."""
        return [m for m in self.all().values() if m.public or (tenant is not None and m.tenant == tenant)]

    def lookup(self, name: str, tenant: str | None) -> ModelManifest:
        found = self.all().get(name)
        if found is None or not (found.public or found.tenant == tenant):
            raise NotFound(f"no registered model {name[:64]!r}")
        return found

    def owned(self, name: str, tenant: str) -> ModelManifest:
        """`name`, if `tenant` may change it (read fresh: writes act on the bucket as it is)."""
        found = self.find(name)
        if found is None or not (found.public or found.tenant == tenant):
            raise NotFound(f"no registered model {name[:64]!r}")
        if found.tenant != tenant:
            raise Forbidden(f"model {name!r} is public but not yours: only its owner can change it")
        return found

    def registry(self, base: Registry, tenant: str | None) -> Registry:
        """The zoo as `tenant` sees it: `base` and its visible registered networks."""
        manifests = self.visible(tenant)
        with self._lock:
            key = (self._version, tenant)
            if key not in self._registries:
                self._registries[key] = base.with_entries({m.name: entry_of(m) for m in manifests})
            return self._registries[key]

    # Writing.

    def register(self, reg: ModelRegistration, base: Registry, tenant: str) -> ModelManifest:
        """Check a registration and store its manifest (without weights yet)."""
        existing = self.find(reg.name)
        if existing is not None:
            if existing.tenant == tenant:
                raise NameTaken(f"you have a model named {reg.name!r}: choose another name, or delete it first; "
                                "PUT /v1/models/{name}/weights replaces its weights")  # fmt: skip
            # Names are one namespace: a clash must be refused, but says no more than that.
            raise NameTaken(f"the name {reg.name!r} is taken: choose another name")
        manifest = check_registration(reg, base, tenant=tenant)
        self._write(manifest)
        log.info("tenant=%s registered %s (%s)", tenant, manifest.name, manifest.arch)
        return manifest

    def attach_weights(self, name: str, tenant: str, path: Path) -> ModelManifest:
        """Check a weights file against `name`'s network, store it under its
        sha256 and point the manifest at it. Nothing is stored unless it fits."""
        manifest = self.owned(name, tenant)
        sha, nbytes = check_weights(manifest, path)
        key = layout.weights_key(sha)
        uploaded = not self.store.exists(key)
        if uploaded:
            self.store.put(key, path.read_bytes(), "application/octet-stream", {"model": name})
        updated = manifest.with_weights(sha, nbytes, weights_format(path))
        try:
            self._write(updated)
        except Exception:
            if uploaded:  # nothing half-stored: the weights no manifest names go again
                self._forget_weights(sha, keep=None)
            raise
        log.info("tenant=%s weights of %s: %s (%d bytes)", tenant, name, sha[:12], nbytes)
        return updated

    def attach_object(self, name: str, tenant: str, key: str, limit: int, tmp_dir: Path | None = None) -> ModelManifest:
        """`attach_weights` with a file already in the bucket (`key`)."""
        self.owned(name, tenant)
        # Only the tenant's own staging prefix, or weights already stored by
        # content (whoever names a sha256 has the file): never another
        # tenant's objects, and a refusal looks the same as a missing object.
        allowed = key.startswith((f"uploads/{tenant}/", "weights/")) and ".." not in key.split("/")
        missing = BadWeights(f"no object {key[:200]!r} among those a weights reference may name "
                             f"(uploads/{tenant}/…, weights/<sha256>)", field="key")  # fmt: skip
        if not allowed:
            raise missing
        try:
            data = self.store.get(key)
        except ObjectMissing:
            raise missing from None
        if len(data) > limit:
            raise PayloadTooLarge(f"object {key[:200]!r} is {len(data)} bytes, the limit is {limit} bytes")
        path = temp_path(tmp_dir)
        try:
            write_atomically(path, data)
            return self.attach_weights(name, tenant, path)
        finally:
            path.unlink(missing_ok=True)

    def delete(self, name: str, tenant: str, jobs: JobStore) -> None:
        """Remove a network (its manifest first: from then on it does not
        exist), and its weights unless another network uses them too.
        Refused while jobs of it are queued or running."""
        manifest = self.owned(name, tenant)
        busy = jobs.in_flight_with_model(name)
        if busy:
            raise Conflict(f"model {name!r} has {len(busy)} jobs queued or running ({', '.join(busy[:3])}): "
                           "cancel them or wait for them to finish")  # fmt: skip
        _delete(self.store, layout.model_manifest_key(name))
        self._changed()
        if manifest.weights_sha256:
            self._forget_weights(manifest.weights_sha256, keep=name)
        log.info("tenant=%s deleted %s", tenant, name)

    # Inside.

    def _read(self, key: str) -> ModelManifest | None:
        try:
            return ModelManifest.model_validate_json(self.store.get(key))
        except ObjectMissing:
            return None
        except ValidationError as exc:  # written by something else: skipped, not fatal to every listing
            log.warning("unreadable manifest %s: %s", key, one_line(str(exc), 200))
            return None

    def _write(self, manifest: ModelManifest) -> None:
        data = manifest.model_dump_json(indent=1).encode()
        self.store.put(layout.model_manifest_key(manifest.name), data, "application/json")
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            self._listed = None
            self._version += 1
            self._registries.clear()

    def _forget_weights(self, sha: str, keep: str | None) -> None:
        """Delete `weights/<sha>` unless a manifest (other than `keep`'s) names it."""
        try:
            users = [m.name for m in self.all().values() if m.weights_sha256 == sha and m.name != keep]
            if not users:
                _delete(self.store, layout.weights_key(sha))
        except StorageError as exc:
            log.warning("weights %s not deleted: %s", sha[:12], one_line(str(exc)))


def require_weights(entry: ModelEntry, random_weights: bool) -> None:
    """A job of a registered network needs its weights (or random ones)."""
    if entry.source == SOURCE and entry.weights.sha256 is None and not random_weights:
        raise Conflict(f"model {entry.name!r} has no weights yet: PUT /v1/models/{entry.name}/weights uploads them "
                       "(or render with random_weights)")  # fmt: skip


def temp_path(tmp_dir: Path | None = None) -> Path:
    """A fresh file name for an upload in progress."""
    folder = tmp_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".dreamfarm-weights-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"


_CACHED = re.compile(r"^([0-9a-f]{64})\.(safetensors|pt)$")


def weights_fetcher(store: Store, cache_dir: Path, fallback: Fetcher | None = None) -> Fetcher:
    """A worker's fetcher for registered networks' weights (`<sha256>.safetensors`
    or `.pt`, as `entry_of` names them): `weights/<sha256>` from the bucket,
    once per host, into `cache_dir` under the suffix its format reads with;
    any other name goes to `fallback`. The file is checked against its sha256
    by whoever reads it (`service.zoo.weights.load_state_dict`)."""

    def fetch(filename: str) -> Path | None:
        m = _CACHED.fullmatch(filename)
        if m is None:
            return fallback(filename) if fallback is not None else None
        sha = m.group(1)
        for suffix in ("safetensors", "pt"):
            if (cache_dir / f"{sha}.{suffix}").is_file():
                return cache_dir / filename if suffix == m.group(2) else None
        key = layout.weights_key(sha)
        if not store.exists(key):
            return None
        partial = cache_dir / f".{sha}.{os.getpid()}.part"
        write_atomically(partial, store.get(key))
        dest = cache_dir / f"{sha}.{'safetensors' if weights_format(partial) == 'safetensors' else 'pt'}"
        os.replace(partial, dest)
        return dest if dest.name == filename else None

    return fetch


def _delete(store: Store, key: str) -> None:
    delete: Callable[[str], None] | None = getattr(store, "delete", None)
    if delete is None:
        raise StorageError(f"this store cannot delete objects ({type(store).__name__})")
    delete(key)
