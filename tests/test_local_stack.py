"""Real Redis and SeaweedFS processes: start, stop, crash, restart."""

# Fixtures are imported by name, so pytest's parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import redis
from botocore.exceptions import ClientError

from devstack import LocalStackError, RedisServer, SeaweedS3, free_port
from devstack.redis_server import find_redis_server
from devstack.seaweed import find_weed
from tests.stack_fixtures import redis_server, s3_store, seaweed  # noqa: F401

pytestmark = pytest.mark.integration


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it no longer runs
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_binaries_found() -> None:
    for path in (find_redis_server(), find_weed()):
        assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_redis_fixture_answers(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("save")["save"] == ""
    client.close()


def test_redis_restart_keeps_data(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "redis")
    with server:
        client = redis.Redis.from_url(server.url)
        client.set("job:1", "done")
        client.close()
        pid = server.pid
        assert pid is not None
    # graceful stop: the process and its group are gone, the port is free
    assert gone(pid)
    assert refuses(server.port)
    assert (tmp_path / "redis" / "redis.log").exists()

    server.start()  # same data dir, same port
    try:
        client = redis.Redis.from_url(server.url)
        assert client.get("job:1") == b"done"
        # a crash loses at most the last second (appendfsync everysec)
        client.set("job:2", "done")
        time.sleep(1.5)
        client.close()
        server.kill()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.mget("job:1", "job:2") == [b"done", b"done"]
        client.close()
    finally:
        server.stop()


def test_redis_start_failure_is_reported(tmp_path: Path, redis_server: RedisServer) -> None:
    clash = RedisServer(redis_server.port, data_dir=tmp_path / "clash")  # port already taken
    with pytest.raises(LocalStackError, match="redis exited"):
        clash.start(timeout=5)
    assert not clash.running


def test_seaweed_fixture(seaweed: SeaweedS3) -> None:
    assert seaweed.endpoint_url == f"http://127.0.0.1:{seaweed.port}"
    assert seaweed.access_key and seaweed.secret_key
    assert seaweed.client().list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_seaweed_parallel_instances_and_restart(tmp_path: Path, seaweed: SeaweedS3) -> None:
    other = SeaweedS3(data_dir=tmp_path / "weed", access_key="other", secret_key="other-secret")
    ours = set(other.ports.values())
    theirs = set(seaweed.ports.values())
    assert len(ours) == 10 and not ours & theirs
    with other:
        client = other.client()
        client.create_bucket(Bucket="persist")
        client.put_object(Bucket="persist", Key="k.txt", Body=b"kept")
        # each instance only knows its own identity
        foreign = boto3.session.Session().client(
            "s3",
            endpoint_url=other.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=seaweed.access_key,
            aws_secret_access_key=seaweed.secret_key,
        )
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            foreign.list_buckets()
        pid = other.pid
        assert pid is not None
    assert gone(pid)
    assert refuses(other.port)
    assert seaweed.client().list_buckets()  # the session instance is untouched

    with other:  # same data dir, same port
        assert other.client().get_object(Bucket="persist", Key="k.txt")["Body"].read() == b"kept"
    assert not list(Path("/tmp").glob(f"seaweedfs-*-grpc-{other.ports['master.port.grpc']}.sock"))


def test_servers_die_with_the_interpreter(tmp_path: Path) -> None:
    """A forgotten stop() (a crashed test run) must not leave servers behind."""
    script = (
        "import sys\n"
        "from devstack import RedisServer\n"
        f"srv = RedisServer(data_dir={str(tmp_path / 'r')!r}).start()\n"
        "print(srv.pid, srv.port, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    pid, port = map(int, out.stdout.split())
    assert gone(pid)
    assert refuses(port)
