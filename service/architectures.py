"""Architectures by (model, size), traced once and kept: what the API and the
planner validate against, without any weights."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from service.errors import DreamfarmError, one_line
from service.zoo import Architecture, Registry

log = logging.getLogger("dreamfarm.zoo")


class Architectures:
    def __init__(self, registry: Registry | None = None, *, _shared: _Traces | None = None) -> None:
        self.registry = registry or Registry()
        self._cache = _shared if _shared is not None else _Traces()

    def with_registry(self, registry: Registry) -> Architectures:
        """The same architectures over another registry (the zoo plus one
        tenant's registered networks), sharing what has been traced."""
        return Architectures(registry, _shared=self._cache)

    def get(self, model: str, size: int | None = None) -> Architecture:
        """The architecture at `size` (None: the model's own); an error that
        says whether the size or the model is at fault."""
        entry = self.registry.get(model)  # UnknownModel names the valid models
        try:
            return self._traced(model, size)
        except DreamfarmError:
            raise
        except Exception as exc:
            error = one_line(f"{type(exc).__name__}: {exc}", 160)
            if size is not None and size != entry.input_size and self._traces(model):
                raise DreamfarmError(
                    f"size {size} does not work for {model}: its layers cannot be computed at that size "
                    f"({error}); its native size is {entry.input_size}",
                    field="size",
                ) from None
            # The zoo cannot trace this network at all: a bug to fix there, not the client's.
            log.error("model %s cannot be traced: %s", model, error)
            raise DreamfarmError(
                f"model {model} cannot be used on this server: its layers could not be traced ({error})",
                field="model",
            ) from None

    def _traces(self, model: str) -> bool:
        try:
            self._traced(model, None)
            return True
        except Exception:
            return False

    def _traced(self, model: str, size: int | None) -> Architecture:
        entry = self.registry.get(model)
        # A registered network's name can come back as another network: its revision tells them apart.
        key = (model, entry.revision, size or entry.input_size)
        found = self._cache.get(key)
        if found is None:
            found = self._cache.put(key, Architecture(entry, size or entry.input_size))
        return found


class _Traces:
    """The last `size` traced architectures (an LRU), shared by an
    `Architectures` and its views over other registries."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, int], Architecture] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int]) -> Architecture | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str, int], arch: Architecture) -> Architecture:
        with self._lock:
            self._items[key] = arch
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return arch
