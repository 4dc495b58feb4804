"""docker-compose.yml, the Dockerfile and docs/deploy.md, checked offline.

Two layers:

- The file is fed to a real Compose implementation, `docker-compose config`
  (1.29, Debian's `docker-compose` package) and/or `docker compose config`
  (the v2 plugin), whichever exist. They check the schema, the interpolation,
  the YAML anchors and merges, and cross-references (named volumes, depends_on).
  With neither installed the checks fail (`make test` installs Debian's
  docker-compose first), so no run can go green without validating the file.
- The properties the deployment relies on are asserted on the parsed YAML
  (PyYAML): Redis persistence, the GPU reservation, published ports, one shared
  image, no secrets, the volumes.

No Docker daemon is needed; nothing is built or started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

# Placeholders the compose file may carry for secrets: ${VAR:-change-me}.
PLACEHOLDER = "change-me"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|ACCESS_KEY|PRIVATE|CREDENTIAL|BASIC_AUTH", re.IGNORECASE)
# ${VAR}, ${VAR:-default} / ${VAR-default}, or ${VAR:?message} / ${VAR?message} (required).
SUBSTITUTION = re.compile(
    r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?:(?::?-(?P<default>[^}]*))|(?::?\?(?P<required>[^}]*)))?\}"
)
# What the checks that run a Compose implementation set: the file refuses to
# start Flower without a sign-in.
REQUIRED_ENV = {"FLOWER_BASIC_AUTH": "ops:flower-pw"}


def _placeholder_or_required(m: re.Match[str] | None) -> bool:
    """A secret is either ${VAR:-change-me} or ${VAR:?why} (nothing runs without it)."""
    return m is not None and (m.group("default") == PLACEHOLDER or m.group("required") is not None)


def _unavailable(what: str) -> NoReturn:
    """A failure, never a skip: `make test` installs what these checks need
    (scripts/system-packages.sh), so a missing tool means a broken set-up."""
    pytest.fail(f"{what}; `make test` installs it (scripts/system-packages.sh)")


@pytest.fixture(scope="module")
def yaml() -> Any:
    try:
        import yaml as pyyaml
    except ImportError:
        _unavailable("PyYAML is not installed (pip install pyyaml)")
    return pyyaml


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(yaml: Any, compose_text: str) -> dict[str, Any]:
    # safe_load resolves the x-… anchors and `<<` merge keys, as Compose does.
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices", []) if d.get("driver") == "nvidia"]


def _runs_dreamfarm(service: dict[str, Any]) -> bool:
    command = service.get("command") or []
    return (command if isinstance(command, list) else command.split())[:1] == ["dreamfarm"]


# --------------------------------------------------------------------------
# Properties, from the parsed YAML.


def test_services_and_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    # `version:` is obsolete in Compose v2 (it warns) and 1.29 does not need it.
    assert "version" not in compose
    assert set(compose["services"]) == {"redis", "s3", "api", "worker", "prometheus", "flower"}


def test_redis_persists_the_queue(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7(\.[\d.]+)?(-\w+)?", redis["image"])
    command = redis["command"]
    args = command if isinstance(command, list) else command.split()
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] in ("everysec", "always")
    # Evicting keys would silently drop queued batches.
    if "--maxmemory-policy" in args:
        assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(str(v).split(":")[:2] == ["redis-data", "/data"] for v in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert "ports" not in redis, "Redis has no password here: it must not be published"


def test_s3_has_auth_bucket_and_data_volume(services: dict[str, dict[str, Any]]) -> None:
    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:"), "pin a SeaweedFS release, not :latest"
    assert not s3["image"].endswith(":latest")
    args = s3["command"]
    assert args[0] == "mini" and "-dir=/data" in args
    assert "-bucket=${DREAMFARM_S3_BUCKET:-dreamfarm}" in args
    # weed mini turns these into its admin identity: without them it serves anyone.
    env = _env(s3)
    assert env["AWS_ACCESS_KEY_ID"] == "${DREAMFARM_S3_ACCESS_KEY_ID:-change-me}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${DREAMFARM_S3_SECRET_ACCESS_KEY:-change-me}"
    assert any(str(v).split(":")[:2] == ["s3-data", "/data"] for v in s3["volumes"])
    assert "healthcheck" in s3
    for port in s3.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), "S3 is published on the host's loopback only"


def test_api_publishes_8000_with_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["command"] == ["dreamfarm", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(p).rsplit(":", 2)[-2:] == ["8000", "8000"] for p in api["ports"])
    check = " ".join(api["healthcheck"]["test"])
    assert "python" in check and "/healthz" in check and "curl" not in check
    for dep in ("redis", "s3"):
        assert api["depends_on"][dep]["condition"] == "service_healthy"


def test_flower_asks_for_a_sign_in_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    m = SUBSTITUTION.fullmatch(_env(flower)["FLOWER_BASIC_AUTH"])
    assert m and m.group("var") == "FLOWER_BASIC_AUTH" and m.group("required"), "Flower must not run without one"
    assert not any("basic" in str(arg) for arg in flower["command"]), "the password stays off the command line"
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_worker_metrics_reach_prometheus_across_the_network(services: dict[str, dict[str, Any]]) -> None:
    # The setting's default is loopback; inside a container Prometheus (another
    # container) must reach the port, which is not published on the host.
    env = _env(services["worker"])
    assert env["DREAMFARM_METRICS_HOST"] == "0.0.0.0" and env["DREAMFARM_METRICS_PORT"] == "9101"
    assert "ports" not in services["worker"]


def test_worker_reserves_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["dreamfarm", "worker"]
    devices = _gpu_devices(worker)
    assert len(devices) == 1
    assert devices[0]["count"] in (1, "all") and "gpu" in devices[0]["capabilities"]
    assert "/weights" in _worker_weights_mount(worker)
    for dep in ("redis", "s3"):
        assert worker["depends_on"][dep]["condition"] == "service_healthy"


def _worker_weights_mount(worker: dict[str, Any]) -> str:
    mounts = [str(v) for v in worker["volumes"] if ":/weights" in str(v)]
    assert len(mounts) == 1, worker["volumes"]
    source, target, mode = mounts[0].rsplit(":", 2)
    assert source == "${DREAMFARM_WEIGHTS_VOLUME:-weights}"
    assert mode == "ro", "workers read weights, never write or download them"
    return target


def test_worker_has_time_to_finish_a_batch(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(worker["stop_grace_period"]))
    assert match and match.group(0)
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    assert seconds >= 5 * 60
    assert worker.get("init") is True, "a Python PID 1 ignores SIGTERM unless it installs a handler"


def test_api_and_worker_share_one_image_and_env(services: dict[str, dict[str, Any]]) -> None:
    ours = {name: s for name, s in services.items() if _runs_dreamfarm(s)}
    assert set(ours) == {"api", "worker"}
    images = {s["image"] for s in ours.values()}
    builds = {repr(s["build"]) for s in ours.values()}
    assert len(images) == 1 and len(builds) == 1
    assert next(iter(ours.values()))["build"] in (".", {"context": "."})
    # The others run upstream images and build nothing.
    assert all("build" not in s for name, s in services.items() if name not in ours)
    envs = [_env(s) for s in ours.values()]
    assert envs[0] == envs[1], "api and worker take their settings from one x-dreamfarm-env block"
    env = envs[0]
    assert env["DREAMFARM_REDIS_URL"].startswith("redis://redis:6379/")
    assert env["DREAMFARM_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert env["DREAMFARM_TORCH_HOME"] == env["TORCH_HOME"] == env["DREAMFARM_WEIGHTS_DIR"] == "/weights"


def test_named_volumes_exist(compose: dict[str, Any]) -> None:
    assert {"redis-data", "s3-data", "weights"} <= set(compose["volumes"])


def test_no_secret_literals(compose: dict[str, Any], compose_text: str) -> None:
    """Every secret is ${VAR:-change-me}: set from the environment, with the
    documented placeholder as the only literal."""
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                assert _placeholder_or_required(SUBSTITUTION.fullmatch(value)), f"{name}: {key}={value!r}"
        command = service.get("command") or []
        for arg in command if isinstance(command, list) else command.split():
            assert not re.search(r"pass|secret|token|(^|-)key\b", str(arg), re.IGNORECASE), f"{name}: {arg!r}"
    # And no secret-looking variable anywhere (anchors included) defaults to
    # anything else.
    for m in SUBSTITUTION.finditer(compose_text):
        if SECRET_NAME.search(m.group("var")):
            assert _placeholder_or_required(m), m.group(0)
    # The placeholder appears in values only as such a default.
    for value in _scalars(compose):
        if PLACEHOLDER in value:
            m = SUBSTITUTION.fullmatch(value)
            assert m and m.group("default") == PLACEHOLDER, value


def _scalars(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *_scalars(v))]
    if isinstance(node, list):
        return [s for v in node for s in _scalars(v)]
    return [str(node)]


def test_docs_name_every_variable(compose_text: str) -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for var in sorted({m.group("var") for m in SUBSTITUTION.finditer(compose_text)}):
        assert f"`{var}`" in doc, f"docs/deploy.md does not document {var}"


# --------------------------------------------------------------------------
# The variants docs/deploy.md tells operators to make, and validation of all of
# them by real Compose implementations.


def _per_gpu_snippet() -> str:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- test_compose: per-gpu-workers[^>]*-->\s*```yaml\n(.*?)```", doc, re.DOTALL)
    assert m, "docs/deploy.md lost its marked per-GPU workers snippet"
    return m.group(1)


def _replace_worker(text: str, replacement: str) -> str:
    """docker-compose.yml with its `worker:` service swapped for `replacement`
    (as an operator would edit it: the block runs to the next line indented
    two spaces or less)."""
    m = re.search(r"^  worker:\n(?:(?:    .*|\s*)\n)*", text, re.MULTILINE)
    assert m, "no `  worker:` service block in docker-compose.yml"
    return text[: m.start()] + replacement + text[m.end() :]


VARIANTS: dict[str, Callable[[str], str]] = {
    "as-shipped": lambda text: text,
    "all-gpus": lambda text: text.replace("count: 1\n", "count: all\n", 1),
    "per-gpu-services": lambda text: _replace_worker(text, _per_gpu_snippet() + "\n"),
}


def test_per_gpu_variant_structure(yaml: Any, compose_text: str) -> None:
    data = yaml.safe_load(VARIANTS["per-gpu-services"](compose_text))
    services = data["services"]
    assert "worker" not in services
    assert set(data["volumes"]) == {"redis-data", "s3-data", "weights", "prometheus-data"}
    for i in (0, 1):
        worker = services[f"worker-gpu{i}"]
        assert worker["command"] == ["dreamfarm", "worker"]
        assert _worker_weights_mount(worker) == "/weights"
        (device,) = _gpu_devices(worker)
        assert device["device_ids"] == [str(i)] and "count" not in device


def test_all_gpus_variant_structure(yaml: Any, compose_text: str) -> None:
    data = yaml.safe_load(VARIANTS["all-gpus"](compose_text))
    assert _gpu_devices(data["services"]["worker"])[0]["count"] == "all"


def _validators() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    v1 = shutil.which("docker-compose")
    if v1:
        found["docker-compose"] = [v1]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            found["docker compose"] = [docker, "compose"]
    return found


@pytest.fixture(scope="module")
def validators() -> dict[str, list[str]]:
    found = _validators()
    if not found:
        _unavailable(
            "no Compose implementation to validate docker-compose.yml with: "
            "`apt-get install -y --no-install-recommends docker-compose` (or the docker compose v2 plugin)"
        )
    return found


def _config(cli: list[str], compose_file: Path, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """`<cli> config` on compose_file, resolving relative paths against the
    repository, with a clean environment: no developer `.env`, no DREAMFARM_*
    from the shell, so the file's own defaults are what gets checked (plus
    the variables it requires, REQUIRED_ENV, unless `env` says otherwise)."""
    proc = _run_config(cli, compose_file, tmp_path, {**REQUIRED_ENV, **(env or {})})
    assert proc.returncode == 0, f"{' '.join(cli)} rejects {compose_file.name}:\n{proc.stderr}"
    return proc.stdout


def _run_config(
    cli: list[str], compose_file: Path, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    args = [*cli, "--project-directory", str(REPO), "--env-file", str(empty_env_file), "-f", str(compose_file)]
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, timeout=120, env=run_env, cwd=REPO, check=False
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compose_implementations_accept(
    variant: str, validators: dict[str, list[str]], yaml: Any, compose_text: str, tmp_path: Path
) -> None:
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(VARIANTS[variant](compose_text), encoding="utf-8")
    for name, cli in validators.items():
        resolved = yaml.safe_load(_config(cli, compose_file, tmp_path))
        services = resolved["services"]
        workers = [s for n, s in services.items() if n.startswith("worker")]
        assert workers and all(_gpu_devices(w) for w in workers), name
        # Interpolation with nothing set: the documented defaults.
        api_env = _env(services["api"])
        assert api_env["DREAMFARM_API_TOKEN"] == PLACEHOLDER, name
        assert api_env["DREAMFARM_S3_BUCKET"] == "dreamfarm", name
        assert _env(services["s3"])["AWS_SECRET_ACCESS_KEY"] == api_env["DREAMFARM_S3_SECRET_ACCESS_KEY"], name


def test_compose_refuses_flower_without_a_sign_in(validators: dict[str, list[str]], yaml: Any, tmp_path: Path) -> None:
    for name, cli in validators.items():
        refused = _run_config(cli, COMPOSE, tmp_path, {})
        assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr, (name, refused.stderr)
        services = yaml.safe_load(_config(cli, COMPOSE, tmp_path, {"FLOWER_BASIC_AUTH": "ops:s3cret"}))["services"]
        assert _env(services["flower"])["FLOWER_BASIC_AUTH"] == "ops:s3cret", name


def test_compose_substitutes_secrets_from_env(validators: dict[str, list[str]], yaml: Any, tmp_path: Path) -> None:
    env = {
        "DREAMFARM_API_TOKEN": "t0ken",
        "DREAMFARM_S3_ACCESS_KEY_ID": "akid",
        "DREAMFARM_S3_SECRET_ACCESS_KEY": "s3cret",
        "DREAMFARM_WEIGHTS_VOLUME": "/srv/dreamfarm/weights",
    }
    for name, cli in validators.items():
        services = yaml.safe_load(_config(cli, COMPOSE, tmp_path, env))["services"]
        app_env, s3_env = _env(services["worker"]), _env(services["s3"])
        assert app_env["DREAMFARM_API_TOKEN"] == "t0ken", name
        assert app_env["DREAMFARM_S3_ACCESS_KEY_ID"] == s3_env["AWS_ACCESS_KEY_ID"] == "akid", name
        assert app_env["DREAMFARM_S3_SECRET_ACCESS_KEY"] == s3_env["AWS_SECRET_ACCESS_KEY"] == "s3cret", name
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in services["worker"]["volumes"]]
        assert any(m.startswith("/srv/dreamfarm/weights:/weights") for m in mounts), (name, mounts)


# --------------------------------------------------------------------------
# The Dockerfile: checked as text (no daemon here to build it).


def _dockerfile() -> list[str]:
    """Instructions, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def test_dockerfile_installs_every_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    instructions = _dockerfile()
    copies = [i.split()[1:] for i in instructions if i.startswith("COPY ")]
    copied = {src.rstrip("/") for c in copies for src in c[:-1]}
    missing = [p for p in packages if p not in copied]
    assert not missing, f"Dockerfile does not COPY packages {missing} that pyproject.toml installs"
    # Dependencies are installed from pyproject.toml alone, before any source
    # is copied, so that layer survives source edits.
    first_source_copy = next(i for i, c in enumerate(copies) if set(c[:-1]) & {f"{p}/" for p in packages})
    assert copies[0][:-1] == ["pyproject.toml"] and first_source_copy > 0
    assert "dreamfarm" in pyproject["project"]["scripts"]


def test_dockerfile_runtime_settings() -> None:
    text = "\n".join(_dockerfile())
    assert re.search(r"^FROM (python:3\.1[12]-slim|nvidia/cuda:)", text, re.MULTILINE)
    assert "PYTHONUNBUFFERED=1" in text
    assert "TORCH_HOME=/weights" in text and "DREAMFARM_TORCH_HOME=/weights" in text
    assert re.search(r'^VOLUME \["?/weights"?\]', text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "EXPOSE 8000" in text


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", ".env"} <= ignored
    assert any(p.endswith(".pth") for p in ignored), "weights never go into the image"
