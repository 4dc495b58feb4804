"""A small HTTP client for the API; errors become one-line DreamfarmErrors.

httpx and devstack are imported when a client is made, not with this module:
every command's parser reads `add_client_args` and `STACK_DIR`, and `--help`
should not pay for an HTTP stack (a third of a second on a small machine)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import DreamfarmError, one_line

if TYPE_CHECKING:
    import httpx

STACK_DIR = Path(os.environ.get("DREAMFARM_STACK_DIR", ".dreamfarm"))


def add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=None, help="API URL (default: $DREAMFARM_API_URL, the `up` stack, or :8000)")
    p.add_argument("--token", default=None, help="bearer token (default: $DREAMFARM_API_TOKEN or the `up` stack's)")


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http: httpx.Client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Client:
        from devstack import read_state

        state = read_state(STACK_DIR) or {}
        url = args.api or os.environ.get("DREAMFARM_API_URL") or state.get("api_url") or "http://127.0.0.1:8000"
        token = args.token or os.environ.get("DREAMFARM_API_TOKEN") or state.get("token")
        return cls(url, token)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise DreamfarmError(f"cannot reach the API at {self.http.base_url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise DreamfarmError(f"API {r.status_code}: {one_line(str(detail))}")
        return r.json()

    def download(self, url: str, dest: Path) -> None:
        import httpx

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with httpx.stream("GET", url, timeout=60) as r:
            if r.status_code != 200:
                raise DreamfarmError(f"download of {dest.name} failed: HTTP {r.status_code}")
            with tmp.open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        tmp.replace(dest)
