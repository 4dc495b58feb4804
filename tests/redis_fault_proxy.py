"""A TCP proxy in front of a real Redis that can break chosen commands.

Every client (workers, the API) reaches Redis through the proxy. While a rule
matches a command a client sends, the proxy cuts that client's connection
instead of forwarding it, as a network failure or a Redis restart would: the
client sees a connection error for exactly the operations the test chose,
and everything else keeps working. Used to inject Redis blips at precise
points (a progress update, a publish) that stopping the server cannot hit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

Rule = Callable[[list[bytes]], bool]


def parse_command(buf: bytes) -> tuple[list[bytes], int] | None:
    """One RESP array of bulk strings from the start of `buf`: (args, bytes
    used), or None if `buf` does not hold a whole command yet."""
    if not buf.startswith(b"*"):
        end = buf.find(b"\r\n")  # an inline command
        return (buf[:end].split(), end + 2) if end >= 0 else None
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    count, pos, args = int(buf[1:end]), end + 2, []
    for _ in range(count):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(buf[pos + 1 : end])
        start = end + 2
        if len(buf) < start + size + 2:
            return None
        args.append(buf[start : start + size])
        pos = start + size + 2
    return args, pos


class RedisFaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.rules: list[Rule] = []
        self.cut = 0  # connections cut so far
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="redis-proxy").start()

    @property
    def url(self) -> str:
        return f"redis://{self.upstream[0]}:{self.port}/0"

    def fail(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def heal(self) -> None:
        with self._lock:
            self.rules.clear()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._client_to_server, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _matches(self, args: list[bytes]) -> bool:
        with self._lock:
            return any(rule(args) for rule in self.rules)

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                return self._drop(client, server)
            buf += data
            while (parsed := parse_command(buf)) is not None:
                args, used = parsed
                if self._matches(args):
                    self.cut += 1
                    return self._drop(client, server)
                try:
                    server.sendall(buf[:used])
                except OSError:
                    return self._drop(client, server)
                buf = buf[used:]

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
            with self._lock:
                self._sockets.discard(s)


def command(name: str, key_prefix: bytes = b"") -> Rule:
    """A rule: the command `name` (any case) on a key starting with `key_prefix`."""
    want = name.upper().encode()

    def rule(args: list[bytes]) -> bool:
        return (
            bool(args)
            and args[0].upper() == want
            and (not key_prefix or (len(args) > 1 and args[1].startswith(key_prefix)))
        )

    return rule
