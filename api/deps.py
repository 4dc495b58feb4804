"""What the routes depend on: the services (made once per app), the settings,
and who is asking (a tenant, from the bearer token)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from api.metrics import ApiMetrics
from api.publisher import CeleryPublisher
from api.security import Auth, bearer
from service.architectures import Architectures
from service.config import Settings
from service.contract import Publisher
from service.gallery.index import RedisIndex
from service.gallery.pages import Gallery
from service.jobstore import JobStore
from service.s3 import S3Store
from service.storage import Store
from service.submission import Limits, Workflows
from service.zoo import Registry

Reader = Callable[..., str | None]


class Services:
    """Everything the routes need, made once per app; clients are made on first use."""

    def __init__(
        self, settings: Settings, store: Store | None = None, jobs: JobStore | None = None,
        publisher: Publisher | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.architectures = Architectures()
        self.auth = Auth(settings)
        self.metrics = ApiMetrics()
        self._store, self._jobs, self._publisher = store, jobs, publisher

    @property
    def registry(self) -> Registry:
        return self.architectures.registry

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = S3Store.from_settings(self.settings)
        return self._store

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore.from_url(self.settings.redis_url)
        return self._jobs

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = CeleryPublisher(self.settings)
        return self._publisher

    @property
    def gallery(self) -> Gallery:
        return Gallery(RedisIndex(self.jobs.r), self.architectures, self.store)

    @property
    def workflows(self) -> Workflows:
        return Workflows(self.jobs, self.store, self.publisher, self.architectures, Limits.from_settings(self.settings))

    def url(self, key: str) -> str:
        return self.store.url(key, self.settings.presign_expires_s)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def writer(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    """The tenant writing; 401 without a valid token."""
    return services(request).auth.tenant(creds)


TOKEN_COOKIE = "dreamfarm_token"


def protected_reader(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
    """The tenant reading: a bearer token, or (a browser on the gallery) the
    token the gallery's sign-in page keeps in a cookie. Reads only: a cookie
    never authorizes a write."""
    if creds is None and (cookie := request.cookies.get(TOKEN_COOKIE)):
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=cookie)
    return services(request).auth.tenant(creds)


def open_reader() -> str | None:
    return None  # anyone may read, and sees every job


def reader_for(settings: Settings) -> Reader:
    """Reads need a token only when DREAMFARM_PROTECT_READS is set (and the
    OpenAPI document says so only then)."""
    return protected_reader if settings.protect_reads else open_reader


def read_errors(settings: Settings, model: Any) -> dict[int | str, dict[str, Any]]:
    return {401: {"model": model}} if settings.protect_reads else {}
