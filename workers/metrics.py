"""A worker's Prometheus metrics, served by the worker process itself on
DREAMFARM_METRICS_HOST:DREAMFARM_METRICS_PORT (loopback unless told otherwise;
`dreamfarm worker` gives each process its own port).
Celery's task events (for Flower) are turned on in `workers.celery_app`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.contract import QUEUE

log = logging.getLogger("dreamfarm.worker")
REGISTRY = CollectorRegistry()

RENDERS = Counter("dreamfarm_renders", "Units by outcome: rendered, exists (found in the bucket), failed",
                  ["model", "recipe", "outcome"], registry=REGISTRY)  # fmt: skip
IMAGE_STEPS = Gauge("dreamfarm_image_steps_per_second", "Optimization throughput of the last chunk", ["model"],
                    registry=REGISTRY)  # fmt: skip
BATCH_SECONDS = Histogram("dreamfarm_batch_duration_seconds", "Time to render one chunk", ["model"],
                          buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640), registry=REGISTRY)  # fmt: skip
BATCH_FILL = Histogram("dreamfarm_batch_fill", "Images in a chunk over the chunk size",
                       buckets=(0.125, 0.25, 0.5, 0.75, 0.99, 1.0), registry=REGISTRY)  # fmt: skip
UPLOAD_RETRIES = Counter("dreamfarm_upload_retries", "Bucket operations retried", registry=REGISTRY)
FAILURES = Counter("dreamfarm_failures", "Units failed, by reason", ["reason"], registry=REGISTRY)
OOM_SPLITS = Counter("dreamfarm_oom_splits", "Chunks split in halves after running out of memory", registry=REGISTRY)


class QueueLength(Collector):
    """The render queue's length, read from Redis at each scrape."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("dreamfarm_queue_length", "Batches waiting in the render queue", labels=["queue"])
        with contextlib.suppress(redis.RedisError):  # no sample rather than a failed scrape
            family.add_metric([QUEUE], float(self.client.llen(QUEUE)))  # type: ignore[arg-type]
        yield family


def failure_reason(reason: str) -> str:
    """A small, fixed set of label values (reasons carry free text)."""
    for prefix, label in (("upload failed", "upload"), ("out of memory", "out_of_memory"), ("batch failed", "error")):
        if reason.startswith(prefix):
            return label
    return "load" if "weights" in reason else "other"


def serve(port: int, redis_url: str, host: str = "127.0.0.1") -> None:
    """Serve on `host` only: prometheus_client binds every interface when not
    given an address, which would publish a worker's metrics beyond what the
    operator chose."""
    try:
        REGISTRY.register(QueueLength(redis.Redis.from_url(redis_url, socket_timeout=2)))
        start_http_server(port, addr=host, registry=REGISTRY)
    except (OSError, ValueError) as exc:
        log.warning("metrics not served on %s:%d: %s", host, port, exc)
        return
    log.info("metrics on %s:%d/metrics", host, port)
