"""ASGI middleware: the request body size limit."""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class BodyLimit:
    """Refuse a request body over `limit` bytes (`per_path`: other limits for
    some paths) with 413, whether the client says its length (Content-Length)
    or streams it (chunked), reading at most the limit plus one chunk. The body
    read is handed on to the app as one message.

    `streamed`: paths (regular expressions, matched whole) whose route reads
    the body itself as it arrives (a weights upload, gigabytes): only a
    declared Content-Length over their limit is refused here, and the route
    enforces the limit on what it reads."""

    def __init__(
        self, app: ASGIApp, limit: int, per_path: dict[str, int] | None = None,
        streamed: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.default = limit
        self.per_path = per_path or {}
        self.streamed = [(re.compile(p), n) for p, n in (streamed or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One instance serves every request: the limit is this request's.
        path = scope.get("path", "")
        for pattern, most in self.streamed:
            if pattern.fullmatch(path):
                await _Declared(self.app, most)(scope, receive, send)
                return
        limit = self.per_path.get(path, self.default)
        await _Limited(self.app, limit)(scope, receive, send)


class _Limited:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = Headers(scope=scope).get("content-length")
        if length is not None and not length.strip().isdigit():
            await error_response(400, "malformed Content-Length header")(scope, receive, send)
            return
        if length is not None and int(length) > self.limit:
            await self._too_large(str(int(length)))(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._too_large(f"over {self.limit}")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        return b"".join(chunks)

    def _too_large(self, size: str) -> ASGIApp:
        return error_response(413, f"request body too large: {size} bytes, the limit is {self.limit} bytes",
                              headers={"Connection": "close"})  # fmt: skip


class _Declared(_Limited):
    """A streamed route's limit on the length the client declares; the body
    is passed on as it comes (the route counts what it reads)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = Headers(scope=scope).get("content-length")
        if length is not None and not length.strip().isdigit():
            await error_response(400, "malformed Content-Length header")(scope, receive, send)
            return
        if length is not None and int(length) > self.limit:
            await self._too_large(str(int(length)))(scope, receive, send)
            return
        await self.app(scope, receive, send)
