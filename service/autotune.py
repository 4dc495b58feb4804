"""How many images a batch should hold on a GPU: measured once per (model,
layer, size, parameterization, precision, device, torch version) and kept in
the store beside the bf16 verdicts, so that every worker sharing the bucket
reuses it instead of probing again.

The search doubles the batch from the device default while throughput
(image-steps per second over a few timed steps) still grows by at least
`MIN_GAIN`, and stops at the first out-of-memory. On the CPU the default
batch is used as is (gains flatten past 16 there; docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence

import torch

from service import layout
from service.devices import default_batch_size, device_name
from service.errors import StorageError
from service.spec import RenderSpec, canonical_json
from service.splitting import is_out_of_memory
from service.storage import Store

log = logging.getLogger("dreamfarm.autotune")
MIN_GAIN = 1.05
MAX_BATCH = 1024
PROBE_STEPS = 6  # timed, after a 2-step warm-up at the same shape (cuDNN picks its kernels)

Measure = Callable[[int], float]  # batch size → image-steps per second (raises on out-of-memory)


def tune_id(spec: RenderSpec, device: torch.device, precision: str) -> str:
    ident = {"model": spec.model, "layer": spec.layer, "size": spec.size, "param": spec.param.name,
             "transforms": [t.model_dump() for t in spec.transforms], "samples": spec.samples,
             "precision": precision, "device": device_name(device), "torch": torch.__version__}  # fmt: skip
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()


def search(measure: Measure, start: int, limit: int = MAX_BATCH) -> tuple[int, dict[int, float]]:
    """The batch size to use, and every size tried with its throughput (0: out of memory)."""
    tried: dict[int, float] = {}
    best, batch = start, start
    while batch <= limit:
        try:
            tried[batch] = measure(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            tried[batch] = 0.0
            break
        if batch > start and tried[batch] < tried[best] * MIN_GAIN:
            break
        if tried[batch] >= tried[best]:
            best = batch
        batch *= 2
    return best, tried


def load(store: Store, key: str) -> int | None:
    try:
        return int(json.loads(store.get(layout.autotune_key(key)))["batch"])
    except (StorageError, ValueError, KeyError, TypeError):
        return None


def save(store: Store, key: str, batch: int, tried: dict[int, float], spec: RenderSpec, device: torch.device) -> None:
    record = {"batch": batch, "img_steps_per_s": {str(k): round(v, 2) for k, v in tried.items()},
              "model": spec.model, "layer": spec.layer, "size": spec.size, "device": device_name(device),
              "torch": torch.__version__}  # fmt: skip
    try:
        store.put(layout.autotune_key(key), canonical_json(record).encode(), "application/json")
    except StorageError as exc:
        log.warning("could not store the batch autotune: %s", exc)


def batch_size(
    specs: Sequence[RenderSpec], device: torch.device, precision: str, store: Store,
    render: Callable[[list[RenderSpec]], object], *, enabled: bool, memo: dict[str, int] | None = None,
) -> int:  # fmt: skip
    """The chunk size for these specs: the tuned one (remembered in `memo`,
    kept in the store, or measured now) where tuning is `enabled` on a GPU,
    else the device default."""
    spec = specs[0]
    default = default_batch_size(device, spec.size)
    if not enabled or device.type != "cuda":
        return default
    key = tune_id(spec, device, precision)
    memo = memo if memo is not None else {}
    if key not in memo:
        memo[key] = _tuned(key, spec, device, store, render, default)
    return memo[key]


def _tuned(
    key: str, spec: RenderSpec, device: torch.device, store: Store, render: Callable[[list[RenderSpec]], object],
    default: int,
) -> int:  # fmt: skip
    cached = load(store, key)
    if cached is not None:
        return cached
    best, tried = search(_measure(spec, render, device), default)
    save(store, key, best, tried, spec, device)
    log.info("batch autotune for %s %s at %d px on %s: %d (%s)", spec.model, spec.layer, spec.size,
             device_name(device), best, tried)  # fmt: skip
    return best


def _measure(spec: RenderSpec, render: Callable[[list[RenderSpec]], object], device: torch.device) -> Measure:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(batch: int) -> float:
        probe = [spec.model_copy(update={"steps": PROBE_STEPS, "seed": i}) for i in range(batch)]
        render([p.model_copy(update={"steps": 2}) for p in probe])
        sync()
        t = time.perf_counter()
        render(probe)
        sync()
        return batch * PROBE_STEPS / (time.perf_counter() - t)

    return measure
