"""How many images to optimize at once on a device."""

from __future__ import annotations

import torch


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
