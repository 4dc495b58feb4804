"""Settings from the environment (prefix DREAMFARM_), one object per process.

Every setting is documented in the README's configuration table; secrets are
`SecretStr` so they never show up in a repr or a log line.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DREAMFARM_", extra="ignore")

    # Redis: Celery broker and job records.
    redis_url: str = "redis://127.0.0.1:6379/0"

    # S3-compatible bucket.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_bucket: str = "dreamfarm"
    s3_path_style: bool = True
    s3_create_bucket: bool = True
    presign_expires_s: int = Field(3600, ge=1, le=7 * 24 * 3600)

    # Storage retries (uploads in workers): capped exponential backoff.
    storage_retries: int = Field(6, ge=0, le=50)
    storage_backoff_s: float = Field(0.5, gt=0)
    storage_backoff_cap_s: float = Field(20.0, gt=0)

    # API.
    api_token: SecretStr | None = None
    protect_reads: bool = False
    max_units_per_job: int = Field(5000, ge=1)
    max_steps: int = Field(5000, ge=1)
    max_size: int = Field(512, ge=16)
    max_body_bytes: int = Field(64 * 1024, ge=1024)

    # Workers.
    batch_size: int | None = Field(None, ge=1, le=1024)
    device: str | None = None
    torch_home: str | None = None
    weights_dir: str | None = None
    # A running batch's lease: its worker renews it every lease_renew_s; a
    # batch whose lease is older than lease_timeout_s (its worker died) goes
    # back to the queue. Batches may run far longer than this while renewed.
    lease_timeout_s: int = Field(45, ge=5)
    lease_renew_s: float = Field(10.0, gt=0)
