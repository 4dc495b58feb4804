"""Retrying flaky operations (uploads to a bucket) with capped exponential
backoff and full jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from service.errors import StorageError

T = TypeVar("T")


def backoff_delays(attempts: int, base_s: float, cap_s: float) -> list[float]:
    """The upper bound of each wait: base·2^i, capped."""
    return [min(cap_s, base_s * 2**i) for i in range(attempts)]


def with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    base_s: float,
    cap_s: float,
    retry_on: tuple[type[BaseException], ...] = (StorageError,),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`; on a `retry_on` error wait and try again, `retries` times at
    most, then let the last error through."""
    for attempt, bound in enumerate([*backoff_delays(retries, base_s, cap_s), None]):
        try:
            return fn()
        except retry_on as exc:
            if bound is None:
                raise
            # Full jitter: spreads out workers that all lost the bucket at once.
            delay = random.uniform(bound / 2, bound)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
