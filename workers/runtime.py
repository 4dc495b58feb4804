"""What one worker process keeps between batches: settings, clients and the
networks it has loaded (each loaded once, on first use, on this process's own
device). Created lazily inside the worker process, so nothing touches CUDA
before the process that uses it exists."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import torch

from service.config import Settings
from service.devices import default_device, device_name
from service.errors import UnknownModel
from service.jobstore import JobStore
from service.renderer import Renderer, load_judges
from service.retry import RetryingStore, RetryPolicy
from service.s3 import S3Store
from service.spec import RenderSpec
from service.user_models import RegisteredModels, weights_fetcher
from service.weights_remote import weights_config
from service.zoo import ModelEntry, Registry, WeightsConfig
from service.zoo.registered import entry_of

log = logging.getLogger("dreamfarm.worker")


@dataclass
class Runtime:
    settings: Settings
    bucket: S3Store
    jobs: JobStore
    registry: Registry = field(default_factory=Registry)
    #: (model, weights sha256 of a registered network, random weights) → its loaded network
    renderers: dict[tuple[str, str | None, bool], Renderer] = field(default_factory=dict)

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

    @cached_property
    def registered(self) -> RegisteredModels:
        return RegisteredModels(self.bucket)

    def weights(self) -> WeightsConfig:
        """Where weights come from: the operator's (service.weights_remote), and
        registered networks' `weights/<sha256>` fetched once into the cache."""
        cfg = weights_config(self.settings, torch_home=self.settings.torch_home or os.environ.get("TORCH_HOME"))
        cache = Path(self.settings.weights_cache_dir or Path.home() / ".cache" / "dreamfarm" / "weights")
        fetch = weights_fetcher(self.bucket, cache / "registered", fallback=cfg.remote)
        return dataclasses.replace(cfg, remote=fetch, remote_name=cfg.remote_name or "the bucket's weights/")

    def entry(self, model: str, weights_sha256: str | None = None) -> ModelEntry:
        """A built-in, or a registered network from its manifest in the bucket,
        with the weights the spec was planned with (a job planned before its
        weights were replaced renders with the weights it was keyed with)."""
        if model in self.registry:
            return self.registry.get(model)
        manifest = self.registered.find(model)
        if manifest is None:
            raise UnknownModel(f"unknown model {model!r}: not in the zoo, and no registered model of that name")
        if weights_sha256 is not None and weights_sha256 != manifest.weights_sha256:
            manifest = manifest.model_copy(update={"weights_sha256": weights_sha256})
        return entry_of(manifest)

    def judge_registry(self) -> Registry:
        """The zoo, and the public registered networks the judges name."""
        extra = {}
        for name in self.settings.judges:
            if name not in self.registry and (m := self.registered.find(name)) is not None and m.public:
                extra[name] = entry_of(m)
        return self.registry.with_entries(extra) if extra else self.registry

    def renderer(self, spec: RenderSpec) -> Renderer:
        key = (spec.model, spec.weights_sha256, spec.random_weights)
        if key not in self.renderers:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed shapes per batch: fastest kernels
            weights = self.weights()
            judges = load_judges(self.judge_registry(), self.settings.judges, weights, self.device)
            r = Renderer(self.entry(spec.model, spec.weights_sha256), device=self.device,
                         random_weights=spec.random_weights, weights=weights, judges=judges,
                         compile=self.settings.compile)  # fmt: skip
            log.info("loaded %s on %s in %.1fs", spec.model, device_name(self.device), r.load_seconds)
            self.renderers[key] = r
        return self.renderers[key]


@cache
def runtime() -> Runtime:
    s = Settings()
    return Runtime(settings=s, bucket=S3Store.from_settings(s), jobs=JobStore.from_url(s.redis_url))
