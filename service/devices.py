"""Devices: which one to use, its name, and how many images fit a batch on it."""

from __future__ import annotations

import platform

import torch

from service.errors import DreamfarmError


def default_device(requested: str | None = None) -> torch.device:
    """`requested` if given (checked), else the first GPU if one is visible, else the CPU."""
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise DreamfarmError(f"unknown device {requested!r}: use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DreamfarmError(f"device {requested!r} asked for, but no CUDA device is visible")
        return device
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_batch_size(device: torch.device, size: int = 224) -> int:
    """Batch size by device, scaled down for larger images (activation memory
    grows with pixels). On the CPU, gains flatten past ~16 (see
    docs/benchmarks.md); on a GPU bigger batches keep the SMs busy."""
    scale = (224 / size) ** 2
    if device.type == "cuda":
        total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        base = 64 if total_gib >= 40 else 32 if total_gib >= 16 else 8
    else:
        base = 16
    return max(1, min(256, int(base * scale)))
