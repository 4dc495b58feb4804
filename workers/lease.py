"""Renewing a running batch's lease in the broker.

Kombu's Redis transport emulates acks: a delivered message waits in the
`unacked` hash, and its delivery time in the `unacked_index` sorted set; any
worker restores messages older than the visibility timeout to the queue. A
worker renews its running message's time there every few seconds, so that
the visibility timeout can be short (a dead worker's batch comes back within
about a minute) while a live worker keeps a batch however long it runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import signals

log = logging.getLogger("dreamfarm.worker")
UNACKED_INDEX = "unacked_index"

# task id → delivery tag, filled when this process receives a message.
_delivery_tags: dict[str, str] = {}


@signals.task_received.connect
def _remember_delivery_tag(request: Any = None, **_: Any) -> None:
    # No message (eager execution): no lease to renew.
    with contextlib.suppress(AttributeError):
        _delivery_tags[request.id] = request.message.delivery_tag


@contextmanager
def leased(client: redis.Redis, task_id: str | None, every_s: float) -> Iterator[None]:
    """Keep renewing this task's broker lease until the block ends."""
    tag = _delivery_tags.pop(task_id, None) if task_id else None
    if tag is None:
        yield
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(every_s):
            try:
                # XX: only renew a lease that still exists (never resurrect an ack).
                client.zadd(UNACKED_INDEX, {tag: time.time()}, xx=True)
            except redis.RedisError as exc:
                log.warning("lease renewal failed for %s: %s", task_id, exc)

    thread = threading.Thread(target=renew, name=f"lease-{task_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
