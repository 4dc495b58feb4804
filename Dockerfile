# dreamfarm: one image for the HTTP API and the GPU workers.
#
#   docker build -t dreamfarm:latest .
#   docker run --rm dreamfarm:latest dreamfarm models
#
# CUDA comes from the wheels torch pulls in on linux/x86_64 (nvidia-*-cu12
# packages), so a slim Python base is enough: the host provides only the NVIDIA
# driver, mounted in by nvidia-container-toolkit. No CUDA base image needed.
#
# Build with the legacy builder or BuildKit alike (no RUN --mount, no heredocs),
# so `docker-compose` 1.29 and `docker compose` v2 both build it.

FROM python:3.11-slim-bookworm

# PYTHONUNBUFFERED: log lines reach `docker logs` at once, not when a buffer fills.
# NVIDIA_DRIVER_CAPABILITIES: Docker sets it only for named capabilities, not for
# the generic `gpu` one that compose reserves; compute is what torch needs.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TORCH_HOME=/weights \
    DREAMFARM_TORCH_HOME=/weights \
    DREAMFARM_WEIGHTS_DIR=/weights

# Fixed uid/gid so a host folder bind-mounted at /weights can be chowned to match.
RUN groupadd --system --gid 10001 dreamfarm \
 && useradd --system --uid 10001 --gid dreamfarm --create-home --home-dir /home/dreamfarm \
        --shell /usr/sbin/nologin dreamfarm

WORKDIR /app

# Dependencies first, in their own layer: it is several GB (torch + CUDA wheels)
# and is rebuilt only when pyproject.toml changes, not on every source edit.
# The list is read from pyproject.toml itself so it cannot drift from it.
COPY pyproject.toml ./
# The judges extra too: workers may classify renders with Lite1/Lite2 (DREAMFARM_JUDGES).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['judges']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project (the packages pyproject's [tool.setuptools] lists).
# pyproject names README.md as the long description; the glob keeps a missing
# README from failing the build (pyproject.toml is listed again only so that
# the COPY always matches something, which the legacy builder requires).
COPY pyproject.toml README.md* ./
COPY service/ service/
COPY workers/ workers/
COPY api/ api/
COPY cli/ cli/
COPY devstack/ devstack/
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && dreamfarm --help > /dev/null

# Weights are never baked in: operators mount them here (torch hub layout,
# /weights/hub/checkpoints/<name>-<hash>.pth, or files directly in /weights).
# Created owned by the app user so a fresh named volume inherits that owner.
RUN mkdir -p /weights/hub/checkpoints \
 && chown -R dreamfarm:dreamfarm /weights
VOLUME ["/weights"]

# Numeric, so runtimes that check for non-root (Kubernetes runAsNonRoot) can tell.
USER 10001:10001
# A writable working directory, away from /app's copy of the sources (which
# `python -c` would otherwise import instead of the installed package).
WORKDIR /home/dreamfarm

EXPOSE 8000

# No HEALTHCHECK here: the same image runs the API and the workers, which need
# different checks; docker-compose.yml defines them per service (python is on
# PATH, so `python -c "import urllib.request; ..."` works without curl).
CMD ["dreamfarm", "api", "--host", "0.0.0.0", "--port", "8000"]
