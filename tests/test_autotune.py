"""Batch autotuning: the search on real renders (CPU, tiny), its stop at an
out-of-memory, and the result kept in a store for every worker to reuse."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from service import autotune, engine
from service.devices import default_batch_size
from service.spec import RenderSpec
from service.splitting import InjectedOutOfMemory
from service.storage import LocalStore

SPEC = RenderSpec(model="efficientnet_lite0", layer="_fc", kind="logit", unit=1, steps=2, size=32)


def test_search_doubles_while_throughput_grows_and_stops_at_out_of_memory() -> None:
    rates = {1: 10.0, 2: 19.0, 4: 30.0, 8: 31.0, 16: 50.0}
    best, tried = autotune.search(lambda b: rates[b], 1, limit=16)
    assert best == 4 and list(tried) == [1, 2, 4, 8]  # 8 gains < 5%: stop

    def oom_above_2(b: int) -> float:
        if b > 2:
            raise InjectedOutOfMemory("injected")
        return float(b)

    best, tried = autotune.search(oom_above_2, 1)
    assert best == 2 and tried[4] == 0.0


def test_search_measures_real_renders(lite0: nn.Module) -> None:
    def render(specs: list[RenderSpec]) -> object:
        return engine.render(lite0, "_fc", specs, precision="float32")

    measure = autotune._measure(SPEC, render, torch.device("cpu"))
    best, tried = autotune.search(measure, 1, limit=4)
    assert best in tried and all(v > 0 for v in tried.values())


def test_the_result_is_kept_for_every_worker_and_cpu_keeps_its_default(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    key = autotune.tune_id(SPEC, torch.device("cpu"), "float32")
    assert autotune.load(store, key) is None
    autotune.save(store, key, 48, {16: 1.0, 32: 2.0, 48: 3.0}, SPEC, torch.device("cpu"))
    assert autotune.load(store, key) == 48
    assert next(tmp_path.glob("cache/autotune/*.json")).stem == key
    calls: list[int] = []
    got = autotune.batch_size([SPEC], torch.device("cpu"), "float32", store, lambda s: calls.append(len(s)),
                              enabled=True)  # fmt: skip
    assert got == default_batch_size(torch.device("cpu"), SPEC.size)
    assert calls == []  # nothing measured on the CPU
    other = SPEC.model_copy(update={"size": 64})
    assert autotune.tune_id(other, torch.device("cpu"), "float32") != key
