"""Architectures by (model, size), traced once and kept: what the API and the
planner validate against, without any weights."""

from __future__ import annotations

import logging
from functools import lru_cache

from service.errors import DreamfarmError, one_line
from service.zoo import Architecture, Registry

log = logging.getLogger("dreamfarm.zoo")


class Architectures:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()

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

    @lru_cache(maxsize=64)  # noqa: B019 - lives as long as its owner, on purpose
    def _traced(self, model: str, size: int | None) -> Architecture:
        entry = self.registry.get(model)
        return Architecture(entry, size or entry.input_size)
