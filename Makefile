# The two commands a newcomer needs:
#   make demo   sets everything up and renders the lecture's classes into ./out/
#   make test   sets everything up (system packages too) and runs lint, type checks and the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: setup system-packages demo demo-local test lint typecheck pytest bench clean

setup: $(VENV)/.installed

# torch/torchvision first and pinned: they come from the local wheel cache, and
# installing them alone stops any other package from pulling a different build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/dreamfarm demo --out $(OUT)

demo-local: setup
	$(BIN)/dreamfarm render --model efficientnet_lite0 --layer logits \
		--unit Samoyed --unit "paper towel" --unit "king crab" --unit hourglass --out $(OUT)

# Debian's chromium, chromium-driver and docker-compose, installed when missing
# (as root), else a stop with the one command to run: no test skips for them.
system-packages:
	bash scripts/system-packages.sh

test: setup system-packages lint typecheck pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/engine_speed.py --write docs/benchmarks.md

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
