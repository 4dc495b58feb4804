"""Tuning runs' records in Redis: requested, running (candidates done, best
score so far), done (the stored recipe's key and summary) or failed.

One hash per run, keyed by the request's content (`TuneRequest.content_key`),
so a second POST of the same search finds the first instead of starting one;
a failed run may be started again."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from service.jobstore import PREFIX
from service.tune_run import TuneRequest
from service.tuned_recipes import TunedRecipe

FINISHED = ("done", "failed")
# Create the run's hash unless one exists that has not failed (ARGV: field, value, …).
_CREATE = """
local state = redis.call('hget', KEYS[1], 'state')
if state and state ~= 'failed' then return 0 end
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], unpack(ARGV))
return 1
"""


class TuneRuns:
    def __init__(self, r: redis.Redis) -> None:  # type: ignore[type-arg]
        self.r = r

    @staticmethod
    def _k(run_id: str) -> str:
        return f"{PREFIX}:tune:{run_id}"

    def create(self, run_id: str, tenant: str, request: TuneRequest) -> bool:
        """Record a new run; False when one with this id exists and has not failed.
        One script, so a reader never sees half a record and two equal POSTs
        start one run."""
        now = time.time()
        fields = {"state": "queued", "tenant": tenant, "request": request.model_dump_json(), "done": 0,
                  "total": request.budget, "best": "", "created_at": now, "updated_at": now}  # fmt: skip
        flat = [str(x) for kv in fields.items() for x in kv]
        return bool(self._create(keys=[self._k(run_id)], args=flat))

    @property
    def _create(self) -> Any:
        return self.r.register_script(_CREATE)

    def _finished(self, run_id: str) -> bool:
        # A copy of a search redelivered after it finished must not undo it.
        return self.r.hget(self._k(run_id), "state") == "done"

    def progress(self, run_id: str, done: int, total: int, best: float) -> None:
        if self._finished(run_id):
            return
        self.r.hset(self._k(run_id), mapping={"state": "running", "done": done, "total": total,
                                              "best": f"{best:.6f}", "updated_at": time.time()})  # fmt: skip

    def finish(self, run_id: str, record: TunedRecipe, key: str) -> None:
        summary = {"key": key, "score": record.score, "base_score": record.base_score, "metric": record.metric,
                   "changes": record.changes(), "fields": record.fields, "units": record.units,
                   "seconds": record.seconds}  # fmt: skip
        now = time.time()
        self.r.hset(self._k(run_id), mapping={"state": "done", "done": len(record.trials),
                                              "best": f"{record.score:.6f}", "result": json.dumps(summary),
                                              "updated_at": now, "finished_at": now})  # fmt: skip

    def fail(self, run_id: str, reason: str) -> None:
        if self._finished(run_id):
            return
        self.r.hset(self._k(run_id), mapping={"state": "failed", "error": reason[:500], "updated_at": time.time(),
                                              "finished_at": time.time()})  # fmt: skip

    def get(self, run_id: str, tenant: str | None) -> dict[str, Any] | None:
        """The run as the API shows it; None if there is none, or it is another tenant's."""
        raw: dict[str, str] = self.r.hgetall(self._k(run_id))  # type: ignore[assignment]
        if not raw or "request" not in raw or (tenant is not None and raw.get("tenant") != tenant):
            return None
        return {
            "id": run_id, "state": raw["state"], "request": json.loads(raw["request"]),
            "done": int(raw.get("done") or 0), "total": int(raw.get("total") or 0),
            "best_score": float(raw["best"]) if raw.get("best") else None,
            "result": json.loads(raw["result"]) if raw.get("result") else None,
            "error": raw.get("error") or None,
            "created_at": float(raw["created_at"]), "updated_at": float(raw["updated_at"]),
            "finished_at": float(raw["finished_at"]) if raw.get("finished_at") else None,
        }  # fmt: skip
