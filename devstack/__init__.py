"""Running dreamfarm locally: real Redis and S3 servers as child processes,
and a whole stack (servers, workers, API) on loopback. A developer tool used
by `dreamfarm up` / `demo`, the tests and the benchmarks; not part of the core."""

from devstack.child import Child
from devstack.moto_s3 import MotoS3
from devstack.process import LocalStackError, free_port
from devstack.redis_server import RedisServer
from devstack.seaweed import SeaweedS3
from devstack.stack import LocalStack, StackState, WorkerState, read_state, worker_argv

__all__ = [
           "Child",
           "LocalStack",
           "LocalStackError",
           "MotoS3",
           "RedisServer",
           "SeaweedS3",
           "StackState",
           "WorkerState",
           "free_port",
           "read_state",
           "worker_argv",
]  # fmt: skip
