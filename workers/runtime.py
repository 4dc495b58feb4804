"""What one worker process keeps between batches: settings, clients and the
networks it has loaded (each loaded once, on first use, on this process's own
device). Created lazily inside the worker process, so nothing touches CUDA
before the process that uses it exists."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property

import torch

from service.config import Settings
from service.devices import default_device, device_name
from service.jobstore import JobStore
from service.renderer import Renderer, load_judges
from service.retry import RetryingStore, RetryPolicy
from service.s3 import S3Store
from service.spec import RenderSpec
from service.weights_remote import weights_config
from service.zoo import Registry

log = logging.getLogger("dreamfarm.worker")


@dataclass
class Runtime:
    settings: Settings
    bucket: S3Store
    jobs: JobStore
    registry: Registry = field(default_factory=Registry)
    renderers: dict[tuple[str, bool], Renderer] = field(default_factory=dict)

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(s.storage_retries, s.storage_backoff_s, s.storage_backoff_cap_s)

    def store(self, on_retry: Callable[[str, int, BaseException, float], None] | None = None) -> RetryingStore:
        """The bucket, every call retried with backoff; `on_retry` hears of each retry."""

        def note(what: str, n: int, exc: BaseException, delay: float) -> None:
            log.warning("storage error (%s), retry %d in %.1fs: %s", what, n, delay, exc)
            if on_retry is not None:
                on_retry(what, n, exc, delay)

        return RetryingStore(self.bucket, self.retry_policy, on_retry=note)

    @cached_property
    def device(self) -> torch.device:
        return default_device(self.settings.device)

    def renderer(self, spec: RenderSpec) -> Renderer:
        key = (spec.model, spec.random_weights)
        if key not in self.renderers:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed shapes per batch: fastest kernels
            weights = weights_config(self.settings, torch_home=self.settings.torch_home or os.environ.get("TORCH_HOME"))
            judges = load_judges(self.registry, self.settings.judges, weights, self.device)
            r = Renderer(self.registry.get(spec.model), device=self.device, random_weights=spec.random_weights,
                         weights=weights, judges=judges, compile=self.settings.compile)  # fmt: skip
            log.info("loaded %s on %s in %.1fs", spec.model, device_name(self.device), r.load_seconds)
            self.renderers[key] = r
        return self.renderers[key]


@cache
def runtime() -> Runtime:
    s = Settings()
    return Runtime(settings=s, bucket=S3Store.from_settings(s), jobs=JobStore.from_url(s.redis_url))
