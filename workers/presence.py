"""What monitors (Flower, `celery events`) see of a worker busy with a batch.

The solo pool renders in the worker's main thread, which is also the thread
of Celery's event loop. While a batch renders (minutes on a GPU) that loop
is blocked: the worker sends no heartbeat, and the events of the batch's own
task (received, started) wait in the loop's buffer until the batch is over.
Measured on a local stack: a 27 s batch produced no event at all between its
task-sent and the burst of received, started and succeeded at the end.
Flower then shows the batch queued until it has finished, and the worker
offline ~4 s into every batch (a heartbeat is due every 2 s; it expires after
two missed).

For the length of each batch this module (`busy`):
- flushes the task events Celery has buffered, from the main thread before
  the batch renders (the loop is blocked by us, so nothing else uses that
  connection), so the batch shows as received and started when it is;
- sends the worker's heartbeats from a side thread, on a connection of its
  own, at the worker's own interval and with the fields Celery's sends.

A `--without-heartbeat` worker sends none here either. Remote control
(`celery inspect`) still waits for the loop: a busy worker answers once its
batch is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, bootsteps
from celery.utils.sysinfo import load_average
from celery.worker.state import SOFTWARE_INFO, active_requests, all_total_count

log = logging.getLogger("dreamfarm.worker")

# The running consumer of this worker process (one: solo pool), set by the
# bootstep below when the consumer starts, cleared when it stops.
_consumer: list[Any] = []


class Presence(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
    """A consumer bootstep (Celery's extension point) that remembers the
    consumer, for `busy` to reach its event dispatcher and heartbeat."""

    requires = ("celery.worker.consumer.heart:Heart",)

    def start(self, c: Any) -> None:
        _consumer[:] = [c]

    def stop(self, c: Any) -> None:
        _consumer.clear()

    def shutdown(self, c: Any) -> None:
        _consumer.clear()


def install(app: Celery) -> None:
    app.steps["consumer"].add(Presence)


@contextmanager
def busy(app: Celery) -> Iterator[None]:
    """Keep monitors up to date while the block (a batch) runs in the main thread."""
    consumer: Any = _consumer[0] if _consumer else None
    dispatcher = getattr(consumer, "event_dispatcher", None)
    if dispatcher is None or not dispatcher.enabled:  # not in a worker, or events off
        yield
        return
    try:
        dispatcher.flush()
    except Exception as exc:  # the events wait for the loop, as without this module
        log.warning("task events not flushed: %s", exc)
    heart = getattr(consumer, "heart", None)
    if heart is None:  # --without-heartbeat
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=_beat, args=(app, consumer.hostname, float(heart.interval), stop),
                              name="heartbeat", daemon=True)  # fmt: skip
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _beat(app: Celery, hostname: str, interval: float, stop: threading.Event) -> None:
    """worker-heartbeat every `interval` s until `stop`, as Celery's Heart sends it."""
    try:
        with app.connection_for_write() as conn:
            dispatcher = app.events.Dispatcher(conn, hostname=hostname, enabled=True)
            try:
                # One at once: the loop's last heartbeat may be nearly two intervals old.
                while True:
                    # Best effort: a broker blip costs a heartbeat, never the batch.
                    with contextlib.suppress(Exception):
                        dispatcher.send("worker-heartbeat", freq=interval, active=len(active_requests),
                                        processed=all_total_count[0], loadavg=load_average(),
                                        **SOFTWARE_INFO)  # fmt: skip
                    if stop.wait(interval):
                        break
            finally:
                dispatcher.close()
    except Exception as exc:
        log.warning("heartbeats while busy not sent: %s", exc)
