"""Errors a user can cause and fix. Each message is one line that says what is
wrong and what would be right, so the CLI and the API can show it as is."""

from __future__ import annotations


class DreamfarmError(Exception):
    """Base of every error meant for the user (CLI exit 2, API 4xx)."""

    #: which request field the error is about, for API responses
    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        if field is not None:
            self.field = field


class UnknownModel(DreamfarmError):
    field = "model"


class UnknownLayer(DreamfarmError):
    field = "layer"


class BadUnit(DreamfarmError):
    field = "units"


class BadRequest(DreamfarmError):
    """A request whose fields do not fit together (HTTP 422, naming the field)."""


class BadPrior(DreamfarmError):
    field = "prior"


class WeightsError(DreamfarmError):
    """Weights missing, unreadable, or not the expected file."""

    field = "model"


class StorageError(DreamfarmError):
    """A storage back end failed (may be transient)."""


class ObjectMissing(StorageError):
    """The object asked for is not in the store (not transient: never retried)."""


def one_line(text: str, limit: int = 600) -> str:
    """Collapse a message to one printable line: user input ends up in
    messages, and must not forge extra log lines or flood a terminal."""
    flat = " ".join(str(text).split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class QuotaExceeded(DreamfarmError):
    """A tenant has as many jobs in flight as it may (HTTP 429)."""


class NotFound(DreamfarmError):
    """No such job, or not this tenant's (HTTP 404: a tenant cannot tell)."""


class Conflict(DreamfarmError):
    """The request does not fit the job's state (HTTP 409)."""


class OverLimit(DreamfarmError):
    """A request over one of this server's limits (HTTP 422, naming the field)."""


class BadRegistration(DreamfarmError):
    """A registered network that cannot be built as asked (HTTP 422, naming the field)."""

    field = "arch"


class BadWeights(DreamfarmError):
    """An uploaded weights file that is no tensor archive, or does not fit its network (HTTP 422)."""

    field = "weights"


class NameTaken(Conflict):
    """A name a built-in or another registered network has (HTTP 409)."""

    field = "name"


class Forbidden(DreamfarmError):
    """Another tenant's public object: visible, not changeable (HTTP 403)."""


class PayloadTooLarge(DreamfarmError):
    """An upload over this server's limit (HTTP 413)."""


class BadChecksum(DreamfarmError):
    """An upload whose bytes are not the ones the client announced: truncated or corrupted (HTTP 400)."""
