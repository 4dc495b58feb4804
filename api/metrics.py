"""The API's Prometheus metrics at /metrics: requests by route, method and
status with their latencies (prometheus-fastapi-instrumentator), and what
jobs asked for. Each app has its own registry (several apps may live in one
process, as in the tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_fastapi_instrumentator import Instrumentator

from service.planning import JobPlan


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("dreamfarm_jobs_submitted", "Jobs accepted", ["model", "recipe"], registry=self.registry)
        self.units = Counter("dreamfarm_units_submitted", "Renders asked for by accepted jobs", ["model"],
                             registry=self.registry)  # fmt: skip
        self.cached = Counter("dreamfarm_units_cached", "Renders already in the bucket when their job came",
                              ["model"], registry=self.registry)  # fmt: skip

    def submitted(self, plan: JobPlan) -> None:
        model = plan.request.model
        self.jobs.labels(model, plan.request.recipe).inc()
        self.units.labels(model).inc(len(plan.units))
        self.cached.labels(model).inc(len(plan.cached))

    def install(self, app: FastAPI, reader: Callable[..., Any]) -> None:
        """Instrument every route; serve /metrics with the API's read rules."""
        Instrumentator(registry=self.registry, excluded_handlers=["/metrics"]).instrument(app).expose(
            app, endpoint="/metrics", include_in_schema=False, dependencies=[Depends(reader)]
        )
