"""What one worker process keeps between batches: settings, clients and the
networks it has loaded (each loaded once, on first use, on this process's own
device). Created lazily inside the worker process, so nothing touches CUDA
before the process that uses it exists."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch

from service import precision_cache
from service.config import Settings
from service.jobs import JobStore
from service.precision import bfloat16_is_fast
from service.renderer import Renderer, device_name
from service.s3 import S3Store
from service.spec import RenderSpec
from service.weights_remote import bucket_fetcher
from service.weights_remote import from_settings as remote_from_settings
from service.zoo import Registry, WeightsConfig

log = logging.getLogger("dreamfarm.worker")


@dataclass
class Runtime:
    settings: Settings
    store: S3Store
    jobs: JobStore
    registry: Registry = field(default_factory=Registry)
    renderers: dict[tuple[str, bool], Renderer] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        if self.settings.device:
            return torch.device(self.settings.device)
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def renderer(self, spec: RenderSpec) -> Renderer:
        key = (spec.model, spec.random_weights)
        if key not in self.renderers:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed shapes per batch: fastest kernels
            weights = WeightsConfig(torch_home=self.settings.torch_home or os.environ.get("TORCH_HOME"),
                                    weights_dir=self.settings.weights_dir, **self._remote_weights())  # fmt: skip
            r = Renderer(self.registry.get(spec.model), device=self.device, random_weights=spec.random_weights,
                         weights=weights)  # fmt: skip
            log.info("loaded %s on %s in %.1fs", spec.model, device_name(self.device), r.load_seconds)
            self.renderers[key] = r
        return self.renderers[key]

    def _remote_weights(self) -> dict[str, Any]:
        url = self.settings.weights_url
        if not url:
            return {}
        store, prefix, cache = remote_from_settings(self.settings, url)
        return {"remote": bucket_fetcher(store, prefix, cache), "remote_name": url}

    def prepare_precision(self, renderer: Renderer, specs: list[RenderSpec]) -> None:
        """For 'auto' on a device with fast bf16: a cached guard verdict, or run the guard once."""
        spec = specs[0]
        if spec.precision != "auto" or not bfloat16_is_fast(self.device):
            return
        dname = device_name(self.device)
        report = precision_cache.load(spec.model, spec.layer, dname, spec.random_weights)
        if report is None:
            probe = [s.model_copy(update={"steps": 64, "size": min(s.size, 160)}) for s in specs[:4]]
            report = renderer.run_guard(probe)
            precision_cache.save(spec.model, spec.layer, dname, spec.random_weights, report)
            log.info("bf16 guard for %s %s on %s: %s", spec.model, spec.layer, dname, report.reason)
        renderer.guard_report = report


@cache
def runtime() -> Runtime:
    settings = Settings()
    store = S3Store.from_settings(settings)
    return Runtime(settings=settings, store=store, jobs=JobStore.from_url(settings.redis_url))
