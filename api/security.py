"""Bearer tokens → tenants."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings

bearer = HTTPBearer(auto_error=False, description="A tenant's API token (DREAMFARM_API_TOKEN / DREAMFARM_API_TOKENS).")
WWW_AUTH = {"WWW-Authenticate": "Bearer"}


class Auth:
    """Tokens are compared as sha256 digests with `hmac.compare_digest`,
    against every configured token (no early exit), so neither a token's
    content nor its length shows in the response time."""

    def __init__(self, settings: Settings) -> None:
        self._table = [
            (tenant, hashlib.sha256(token.get_secret_value().encode()).digest())
            for tenant, token in settings.tenant_tokens().items()
        ]

    @property
    def configured(self) -> bool:
        return bool(self._table)

    def tenant(self, creds: HTTPAuthorizationCredentials | None) -> str:
        if not self._table:
            raise HTTPException(401, "this server has no API token configured, so it accepts no requests that need "
                                "one (set DREAMFARM_API_TOKEN or DREAMFARM_API_TOKENS)", headers=WWW_AUTH)  # fmt: skip
        if creds is None or not creds.credentials:
            raise HTTPException(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                                headers=WWW_AUTH)  # fmt: skip
        digest = hashlib.sha256(creds.credentials.encode("utf-8", "replace")).digest()
        found = None
        for tenant, expected in self._table:
            if hmac.compare_digest(digest, expected):
                found = tenant
        if found is None:
            raise HTTPException(401, "invalid bearer token", headers=WWW_AUTH)
        return found
