"""moto's S3 server (pure Python, a few MB of wheels) as a child process:
the S3 endpoint of a local stack where SeaweedFS's 150 MB binary cannot go,
such as a borrowed GPU machine that gets only the project's wheels.

moto keeps objects in memory and does not check signatures: fine for a
benchmark, not for data that must last or be guarded (use SeaweedFS there)."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Self

from devstack.process import HOST, free_port
from devstack.s3_server import S3Server


class MotoS3(S3Server):
    name = "moto"

    def __init__(self, port: int | None = None, *, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(data_dir)
        self.port = port if port is not None else free_port()
        self.access_key = "dreamfarm"
        self.secret_key = secrets.token_urlsafe(24)

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def _ready(self) -> bool:
        return self._answers()

    def start(self, timeout: float = 30) -> Self:
        return super().start(timeout)
