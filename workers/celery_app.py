"""The Celery app, configured for long GPU batches.

- late acks + reject on worker lost: a batch is acknowledged only after its
  results are uploaded; a worker that dies mid-batch leaves it unacked.
- prefetch 1: a worker holds one batch at a time, so a busy worker never sits
  on a queue of batches another GPU could be rendering.
- a short visibility timeout with a lease: while a batch runs, its worker
  renews the message's delivery timestamp (`workers.lease`), so a live worker
  keeps its batch however long it takes, and a dead worker's batch is
  restored to the queue by any other worker within about a minute.
- JSON only: no pickle from the broker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from service.config import Settings
from service.contract import ATLAS_TASK, QUEUE, RENDER_TASK, TUNE_TASK
from workers import presence


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or Settings()
    app = Celery("dreamfarm", broker=s.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=QUEUE,
        task_queues=[Queue(QUEUE, routing_key=QUEUE)],
        task_routes={RENDER_TASK: {"queue": QUEUE}, ATLAS_TASK: {"queue": QUEUE}, TUNE_TASK: {"queue": QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": s.lease_timeout_s,
            # Look for expired leases every few seconds, and scan every time.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 30,
        },
        worker_hijack_root_logger=False,
        # Task events, for Flower (docker-compose.yml runs one).
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


app = make_celery()
# Heartbeats and prompt task events while a batch blocks the solo pool's loop.
presence.install(app)


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    """Log lines in the configured format; metrics on their port."""
    from service import logs
    from workers import metrics

    settings = Settings()
    logs.configure(settings.log_format)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.redis_url, settings.metrics_host)
