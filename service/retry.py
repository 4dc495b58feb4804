"""Retrying flaky operations (uploads to a bucket) with capped exponential
backoff and full jitter, and a store that does so on every call."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from service.errors import ObjectMissing, StorageError
from service.storage import Store

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
        except ObjectMissing:
            raise  # asking again will not make it appear
        except retry_on as exc:
            if bound is None:
                raise
            # Full jitter: spreads out workers that all lost the bucket at once.
            delay = random.uniform(bound / 2, bound)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 6
    base_s: float = 0.5
    cap_s: float = 20.0


class RetryingStore:
    """A `Store` whose every call is retried on `StorageError` with backoff:
    a bucket that blips costs a few seconds, not a batch."""

    def __init__(
        self,
        store: Store,
        policy: RetryPolicy,
        on_retry: Callable[[str, int, BaseException, float], None] | None = None,
    ) -> None:
        self.inner = store
        self.policy = policy
        self.on_retry = on_retry

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        hook = self.on_retry

        def note(n: int, exc: BaseException, delay: float) -> None:
            if hook is not None:
                hook(what, n, exc, delay)

        p = self.policy
        return with_retries(fn, retries=p.retries, base_s=p.base_s, cap_s=p.cap_s, on_retry=note)

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data, content_type, metadata))

    def get(self, key: str) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        return self._call(f"exists {key}", lambda: self.inner.exists(key))

    def delete(self, key: str) -> None:
        """The inner store's delete, retried (a store without one cannot delete)."""
        self._call(f"delete {key}", lambda: self.inner.delete(key))  # type: ignore[attr-defined]

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self._call(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self.inner.url(key, expires_s)
