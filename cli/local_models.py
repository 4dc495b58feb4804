"""The local registry of your own networks (`dreamfarm models add --local`):
`$DREAMFARM_MODELS_DIR`, by default the `models/` folder of dreamfarm's cache
(`$DREAMFARM_CACHE`, else `~/.cache/dreamfarm`), one folder per network,
`<name>/manifest.json` (written last) beside `<name>/<sha256>.safetensors`
(or `.pt`). Checked by the service's own functions (service.zoo.registered);
read by `dreamfarm render` and `dreamfarm models`. Imports nothing heavy at
module level (the CLI's parser imports it)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import DreamfarmError, one_line

if TYPE_CHECKING:
    from service.zoo import Registry, WeightsConfig
    from service.zoo.registered import ModelManifest, ModelRegistration

CHUNK = 1 << 20


def add_local(reg: ModelRegistration, weights: Path) -> ModelManifest:
    """Check the registration and its weights as the service does, then file
    both in the local registry: the weights under their sha256, the manifest
    last (a half-written registration is never there)."""
    from service.storage import write_atomically
    from service.zoo import Registry
    from service.zoo.registered import check_registration, check_weights, entry_of, weights_format

    manifest = check_registration(reg, local_registry(Registry()))
    sha, nbytes = check_weights(manifest, weights)
    manifest = manifest.with_weights(sha, nbytes, weights_format(weights))
    folder = local_dir() / reg.name
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / entry_of(manifest).weights.filename
    if not dest.is_file() or sha256_of(dest) != sha:
        tmp = folder / f".tmp-{os.getpid()}-{dest.name}"
        shutil.copyfile(weights, tmp)
        os.replace(tmp, dest)
    write_atomically(folder / "manifest.json", manifest.model_dump_json(indent=1).encode())
    for old in folder.iterdir():  # an earlier registration's weights
        if old.name not in ("manifest.json", dest.name) and not old.name.startswith(".tmp-"):
            old.unlink(missing_ok=True)
    return manifest


def local_dir() -> Path:
    """$DREAMFARM_MODELS_DIR, or `models/` in dreamfarm's cache."""
    given = os.environ.get("DREAMFARM_MODELS_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("DREAMFARM_CACHE") or Path.home() / ".cache" / "dreamfarm") / "models"


def local_manifests() -> dict[str, ModelManifest]:
    """name → manifest of every network in the local registry (none: {},
    without importing pydantic's models). A manifest that cannot be read
    is an error that names it."""
    paths = sorted(local_dir().glob("*/manifest.json"))
    if not paths:
        return {}
    from pydantic import ValidationError

    from service.validation import describe
    from service.zoo.registered import ModelManifest

    out: dict[str, ModelManifest] = {}
    for path in paths:
        try:
            manifest = ModelManifest.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            why = describe(exc) if isinstance(exc, ValidationError) else str(exc)
            fix = f"`dreamfarm models remove {path.parent.name} --local` removes it"
            raise DreamfarmError(f"local registry: {path} cannot be read ({one_line(why, 160)}); {fix}") from None
        out[manifest.name] = manifest
    return out


def local_registry(base: Registry | None = None) -> Registry:
    """The zoo (`base`, default a new one) with the local registry's networks."""
    from service.zoo import Registry

    base = base if base is not None else Registry()
    manifests = local_manifests()
    if not manifests:
        return base
    from service.zoo.registered import entry_of

    return base.with_entries({name: entry_of(m) for name, m in manifests.items() if m.weights_sha256})


def with_local_weights(config: WeightsConfig) -> WeightsConfig:
    """`config`, also finding the local registry's weights files (by their
    sha256 names) after every other place it looks."""
    folder = local_dir()
    if not folder.is_dir():
        return config
    remote = config.remote

    def fetch(filename: str) -> Path | None:
        for path in folder.glob(f"*/{filename}"):
            if path.is_file():
                return path
        return remote(filename) if remote is not None else None

    where = f"{folder}/<name>/" + (f" or {config.remote_name}" if remote is not None else "")
    return replace(config, remote=fetch, remote_name=where)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
