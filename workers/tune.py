"""One recipe search in a worker: `service.tune_run` on this process's
renderer, progress into Redis, the result into the bucket."""

from __future__ import annotations

import logging

import redis

from service import tuned_recipes
from service.architectures import Architectures
from service.contract import TuneTask
from service.errors import one_line
from service.tune_jobs import TuneRuns
from service.tune_run import run
from workers.runtime import Runtime

log = logging.getLogger("dreamfarm.worker")


def run_tune(rt: Runtime, task: TuneTask) -> str:
    """The search; returns the stored recipe's key. Progress is best effort."""
    runs = TuneRuns(rt.jobs.r)

    def progress(done: int, total: int, best: float) -> None:
        try:
            runs.progress(task.run_id, done, total, best)
        except redis.RedisError as exc:  # a progress line may lag; the search must not stop
            log.warning("tune=%s progress not recorded: %s", task.run_id, one_line(str(exc)))

    request = task.request
    registry = rt.registry
    if request.model not in registry:  # a registered network: its manifest from the bucket
        registry = registry.with_entries({request.model: rt.entry(request.model)})
    arch = Architectures(registry).get(request.model, request.size)
    record = run(request, arch, rt.renderer, progress, tenant=task.tenant)
    key = tuned_recipes.save(rt.store(), record)
    runs.finish(task.run_id, record, key)
    log.info("tune=%s %s %s: score %.3f (base %.3f) after %d candidates", task.run_id, record.model, record.kind,
             record.score, record.base_score, len(record.trials))  # fmt: skip
    return key
