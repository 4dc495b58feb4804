"""Publishing batches to the render queue: the API's side of
`service.contract`, with a Celery client that knows the queue and the task
names and nothing of the workers' code."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.entity import Queue

from service.config import Settings
from service.contract import ATLAS_TASK, QUEUE, RENDER_TASK, TUNE_TASK, RenderBatch, TuneTask


class CeleryPublisher:
    def __init__(self, settings: Settings) -> None:
        self.app = Celery("dreamfarm-api", broker=settings.redis_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_queues=[Queue(QUEUE, routing_key=QUEUE)],
            broker_connection_retry_on_startup=True,
            # A `task-sent` event per batch: Flower then shows a batch from the
            # moment it is queued (PENDING), not only once a worker takes it.
            task_send_sent_event=True,
            broker_transport_options={
                "visibility_timeout": settings.lease_timeout_s,
                "socket_timeout": 30,
                "socket_connect_timeout": 5,
                "retry_on_timeout": True,
            },
        )

    def publish(self, batches: Sequence[RenderBatch]) -> None:
        with self.app.producer_or_acquire() as producer:
            for batch in batches:
                self.app.send_task(RENDER_TASK, kwargs={"batch": batch.model_dump(mode="json")}, queue=QUEUE,
                                   producer=producer)  # fmt: skip

    def publish_atlas(self, job_id: str) -> None:
        self.app.send_task(ATLAS_TASK, kwargs={"job_id": job_id}, queue=QUEUE)

    def publish_tune(self, task: TuneTask) -> None:
        self.app.send_task(TUNE_TASK, kwargs={"task": task.model_dump(mode="json")}, queue=QUEUE)
