"""The house rules, checked on the source tree: which package may import
which (data flows one way: shells → core), and small files and functions in
the shells."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "api", "workers", "cli", "devstack")

# package → top-level modules it must never import
FORBIDDEN: dict[str, set[str]] = {
    # The core: no HTTP framework, no Celery, none of the shells.
    "service": {"api", "workers", "cli", "devstack", "celery", "kombu", "fastapi", "starlette", "uvicorn"},
    "api": {"workers", "cli", "devstack"},
    "workers": {"api", "cli", "devstack", "fastapi", "starlette"},
    "cli": {"workers"},
    "devstack": {"api", "workers", "cli"},
}
MAX_SHELL_FILE_LINES = 250
MAX_FUNCTION_LINES = 60


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_import_rules(package: str) -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(package)
        for name in _imports(path) & FORBIDDEN[package]
    }
    assert not bad, sorted(bad)


@pytest.mark.parametrize("package", ["api", "workers", "cli"])
def test_shell_files_are_small(package: str) -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in _sources(package)
        if (n := len(p.read_text().splitlines())) > MAX_SHELL_FILE_LINES
    }
    assert not big, big


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_are_short(package: str) -> None:
    long = {}
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                # A router factory's length is its routes', each checked on its own.
                nested = any(isinstance(n, ast.FunctionDef) and n is not node for n in node.body)
                if length > MAX_FUNCTION_LINES and not (nested and path.parent.name == "routers"):
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert not long, long


# The queue's name used as a literal: assigned, passed as queue=, -Q, or to a Redis call.
QUEUE_LITERAL = re.compile(r'(=\s*"render"\s*$|queue\s*=\s*"render"|"-Q",\s*"render"|\(\s*"render"\s*\))', re.M)


def test_the_queue_name_is_written_once() -> None:
    """The contract between API and workers lives in service/contract.py."""
    hits = [
        str(p.relative_to(ROOT))
        for package in (*PACKAGES, "tests", "bench")
        for p in _sources(package)
        if QUEUE_LITERAL.search(p.read_text()) and p.name != "test_layout_rules.py"
    ]
    assert hits == ["service/contract.py"], hits
