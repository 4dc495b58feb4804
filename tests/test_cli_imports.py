"""The command line answers at once: building the parser, `--help`, an
argument error and the zoo's list import neither torch nor torchvision
(seconds on a small machine). Behaviour, not timing: bench/cli_speed.py
measures the seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "torchvision", "httpx", "boto3", "redis", "jinja2", "celery", "tqdm")

# Runs in a fresh interpreter: this test process has torch loaded already.
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from cli.main import build_parser, main

    steps = {}
    HEAVY = %r

    def seen():
        return sorted(m for m in HEAVY if m in sys.modules)

    parser = build_parser()
    steps["build_parser"] = seen()
    for argv in (["--help"], ["render", "--help"], ["submit", "--help"], ["render", "--bogus"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                parser.parse_args(argv)
            except SystemExit as exc:
                steps[" ".join(argv) + " exit"] = exc.code
        steps[" ".join(argv)] = seen()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        steps["models exit"] = main(["models"])
    steps["models"] = seen()
    steps["models lists"] = out.getvalue().split()[:1]
    print(json.dumps(steps))
    """
)


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("step", ["build_parser", "--help", "render --help", "submit --help", "render --bogus"])
def test_parsing_imports_nothing_heavy(probe: dict[str, object], step: str) -> None:
    assert probe[step] == [], f"after {step}: {probe[step]} imported"


def test_help_and_argument_errors_still_exit_as_argparse_does(probe: dict[str, object]) -> None:
    assert probe["--help exit"] == 0 and probe["render --help exit"] == 0
    assert probe["render --bogus exit"] == 2


def test_listing_the_zoo_needs_no_torch(probe: dict[str, object]) -> None:
    assert probe["models exit"] == 0 and probe["models lists"] == ["efficientnet_lite0"]
    heavy = probe["models"]
    assert isinstance(heavy, list) and "torch" not in heavy and "torchvision" not in heavy, heavy


def test_every_command_module_is_registered() -> None:
    from pathlib import Path

    import cli
    from cli.main import COMMAND_MODULES

    on_disk = {p.stem for p in Path(cli.__file__).parent.glob("*.py") if p.stem.endswith(("_cmd", "_cmds"))}
    assert on_disk == set(COMMAND_MODULES)


def test_the_zoo_catalog_matches_torchvision() -> None:
    """The registry reads checkpoint names and class names from a torch-free
    catalog; it must say what torchvision itself publishes."""
    import torchvision.models as tvm
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    from service.zoo.catalog import IMAGENET_CLASSES, TORCHVISION_CHECKPOINTS

    assert tuple(_IMAGENET_CATEGORIES) == IMAGENET_CLASSES
    for name, (filename, weights_name) in TORCHVISION_CHECKPOINTS.items():
        default = tvm.get_model_weights(name).DEFAULT
        assert (default.url.rsplit("/", 1)[-1], default.name) == (filename, weights_name), name


def test_registry_entries_still_build_their_networks() -> None:
    import torch.nn as nn

    from service.zoo import Architecture, Registry

    registry = Registry()
    for name in ("alexnet", "efficientnet_lite0"):
        assert isinstance(registry.get(name).build(), nn.Module)
    assert Architecture(registry.get("alexnet")).layer("logits").units == 1000
