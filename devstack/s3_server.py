"""What every local S3 server shares: its endpoint, its keys, a boto3 client
signed with them, and "answers a listing" as the readiness test."""

from __future__ import annotations

from typing import Any

from devstack.process import HOST, Server


class S3Server(Server):
    access_key: str
    secret_key: str

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, *, secret_key: str | None = None, max_attempts: int = 1) -> Any:
        """A boto3 S3 client signed with this server's (or another) secret."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key if secret_key is not None else self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=1,
                read_timeout=5,
            ),
        )

    def _answers(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True
