"""What the routes depend on: the services (made once per app), the settings,
and who is asking (a tenant, from the bearer token)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from api.metrics import ApiMetrics
from api.publisher import CeleryPublisher
from api.security import Auth, bearer
from service.architectures import Architectures
from service.config import Settings
from service.contract import Publisher
from service.errors import StorageError, one_line
from service.gallery.index import RedisIndex
from service.gallery.pages import Gallery
from service.jobstore import JobStore
from service.s3 import S3Store
from service.storage import Store
from service.submission import Limits, Workflows
from service.user_models import RegisteredModels
from service.zoo import Registry

Reader = Callable[..., str | None]
log = logging.getLogger("dreamfarm.api")


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

    @cached_property
    def registered(self) -> RegisteredModels:
        """Users' own networks (manifests in the bucket, listed every few seconds)."""
        return RegisteredModels(self.store)

    def architectures_for(self, tenant: str | None, model: str | None = None) -> Architectures:
        """The zoo as `tenant` sees it: built-ins and its visible registered
        networks (a built-in `model` needs no look at the bucket)."""
        if model is not None and model in self.registry:
            return self.architectures
        return self.architectures.with_registry(self.registered.registry(self.registry, tenant))

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = CeleryPublisher(self.settings)
        return self._publisher

    @property
    def gallery(self) -> Gallery:
        return self.gallery_for(None)

    def gallery_for(self, tenant: str | None) -> Gallery:
        """The gallery as `tenant` sees it: the built-ins' renders and those of
        the registered networks it may see (None: the public ones)."""
        try:
            archs = self.architectures_for(tenant)
        except StorageError as exc:
            log.warning("registered models not listed for the gallery: %s", one_line(str(exc)))
            archs = self.architectures
        return Gallery(RedisIndex(self.jobs.r), archs, self.store)

    @property
    def workflows(self) -> Workflows:
        limits = Limits.from_settings(self.settings)
        return Workflows(self.jobs, self.store, self.publisher, self.architectures, limits, registered=self.registered)

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


def model_viewer_for(settings: Settings) -> Reader:
    """Who is looking at the models: as reads are when they need a token;
    else the tenant of a token if one is sent (its registered networks are
    listed), anyone otherwise (the public ones only). The open variant reads
    the header itself, so that the schema documents the route as open."""
    if settings.protect_reads:
        return protected_reader

    def open_viewer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            scheme, token = "bearer", request.cookies.get(TOKEN_COOKIE, "")  # the gallery's sign-in
        if not token.strip():
            return None
        try:
            return services(request).auth.tenant(
                HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
            )
        except HTTPException:  # reads are open: a wrong token reads as no token, as on every other route
            return None

    return open_viewer


def reader_for(settings: Settings) -> Reader:
    """Reads need a token only when DREAMFARM_PROTECT_READS is set (and the
    OpenAPI document says so only then)."""
    return protected_reader if settings.protect_reads else open_reader


def read_errors(settings: Settings, model: Any) -> dict[int | str, dict[str, Any]]:
    return {401: {"model": model}} if settings.protect_reads else {}
