"""A long-running program of ours as a child process (a worker, the API)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devstack.process import Server


class Child(Server):
    """A long-running program of ours (a worker, the API) with the same
    process-group handling as the servers; ready when `ready()` says so."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, *, port: int = 0,
        ready: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(log_path.parent)
        self.name = name
        self.port = port
        self.argv, self.env, self.log_path = argv, env, log_path
        self.ready = ready
        self.metrics_port: int | None = None

    def _argv(self) -> list[str]:
        return self.argv

    def _env(self) -> dict[str, str]:
        return self.env

    def _log_path(self) -> Path:
        return self.log_path

    def _cwd(self) -> Path | None:
        return None  # the caller's: the project's modules must import

    def _ready(self) -> bool:
        return self.ready() if self.ready is not None else True
