"""Remembering bf16 guard verdicts, so a worker or the CLI pays for the guard
once per (model, layer, device, torch version), not on every start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from service.precision import GuardReport


def cache_path() -> Path:
    base = os.environ.get("DREAMFARM_CACHE") or Path.home() / ".cache" / "dreamfarm"
    return Path(base) / "precision.json"


def _key(model: str, layer: str, device_name: str, random_weights: bool) -> str:
    return f"{model}|{layer}|{device_name}|{torch.__version__}|{'random' if random_weights else 'pretrained'}"


def load(
    model: str, layer: str, device_name: str, random_weights: bool, path: Path | None = None
) -> GuardReport | None:
    p = path or cache_path()
    try:
        data = json.loads(p.read_text())
        entry = data[_key(model, layer, device_name, random_weights)]
        return GuardReport(**entry)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(
    model: str, layer: str, device_name: str, random_weights: bool, report: GuardReport, path: Path | None = None
) -> None:
    p = path or cache_path()
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        data = {}
    data[_key(model, layer, device_name, random_weights)] = report.as_dict()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, p)
