"""Log lines for the service's processes: plain text, or JSON (one object a
line, python-json-logger) carrying the job and batch being worked on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

JOB_ID: ContextVar[str | None] = ContextVar("job_id", default=None)
BATCH_ID: ContextVar[str | None] = ContextVar("batch_id", default=None)
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def bound(job_id: str | None, batch_id: str | None = None) -> Iterator[None]:
    """Log lines within the block carry this job and batch."""
    tokens = JOB_ID.set(job_id), BATCH_ID.set(batch_id)
    try:
        yield
    finally:
        JOB_ID.reset(tokens[0])
        BATCH_ID.reset(tokens[1])


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = JOB_ID.get()
        record.batch_id = BATCH_ID.get()
        return True


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """dreamfarm's own loggers to stderr in `fmt` ("text" or "json"), once."""
    ours = logging.getLogger("dreamfarm")
    if any(getattr(h, "_dreamfarm", False) for h in ours.handlers):
        return
    handler = logging.StreamHandler()
    handler._dreamfarm = True  # type: ignore[attr-defined]
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(job_id)s %(batch_id)s"))
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
