"""A whole dreamfarm on loopback, for people without Docker (and for tests):
Redis, SeaweedFS's S3 with access keys, N Celery worker processes and the API.

    with LocalStack(Path(".dreamfarm")) as stack:
        stack.api_url, stack.token …
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from types import TracebackType

import httpx
from pydantic import BaseModel, ConfigDict, Field

from devstack.child import Child
from devstack.moto_s3 import MotoS3
from devstack.process import HOST, free_port
from devstack.redis_server import RedisServer
from devstack.s3_server import S3Server
from devstack.seaweed import SeaweedS3
from service.contract import QUEUE


def worker_argv(name: str, loglevel: str = "info") -> list[str]:
    # solo pool: the worker process itself renders, so the network it loads
    # stays loaded, SIGTERM lets the running batch finish (warm shutdown), and
    # a SIGKILL leaves the batch unacked for another worker to take over.
    # Heartbeats stay on: Flower tells a live idle worker from a dead one by
    # them (without them it shows an idle worker offline ~2 min after its last
    # task). Gossip and mingle only matter between workers that talk to each
    # other, which ours never do.
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool", "solo",
            "--concurrency", "1", "-Q", QUEUE, "-n", name, "-l", loglevel,
            "--without-gossip", "--without-mingle"]  # fmt: skip


class WorkerState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    metrics_url: str | None


class StackState(BaseModel):
    """`.dreamfarm/stack.json`: everything a client of a running `dreamfarm up`
    needs (the API, the bucket with its keys, Redis, each worker's metrics).
    Written with mode 0600: it holds the token and the S3 secret."""

    model_config = ConfigDict(extra="ignore")

    api_url: str
    token: str
    redis_url: str
    s3_endpoint_url: str
    s3_region: str = "us-east-1"
    s3_bucket: str = "dreamfarm"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    workers: list[WorkerState] = Field(default_factory=list)
    logs: str | None = None
    pid: int


class LocalStack:
    def __init__(
        self, root: Path, *, workers: int = 1, api_port: int | None = None, token: str | None = None,
        extra_env: dict[str, str] | None = None, s3: str = "seaweed",
    ) -> None:  # fmt: skip
        """`s3`: "seaweed" (SeaweedFS with access keys, persistent) or "moto"
        (moto's in-memory server, a few MB of wheels: for machines without SeaweedFS)."""
        self.root = root.resolve()
        self.n_workers = workers
        self.api_port = api_port or free_port()
        # Hex: a urlsafe token may start with '-', which `--token T` would read as a flag.
        self.token = token or secrets.token_hex(24)
        self.extra_env = extra_env or {}
        self.redis = RedisServer(data_dir=self.root / "redis")
        self.s3: S3Server = MotoS3(data_dir=self.root / "s3") if s3 == "moto" else SeaweedS3(data_dir=self.root / "s3")
        self.workers: list[Child] = []
        self.api: Child | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DREAMFARM_REDIS_URL": self.redis.url,
            "DREAMFARM_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "DREAMFARM_S3_ACCESS_KEY_ID": self.s3.access_key,
            "DREAMFARM_S3_SECRET_ACCESS_KEY": self.s3.secret_key,
            "DREAMFARM_S3_BUCKET": "dreamfarm",
            "DREAMFARM_S3_REGION": "us-east-1",
            "DREAMFARM_API_TOKEN": self.token,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        })  # fmt: skip
        return env

    def start(self, timeout: float = 60) -> LocalStack:
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.s3.start(timeout=60)
        for i in range(self.n_workers):
            self.start_worker(i)
        self.start_api(timeout)
        self.write_state()
        return self

    def start_worker(self, i: int, env: dict[str, str] | None = None) -> Child:
        """Worker i, serving its metrics on a port of its own (`metrics_url(i)`),
        on loopback like every other server of the stack."""
        wenv = {"DREAMFARM_METRICS_PORT": str(free_port()), "DREAMFARM_METRICS_HOST": HOST, **self.env(),
                **(env or {})}  # fmt: skip
        port = int(wenv["DREAMFARM_METRICS_PORT"])
        # Ready once it serves its metrics (it has imported everything and
        # run worker_init), so that "up" means up, and on our port, not a stranger's.
        worker = Child(f"worker{i}", worker_argv(self.worker_name(i)), wenv, self.logs / f"worker{i}.log",
                       port=port, ready=lambda: _answers(f"http://{HOST}:{port}/metrics"))  # fmt: skip
        worker.metrics_port = port
        worker.start(timeout=120)
        if i < len(self.workers):
            self.workers[i] = worker
        else:
            self.workers.append(worker)
        if self.api is not None:  # started: stack.json names the new worker's metrics too
            self.write_state()
        return worker

    @staticmethod
    def worker_name(i: int) -> str:
        """Worker i's Celery node name (what Flower and `celery inspect` show)."""
        return f"worker{i}@{HOST}"

    def metrics_url(self, i: int) -> str:
        return f"http://{HOST}:{self.workers[i].metrics_port}/metrics"

    def start_api(self, timeout: float = 60) -> None:
        argv = [sys.executable, "-m", "cli.main", "api", "--host", HOST, "--port", str(self.api_port)]
        self.api = Child("api", argv, self.env(), self.logs / "api.log", port=self.api_port, ready=self._api_ready)
        self.api.start(timeout)

    def _api_ready(self) -> bool:
        return _answers(f"{self.api_url}/readyz")

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.stop(10)
            self.api = None

    def state(self) -> StackState:
        env = self.env()
        return StackState(
            api_url=self.api_url, token=self.token, redis_url=self.redis.url, s3_endpoint_url=self.s3.endpoint_url,
            s3_region=env["DREAMFARM_S3_REGION"], s3_bucket=env["DREAMFARM_S3_BUCKET"],
            s3_access_key_id=self.s3.access_key, s3_secret_access_key=self.s3.secret_key,
            workers=[WorkerState(name=self.worker_name(i), metrics_url=self.metrics_url(i) if w.metrics_port else None)
                     for i, w in enumerate(self.workers)],
            logs=str(self.logs), pid=os.getpid(),
        )  # fmt: skip

    def write_state(self) -> None:
        """stack.json, created 0600 and replaced whole (a reader never sees
        half of it; a file left by an older run never widens the mode)."""
        path = self.root / "stack.json"
        tmp = path.with_name(f".stack.json.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.state().model_dump_json(indent=1))
        os.replace(tmp, path)

    def describe(self) -> str:
        """What `dreamfarm up` prints: every address and key a client needs."""
        st = self.state()
        lines = [
            f"API      {st.api_url} (docs at {st.api_url}/docs)",
            f"  token  {st.token}",
            f"S3       {st.s3_endpoint_url}  bucket {st.s3_bucket}  region {st.s3_region}",
            f"  key    {st.s3_access_key_id}",
            f"  secret {st.s3_secret_access_key}",
            f"Redis    {st.redis_url}",
        ]
        lines += [f"metrics  {w.name}: {w.metrics_url}" for w in st.workers if w.metrics_url]
        return "\n".join(lines)

    def stop(self) -> None:
        self.stop_api()
        for w in self.workers:
            w.stop(30)
        self.workers = []
        self.s3.stop()
        self.redis.stop()
        (self.root / "stack.json").unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:  # fmt: skip
        self.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def read_state(root: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads((root / "stack.json").read_text()))
    except (OSError, ValueError):
        return None
