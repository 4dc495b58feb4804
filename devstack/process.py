"""Servers as child processes for the local stack and the tests: each binds
127.0.0.1 only, on ports we choose (so parallel instances do not collide),
runs in its own process group (so stopping it cannot leave grandchildren
behind) and is killed at interpreter exit if still running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

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


def free_ports(n: int) -> list[int]:
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


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# Every server still running, so that an interpreter exit (a failed test run,
# Ctrl+C in `dreamfarm up`) does not leave orphans holding ports.
_live: set[Server] = set()
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
    (or on every address, if it was told so; None where /proc cannot tell).
    Another server already on the port would otherwise answer our readiness
    probe while ours fails to bind."""
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
    want = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    for line in lines:
        fields = line.split()
        # local_address, state 0A = LISTEN, inode
        if fields[1] in want and fields[3] == "0A" and fields[9] in inodes:
            return True
    return False


def _tail(path: Path, n: int = 2000) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return one_line(data.decode("utf-8", "replace"), limit=n)


class Server:
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

    def _cwd(self) -> Path | None:
        return self.data_dir

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
                cwd=self._cwd(),
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
                if self._ready() and (not self.port or _listens(self._proc.pid, self.port) is not False):
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

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the whole process group (SIGTERM: a warm shutdown)."""
        if self._proc is not None and not self._exited():
            self._signal_group(sig)

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its exit code (None if still running)."""
        if self._proc is None or not self._wait_exit(timeout):
            return None
        self._finish()
        return self._proc.returncode

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
