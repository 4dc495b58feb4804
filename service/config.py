"""Settings from the environment (prefix DREAMFARM_), one object per process.

Every setting is documented in the README's configuration table; secrets are
`SecretStr` so they never show up in a repr or a log line.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Tenant names end up in Redis keys and log lines: keep them plain.
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_TENANT = "default"


class Settings(BaseSettings):
    # hide_input_in_errors: a bad setting's error must not echo the tokens.
    model_config = SettingsConfigDict(env_prefix="DREAMFARM_", extra="ignore", hide_input_in_errors=True)

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
    # The endpoint presigned result URLs name, when clients reach the bucket
    # by another address than the API and workers do (default: the same).
    s3_public_endpoint_url: str | None = None
    presign_expires_s: int = Field(3600, ge=1, le=7 * 24 * 3600)

    # Storage retries (uploads in workers): capped exponential backoff.
    storage_retries: int = Field(6, ge=0, le=50)
    storage_backoff_s: float = Field(0.5, gt=0)
    storage_backoff_cap_s: float = Field(20.0, gt=0)

    # API. Bearer tokens: `api_token` is tenant "default"'s; `api_tokens` maps
    # more tenants to their tokens (env: a JSON object). With no token at all
    # the API accepts no writes. Each tenant sees only its own jobs.
    api_token: SecretStr | None = None
    api_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    protect_reads: bool = False
    max_units_per_job: int = Field(5000, ge=1)
    max_steps: int = Field(5000, ge=1)
    max_size: int = Field(512, ge=16)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Uploaded images (POST /v1/images) that renders start from.
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Registered networks' weights (PUT /v1/models/{name}/weights), streamed to a temporary file.
    max_weights_bytes: int = Field(2 * 1024**3, ge=1024)
    # Jobs one tenant may have queued or running at once (429 beyond).
    max_jobs_in_flight: int = Field(100, ge=1)

    # Workers.
    batch_size: int | None = Field(None, ge=1, le=1024)
    device: str | None = None
    torch_home: str | None = None
    weights_dir: str | None = None
    # Checkpoints not found locally are fetched from here (s3://bucket/prefix,
    # on the configured endpoint) into weights_cache_dir, sha256-checked.
    weights_url: str | None = None
    weights_cache_dir: str | None = None
    # A running batch's lease: its worker renews it every lease_renew_s; a
    # batch whose lease is older than lease_timeout_s (its worker died) goes
    # back to the queue. Batches may run far longer than this while renewed.
    lease_timeout_s: int = Field(45, ge=5)
    lease_renew_s: float = Field(10.0, gt=0)
    # Networks that also classify every render (one extra forward per image),
    # e.g. ["efficientnet_lite2"]: their top-5 goes in the sidecar and the
    # job counts how many renders each recognizes (env: a JSON list).
    judges: list[str] = Field(default_factory=list)
    # On a GPU, measure the fastest batch size once per model, layer, size and
    # device (kept in the bucket for every worker); else the device default.
    autotune: bool = True
    # The step's forward through torch.compile (CUDA graphs on a GPU) where the
    # target is the network's output; off until measured on the card (issue 9).
    compile: bool = False
    # A worker process serves its Prometheus metrics on this port (none if unset),
    # on this address: loopback unless told otherwise, because the metrics name
    # models and job sizes; compose and Kubernetes set 0.0.0.0 for Prometheus.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = Field("127.0.0.1", min_length=1)

    # Log lines: "text", or "json" (one object a line, with job_id and batch_id).
    log_format: Literal["text", "json"] = "text"

    @field_validator("api_tokens")
    @classmethod
    def _tenant_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in v.items():
            if not TENANT_NAME.fullmatch(name):
                raise ValueError(f"tenant name {name[:70]!r} must be 1-64 of A-Z a-z 0-9 _ -")
            if not token.get_secret_value().strip():
                raise ValueError(f"tenant {name!r} has an empty token")
        return v

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Settings:
        table = self.tenant_tokens()
        if self.api_token is not None and DEFAULT_TENANT in self.api_tokens:
            raise ValueError(f"tenant {DEFAULT_TENANT!r} is given both by api_token and by api_tokens")
        if self.api_token is not None and not self.api_token.get_secret_value().strip():
            raise ValueError("api_token is empty")
        tokens = [t.get_secret_value() for t in table.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two tenants share one token: each tenant needs its own")
        return self

    def tenant_tokens(self) -> dict[str, SecretStr]:
        """Every tenant and its token: `api_tokens` plus `api_token` as "default"."""
        table = dict(self.api_tokens)
        if self.api_token is not None:
            table.setdefault(DEFAULT_TENANT, self.api_token)
        return table
