"""moto's S3 server (pure Python, a few MB of wheels) as a child process:
the S3 endpoint of a local stack where SeaweedFS's 150 MB binary cannot go,
such as a borrowed GPU machine that gets only the project's wheels.

moto keeps objects in memory and does not check signatures: fine for a
benchmark, not for data that must last or be guarded (use SeaweedFS there)."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any, Self

from devstack.process import HOST, Server, free_port


class MotoS3(Server):
    name = "moto"

    def __init__(self, port: int | None = None, *, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(data_dir)
        self.port = port if port is not None else free_port()
        self.access_key = "dreamfarm"
        self.secret_key = secrets.token_urlsafe(24)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def _ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, connect_timeout=1,
                          read_timeout=5),
        )  # fmt: skip

    def start(self, timeout: float = 30) -> Self:
        return super().start(timeout)

    @property
    def log_dir(self) -> Path:
        return self.data_dir
