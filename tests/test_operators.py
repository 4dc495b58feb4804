"""What operators see of a local stack with the ecosystem's own tools
(issue 13, "Operators see the truth"): which addresses its servers listen
on, what `dreamfarm up` tells a client (stack.json, `dreamfarm env`), a
bucket browsable by job id and layer alias, and Celery's events as Flower
reads them. Everything is read from sockets, files, the bucket, Redis and
HTTP, never from log lines."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest
import redis
from celery import Celery
from celery.events.state import State

from cli import env_cmd
from devstack import LocalStack, MotoS3, free_port
from service import layout
from service.contract import RENDER_TASK
from service.gallery.export import entries
from service.storage import LocalStore
from tests.service_helpers import bucket_keys, client, s3_client, small_job, wait_for

REPO = Path(__file__).resolve().parents[1]
# Each step of a batch sleeps this long, so that a batch lasts long enough
# to be watched while it runs (see the Flower test).
STEP_SLEEP_S = 0.4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    env = {"DREAMFARM_CACHE": str(root / "cache"), "DREAMFARM_FAULT_STEP_SLEEP": str(STEP_SLEEP_S)}
    with LocalStack(root, workers=1, extra_env=env) as s:
        yield s


def _bound_sockets(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket and bound
    UDP socket held by these processes and all their descendants."""
    found = []
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                listening = conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN
                if listening or (conn.type == socket.SOCK_DGRAM and conn.laddr):
                    found.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    return found


def _run_env(*args: str) -> subprocess.CompletedProcess[str]:
    """`dreamfarm env` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cli.main", "env", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)  # fmt: skip


# --------------------------------------------------------------------------
# Sockets: every server binds the address it was told (loopback).


@pytest.mark.integration
def test_every_server_of_the_stack_listens_on_loopback_only(stack: LocalStack) -> None:
    assert stack.api is not None
    pids = [p for p in (stack.redis.pid, stack.s3.pid, stack.api.pid, *(w.pid for w in stack.workers)) if p]
    sockets = _bound_sockets(pids)
    ports = {port for _name, _ip, port in sockets}
    # The servers a client uses are among them (so the list is the real one) …
    assert {stack.api_port, stack.redis.port, stack.s3.port, stack.workers[0].metrics_port} <= ports
    # … and so is every port weed mini opens for its master, volume, filer, admin.
    assert set(stack.s3.ports.values()) <= ports  # type: ignore[attr-defined]
    wide = [s for s in sockets if not ipaddress.ip_address(s[1]).is_loopback]
    assert not wide, f"bound beyond loopback: {wide}"


@pytest.mark.integration
def test_moto_s3_listens_on_loopback_only(tmp_path: Path) -> None:
    with MotoS3(data_dir=tmp_path) as moto:
        assert moto.pid is not None
        sockets = _bound_sockets([moto.pid])
    assert moto.port in {port for _n, _ip, port in sockets}
    assert all(ipaddress.ip_address(ip).is_loopback for _n, ip, _p in sockets), sockets


def test_a_worker_told_nothing_serves_its_metrics_on_loopback() -> None:
    """`dreamfarm worker` by hand, no DREAMFARM_METRICS_HOST: what Celery's
    worker_init does in a worker process, then the process's own sockets."""
    probe = (
        "import psutil\n"
        "from workers.celery_app import _worker_init\n"
        "_worker_init()\n"
        "print(sorted({c.laddr.ip for c in psutil.Process().net_connections('tcp') if c.status == 'LISTEN'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMFARM_")}
    env.update(DREAMFARM_METRICS_PORT=str(free_port()), DREAMFARM_REDIS_URL="redis://127.0.0.1:1/0")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['127.0.0.1']"]


# --------------------------------------------------------------------------
# What `dreamfarm up` tells a client.


@pytest.mark.integration
def test_stack_json_is_private_and_names_everything_a_client_needs(stack: LocalStack) -> None:
    path = stack.root / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = json.loads(path.read_text())
    # The bucket, with the keys it was started with.
    s3 = boto3.client("s3", endpoint_url=state["s3_endpoint_url"], region_name=state["s3_region"],
                      aws_access_key_id=state["s3_access_key_id"],
                      aws_secret_access_key=state["s3_secret_access_key"])  # fmt: skip
    assert state["s3_bucket"] in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # Redis, the API with its token, and each worker's metrics.
    assert redis.Redis.from_url(state["redis_url"]).ping()
    models = httpx.get(f"{state['api_url']}/v1/models", headers={"Authorization": f"Bearer {state['token']}"})
    assert models.status_code == 200
    (worker,) = state["workers"]
    assert worker["name"] == "worker0@127.0.0.1"
    assert "dreamfarm_queue_length" in httpx.get(worker["metrics_url"], timeout=10).text


@pytest.mark.integration
def test_dreamfarm_env_gives_a_shell_the_bucket_redis_and_the_api(stack: LocalStack, tmp_path: Path) -> None:
    r = _run_env("--dir", str(stack.root))
    assert r.returncode == 0, r.stderr
    exports = tmp_path / "exports.sh"
    exports.write_text(r.stdout)
    # What a user runs: eval the exports, then tools that read only the
    # environment (boto3 as the AWS CLI does: AWS_ENDPOINT_URL, the keys, the region).
    probe = (
        "import os, boto3, httpx, redis\n"
        "s3 = boto3.client('s3')\n"
        "print(s3.list_objects_v2(Bucket=os.environ['DREAMFARM_S3_BUCKET'])['ResponseMetadata']['HTTPStatusCode'])\n"
        "print(redis.Redis.from_url(os.environ['DREAMFARM_REDIS_URL']).ping())\n"
        "h = {'Authorization': 'Bearer ' + os.environ['DREAMFARM_API_TOKEN']}\n"
        "print(httpx.get(os.environ['DREAMFARM_API_URL'] + '/v1/models', headers=h).status_code)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DREAMFARM_"))}
    clean["AWS_SESSION_TOKEN"] = "ambient-token-that-must-not-be-used"
    shell = f'eval "$(cat {exports})"; exec "{sys.executable}" -c "$0"'
    out = subprocess.run(["sh", "-c", shell, probe], capture_output=True, text=True, timeout=60, env=clean)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200", "True", "200"]


def test_env_exports_are_shell_quoted() -> None:
    tricky = {"A": 'it\'s $HOME `x` "q" \\ ; b', "B": "plain"}
    script = env_cmd.exports(tricky) + 'printf "%s\\n%s" "$A" "$B"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, env={"HOME": "/nowhere"})
    assert out.stdout == f"{tricky['A']}\n{tricky['B']}"


def test_env_refuses_a_stack_json_left_by_a_dead_stack(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = {"api_url": "http://127.0.0.1:1", "token": "t", "redis_url": "redis://127.0.0.1:1/0",
             "s3_endpoint_url": "http://127.0.0.1:2", "pid": gone.pid}  # fmt: skip
    (tmp_path / "stack.json").write_text(json.dumps(state))
    r = _run_env("--dir", str(tmp_path))
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert str(gone.pid) in r.stderr
    missing = _run_env("--dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stdout == ""


# --------------------------------------------------------------------------
# A bucket a person can browse.


@pytest.mark.integration
def test_a_job_is_browsable_by_its_id_and_by_the_layer_alias_it_asked_for(stack: LocalStack) -> None:
    with client(stack) as http:
        job = http.post("/v1/jobs", json=small_job([3, 4], layer="logits", steps=2)).json()
        status = wait_for(http, job["id"])
        items = http.get(f"/v1/jobs/{job['id']}/renders").json()["items"]
    s3 = s3_client(stack)

    def body(key: str) -> bytes:
        return bytes(s3.get_object(Bucket="dreamfarm", Key=key)["Body"].read())

    # The atlas under the job's own name, the same bytes as the content-addressed one.
    png, manifest = layout.atlas_keys(status["atlas_key"])
    assert body(f"jobs/{job['id']}/atlas.png") == body(png)
    assert body(f"jobs/{job['id']}/atlas.json") == body(manifest)
    assert json.loads(body(f"jobs/{job['id']}.json"))["atlas_key"] == status["atlas_key"]

    # `aws s3 ls …/efficientnet_lite0/logits/` finds the pointer to the module path …
    listing = s3.list_objects_v2(Bucket="dreamfarm", Prefix="renders/efficientnet_lite0/logits/", Delimiter="/")
    assert [o["Key"] for o in listing.get("Contents", [])] == ["renders/efficientnet_lite0/logits/index.json"]
    pointer = json.loads(body("renders/efficientnet_lite0/logits/index.json"))
    assert pointer["layer"] == "_fc" and pointer["renders"] == "renders/efficientnet_lite0/_fc/"
    assert "logits" in pointer["aliases"]
    # … under which the renders are, at their unchanged content-addressed keys.
    under = set(bucket_keys(stack, pointer["renders"]))
    for item in items:
        assert item["png"] == f"renders/efficientnet_lite0/_fc/{item['unit']}/{item['key']}.png"
        assert item["png"] in under and item["sidecar"] in under
    # Written by every batch of the layer, the pointer never changes.
    with client(stack) as http:
        wait_for(http, http.post("/v1/jobs", json=small_job([5], layer="_fc", steps=2)).json()["id"])
    assert json.loads(body("renders/efficientnet_lite0/logits/index.json")) == pointer


def test_cli_render_files_the_alias_pointer_and_the_gallery_skips_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "cli.main", "render", "--model", "efficientnet_lite0", "--layer", "block6",
         "--units", "0-1", "--steps", "2", "--size", "64", "--device", "cpu", "--precision", "float32",
         "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pointer = json.loads((out / "renders/efficientnet_lite0/block6/index.json").read_text())
    assert pointer["alias"] == "block6" and (out / pointer["renders"]).is_dir()
    assert len(list((out / pointer["renders"]).glob("*/*.png"))) == 2
    # The gallery's index is built from sidecars only: two renders, no pointer.
    found = list(entries(LocalStore(out)))
    assert len(found) == 2


def test_alias_pointers_are_the_same_bytes_whoever_writes_them() -> None:
    a = layout.alias_index("m", "_fc", "logits", ("logits", "fc1"))
    assert a == layout.alias_index("m", "_fc", "logits", ["logits", "fc1"])
    assert layout.is_alias_index(layout.alias_index_key("m", "logits"))
    assert not layout.is_alias_index("renders/m/_fc/3/" + "a" * 64 + ".json")


# --------------------------------------------------------------------------
# Flower's view: Celery's events, read with Celery's own State (what Flower uses).


class EventLog:
    """Celery events on the stack's broker, fed into celery.events.state.State."""

    def __init__(self, broker: str) -> None:
        self.app = Celery(broker=broker, set_as_current=False)
        self.state = State()
        self.types: list[tuple[str, str | None]] = []
        self._seen = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _on(self, event: dict[str, Any]) -> None:
        self.state.event(event)
        self.types.append((event["type"], event.get("uuid")))
        self._seen.set()

    def _listen(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def alive(self) -> set[str]:
        return {w.hostname for w in self.state.alive_workers()}

    def __enter__(self) -> EventLog:
        self._thread.start()
        # Subscribed once the first event (a heartbeat, every 2 s) arrives.
        assert self._seen.wait(15), "no Celery event on the broker: are heartbeats off?"
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)


@pytest.mark.integration
def test_flower_sees_a_batch_from_sent_to_succeeded_and_the_busy_worker_alive(stack: LocalStack) -> None:
    worker = LocalStack.worker_name(0)
    with EventLog(stack.redis.url) as log, client(stack) as http:
        time.sleep(2.5)  # another heartbeat: the worker is known, and alive before the batch
        assert worker in log.alive()
        job = http.post("/v1/jobs", json=small_job([20, 21], steps=20)).json()
        samples: list[tuple[str, bool]] = []  # (task state, worker alive), twice a second
        task = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (task is None or task.state != "SUCCESS"):
            time.sleep(0.5)
            task = next((t for t in list(log.state.tasks.values()) if t.name == RENDER_TASK), None)
            if task is not None:
                samples.append((task.state, worker in log.alive()))
        wait_for(http, job["id"])
        time.sleep(5)  # idle after the job: still alive, by its heartbeats alone
        alive_after = worker in log.alive()
    assert task is not None and task.state == "SUCCESS" and task.worker.hostname == worker
    kinds = [kind for kind, uuid in log.types if uuid == task.uuid]
    assert kinds == ["task-sent", "task-received", "task-started", "task-succeeded"], kinds
    # The batch lasted a few heartbeat windows (20 steps × 0.4 s), was seen
    # STARTED while it ran, and the worker alive at every look meanwhile.
    running = [alive for state, alive in samples if state == "STARTED"]
    assert len(running) >= 8 and all(running), samples
    assert alive_after
