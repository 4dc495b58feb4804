"""Shared by the benchmark scripts: naming the machine, and rewriting one
section of docs/benchmarks.md. Imported as a sibling module, so the scripts
run as `python bench/<script>.py` from anywhere."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from service.devices import device_name


def machine(device: torch.device) -> str:
    name = device_name(device)
    if device.type == "cpu":
        return f"{name}, {torch.get_num_threads()} threads"
    return name


def write_section(path: Path, key: str, body: str) -> None:
    """Replace (or append) the section between this key's markers."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
