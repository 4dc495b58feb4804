"""`dreamfarm models add | remove` against the service: POST the
registration, PUT the weights streamed with their sha256, DELETE; the
server's 4xx as one line. httpx is imported when a call is made."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.client import Client
from cli.local_models import sha256_of
from service.errors import DreamfarmError, one_line

if TYPE_CHECKING:
    import httpx

    from service.zoo.registered import ModelManifest, ModelRegistration

PROGRESS_BYTES = 8 * 1024 * 1024
CHUNK = 1 << 20
MB = 1e6


def add_remote(client: Client, reg: ModelRegistration, weights: Path, quiet: bool = False) -> ModelManifest:
    """POST the registration, then PUT its weights, streamed from the file
    with their sha256 (the server refuses bytes that differ). A network the
    upload left without weights is removed again when this call created it."""
    import httpx

    from service.zoo.registered import ModelManifest

    size = weights.stat().st_size
    sha = sha256_of(weights)
    body = {k: v for k, v in reg.model_dump(mode="json").items() if v is not None}
    created = request(client, "POST", "/v1/models", json=body)
    fresh = created.status_code == 201
    bar = _bar(size, f"upload {reg.name}", quiet)
    try:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size), "X-Content-SHA256": sha}
        done = request(client, "PUT", f"/v1/models/{reg.name}/weights", content=_chunks(weights, bar),
                       headers=headers, timeout=httpx.Timeout(600, connect=10))  # fmt: skip
    except BaseException:
        if bar is not None:
            bar.close()
        if fresh:
            _forget(client, reg.name)
        raise
    if bar is not None:
        bar.close()
    answer = done.json()  # the manifest, and its `state`
    return ModelManifest.model_validate({k: v for k, v in answer.items() if k in ModelManifest.model_fields})


def _forget(client: Client, name: str) -> None:
    """Best effort: the registration just made, whose weights were refused."""
    with contextlib.suppress(Exception):  # the upload's error is the one to report
        client.http.request("DELETE", f"/v1/models/{name}")


def request(client: Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """One call to the API; a 4xx/5xx or no answer is a one-line DreamfarmError
    (as `Client.call` says it), a 2xx the response, whatever its body."""
    import httpx

    try:
        r = client.http.request(method, path, **kw)
    except httpx.HTTPError as exc:
        why = one_line(str(exc) or type(exc).__name__)
        raise DreamfarmError(f"cannot reach the API at {client.http.base_url}: {why}") from exc
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except (ValueError, AttributeError):
            detail = r.text
        raise DreamfarmError(f"API {r.status_code}: {one_line(str(detail))}")
    return r


def _chunks(path: Path, bar: Any) -> Iterator[bytes]:
    sent = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sent += len(chunk)
            if bar is not None:
                bar.set_done(sent / MB)
            yield chunk


def _bar(size: int, desc: str, quiet: bool) -> Any:
    if quiet or size < PROGRESS_BYTES:
        return None
    from cli.progress import Progress

    return Progress(size / MB, unit="MB", desc=desc, decimals=1)
