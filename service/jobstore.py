"""Job records in Redis.

Records live under `dreamfarm:job:<id>…` (not in Celery's result backend,
which expires), so they survive an API restart; with Redis's append-only file
they survive a Redis restart too. A finished job's record is also written to
the bucket (`jobs/<id>.json`).

Unit state changes go through one Lua script, so that concurrent workers
count every unit once and exactly one of them sees the job finish. Each job
also keeps a short log of structured events (batch started, unit rendered or
found in the bucket, out-of-memory splits, failures), which the API serves.

A job that names its layers (`layers`) also keeps them, in order, each with
its span of the job's unit order (`layers` in the job's hash), and which
layer each batch renders (`…:batch_layer`): so its status counts each layer's
units where they are, in Redis, without a per-layer record to keep in step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from service import layout
from service.contract import JOB_ID
from service.errors import DreamfarmError
from service.planning import JobPlan

PREFIX = "dreamfarm"
FINAL_STATES = ("done", "done_with_failures", "cancelled")
#: Events kept per job (the oldest are dropped first).
MAX_EVENTS = 20_000


_MARK = """
-- KEYS: 1 job hash, 2 done set, 3 failed hash, 4 progress hash, 5 quality hash
-- ARGV: 1 render key, 2 'done' | 'failed', 3 reason, 4 now, 5 batch id, 6.. quality counters
local job, done, failed, progress = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', job) == 0 then return -1 end
if ARGV[2] == 'done' then
  if redis.call('SADD', done, ARGV[1]) == 1 then
    redis.call('HDEL', failed, ARGV[1])
    -- ARGV[6..]: quality counters to add 1 to, once per unit (KEYS[5])
    for i = 6, #ARGV do redis.call('HINCRBY', KEYS[5], ARGV[i], 1) end
  end
elseif redis.call('SISMEMBER', done, ARGV[1]) == 0 then
  redis.call('HSET', failed, ARGV[1], ARGV[3])
end
-- The unit leaves its batch's in-flight count (it now counts as finished);
-- dropping the whole entry would take the batch's other rendered but not yet
-- recorded units out of the job's progress, which would then go backwards.
if ARGV[5] ~= '' then
  local entry = redis.call('HGET', progress, ARGV[5])
  if entry then
    local n, frac = string.match(entry, '^(%d+):(.*)$')
    n = tonumber(n or '0') - 1
    if n <= 0 then redis.call('HDEL', progress, ARGV[5])
    else redis.call('HSET', progress, ARGV[5], n .. ':' .. frac) end
  end
end
redis.call('HSET', job, 'updated_at', ARGV[4])
local state = redis.call('HGET', job, 'state')
if state == 'queued' then redis.call('HSET', job, 'state', 'running') end
local total = tonumber(redis.call('HGET', job, 'total'))
local cached = tonumber(redis.call('HGET', job, 'cached'))
local n_done, n_failed = redis.call('SCARD', done), redis.call('HLEN', failed)
if n_done + n_failed + cached >= total and state ~= 'cancelled' then
  if redis.call('HSETNX', job, 'finished_at', ARGV[4]) == 1 then
    if n_failed > 0 then redis.call('HSET', job, 'state', 'done_with_failures')
    else redis.call('HSET', job, 'state', 'done') end
  end
end
-- 1 exactly once per finish: the caller asks for the atlas. A caller whose
-- request failed gives the claim back (atlas_unclaim) and a later record of
-- any unit (a redelivery) claims it again.
state = redis.call('HGET', job, 'state')
if (state == 'done' or state == 'done_with_failures') and redis.call('HEXISTS', job, 'atlas_key') == 0 then
  return redis.call('HSETNX', job, 'atlas_requested', ARGV[4])
end
return 0
"""


# A worker starting a batch: queued → running, and nothing else (never
# overwrite a final state a duplicate delivery may find).
_START = """
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[1])
end
return redis.call('HGET', KEYS[1], 'state')
"""


# Each layer's finished units, counted where they are (the done set and the
# failed hash hold keys, not layers): one pass over the job's unit order,
# whose layers are consecutive spans. Cached units are counted at creation.
_LAYER_COUNTS = """
-- KEYS: 1 order list, 2 done set, 3 failed hash
-- ARGV: each layer's end in the order list (exclusive), in order
local order = redis.call('LRANGE', KEYS[1], 0, -1)
local out, i = {}, 1
for n = 1, #ARGV do
  local stop, done, failed = tonumber(ARGV[n]), 0, 0
  while i <= stop and i <= #order do
    if redis.call('SISMEMBER', KEYS[2], order[i]) == 1 then done = done + 1
    elseif redis.call('HEXISTS', KEYS[3], order[i]) == 1 then failed = failed + 1 end
    i = i + 1
  end
  out[n] = {done, failed}
end
return out
"""


class JobStore:
    """Job records in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._mark = client.register_script(_MARK)
        self._start = client.register_script(_START)
        self._layer_counts = client.register_script(_LAYER_COUNTS)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
                                        health_check_interval=30))  # fmt: skip

    @staticmethod
    def _k(job_id: str, part: str = "") -> str:
        if not JOB_ID.fullmatch(job_id):
            raise DreamfarmError(f"malformed job id {job_id[:50]!r}")
        return f"{PREFIX}:job:{job_id}" + (f":{part}" if part else "")

    def create(self, p: JobPlan, *, tenant: str = "default", batch_layers: Mapping[str, int] | None = None) -> None:
        """Record a planned job. `batch_layers`: batch id → its layer's place
        in `p.layers`, for a job with `layers` (its status counts the running
        batches' steps towards their layers)."""
        now = str(time.time())
        units = {
            u.spec.key(): json.dumps({"unit": u.spec.unit, "sample": u.spec.sample, "label": u.label,
                                      "caption": u.caption, "png": layout.render_png_key(u.spec),
                                      "sidecar": layout.render_sidecar_key(u.spec)})
            for u in p.units
        }  # fmt: skip
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._k(p.job_id), mapping={  # type: ignore[arg-type]
            "id": p.job_id, "state": "queued", "model": p.request.model, "layer": p.units[0].spec.layer,
            "request": p.request.record_json(), "total": len(p.units), "cached": len(p.cached),
            "batches": len(p.batches), "created_at": now, "updated_at": now, "tenant": tenant,
            "title": p.request.title or "", "recipe": p.request.recipe,
            "samples": p.units[0].spec.samples if p.units else 1,
        })  # fmt: skip
        pipe.rpush(self._k(p.job_id, "order"), *[u.spec.key() for u in p.units])
        pipe.hset(self._k(p.job_id, "units"), mapping=units)  # type: ignore[arg-type]
        if p.cached:
            pipe.sadd(self._k(p.job_id, "cached"), *p.cached)
        if p.request.several_layers:
            order = [u.spec.key() for u in p.units]
            layers = [{"layer": x.name, "path": x.path, "kind": x.kind, "start": x.start, "stop": x.stop,
                       "cached": sum(k in p.cached for k in order[x.start : x.stop])} for x in p.layers]  # fmt: skip
            pipe.hset(self._k(p.job_id), "layers", json.dumps(layers))
            if batch_layers:
                pipe.hset(self._k(p.job_id, "batch_layer"), mapping=dict(batch_layers))  # type: ignore[arg-type]
        pipe.zadd(f"{PREFIX}:jobs", {p.job_id: float(now)})
        if not p.batches:  # everything cached: done at once
            pipe.hset(self._k(p.job_id), mapping={"state": "done", "finished_at": now})
        pipe.rpush(self._k(p.job_id, "events"),
                   _event("submitted", units=len(p.units), cached=len(p.cached), batches=len(p.batches)))  # fmt: skip
        pipe.execute()

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self._k(job_id)))

    def get(self, job_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self._k(job_id)))  # type: ignore[arg-type]

    def state(self, job_id: str) -> str | None:
        return self.r.hget(self._k(job_id), "state")  # type: ignore[return-value]

    def mark(
        self, job_id: str, key: str, ok: bool, reason: str = "", batch_id: str = "", ranks: dict[str, int] | None = None
    ) -> bool:
        """Record a unit's outcome; True exactly once per finish of the job: the
        caller then asks for its atlas (or gives the claim back, `atlas_unclaim`).
        `ranks`: the target's rank by each network that judged the render,
        counted into the job's quality once per unit."""
        keys = [self._k(job_id), self._k(job_id, "done"), self._k(job_id, "failed"), self._k(job_id, "progress"),
                self._k(job_id, "quality")]  # fmt: skip
        counters = [f"{m}:{c}" for m, r in sorted((ranks or {}).items()) for c, hit in
                    (("n", True), ("top1", r == 1), ("top5", r <= 5)) if hit]  # fmt: skip
        args = [key, "done" if ok else "failed", reason[:500], str(time.time()), batch_id, *counters]
        out = self._mark(keys=keys, args=args)
        return int(out) == 1  # type: ignore[arg-type]

    def atlas_unclaim(self, job_id: str) -> None:
        self.r.hdel(self._k(job_id), "atlas_requested")

    def start(self, job_id: str) -> str | None:
        """A worker begins one of the job's batches; returns the job's state."""
        state = self._start(keys=[self._k(job_id)], args=[str(time.time())])
        return str(state) if state is not None else None

    def add_batch_layers(self, job_id: str, batch_layers: Mapping[str, int]) -> None:
        """More batches of a job with `layers` (a retry's), with their layers."""
        if batch_layers:
            self.r.hset(self._k(job_id, "batch_layer"), mapping=dict(batch_layers))  # type: ignore[arg-type]

    def layers(self, job_id: str) -> list[dict[str, Any]] | None:
        """A job's layers as `create` recorded them (name, path, kind, span
        start/stop in the unit order, cached), or None for a `layer` job."""
        raw = self.r.hget(self._k(job_id), "layers")
        return json.loads(raw) if raw else None  # type: ignore[arg-type]

    def set_progress(self, job_id: str, batch_id: str, units: int, fraction: float) -> None:
        self.r.hset(self._k(job_id, "progress"), batch_id, f"{units}:{fraction:.4f}")

    def cancel(self, job_id: str) -> bool:
        """Mark a job cancelled; batches not yet started are skipped by workers."""
        state = self.state(job_id)
        if state in FINAL_STATES:
            return False
        self.r.hset(self._k(job_id), mapping={"state": "cancelled", "finished_at": str(time.time())})
        self.add_event(job_id, "cancelled")
        return True

    def set_fields(self, job_id: str, **fields: str) -> None:
        self.r.hset(self._k(job_id), mapping=fields)  # type: ignore[arg-type]

    def order(self, job_id: str, start: int = 0, stop: int = -1) -> list[str]:
        return self.r.lrange(self._k(job_id, "order"), start, stop)  # type: ignore[return-value]

    def units(self, job_id: str, keys: Iterable[str]) -> list[dict[str, Any]]:
        keys = list(keys)
        if not keys:
            return []
        raw = self.r.hmget(self._k(job_id, "units"), keys)
        done = self.r.smismember(self._k(job_id, "done"), keys)
        cached = self.r.smismember(self._k(job_id, "cached"), keys)
        failed = self.r.hmget(self._k(job_id, "failed"), keys)
        out = []
        for key, info, d, c, f in zip(keys, raw, done, cached, failed):  # type: ignore[call-overload]
            item = json.loads(info) if info else {}
            state = "cached" if c else "done" if d else "failed" if f else "pending"
            out.append({"key": key, **item, "state": state, "error": f})
        return out

    def summary(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if not job:
            raise KeyError(job_id)
        total, cached = int(job["total"]), int(job["cached"])
        done = int(self.r.scard(self._k(job_id, "done")))  # type: ignore[arg-type]
        failures = self.r.hgetall(self._k(job_id, "failed"))
        in_flight: dict[str, float] = {}  # batch id → units × fraction of its steps done
        for batch, v in self.r.hgetall(self._k(job_id, "progress")).items():  # type: ignore[union-attr]
            n, frac = str(v).split(":")
            in_flight[str(batch)] = int(n) * float(frac)
        partial = sum(in_flight.values())
        finished = done + cached + len(failures)  # type: ignore[arg-type]
        progress = 1.0 if job["state"] in ("done", "done_with_failures") else min(1.0, (finished + partial) / total)
        # Shown progress never goes back (a batch's next chunk restarts its
        # in-flight fraction before the last chunk's units are recorded).
        shown = float(job.get("progress_shown") or 0.0)
        if progress > shown:
            self.r.hset(self._k(job_id), "progress_shown", f"{progress:.4f}")
        progress = max(progress, shown)
        return {
            "id": job_id, "state": job["state"], "model": job["model"], "layer": job["layer"],
            "title": job.get("title") or None,
            "totals": {"units": total, "cached": cached, "done": done, "failed": len(failures),  # type: ignore[arg-type]
                       "pending": max(0, total - finished), "batches": int(job["batches"])},
            "progress": round(progress, 4),
            "failures": [{"key": k, "error": v} for k, v in sorted(failures.items())],  # type: ignore[union-attr]
            "atlas_key": job.get("atlas_key") or None,
            "quality": self.quality(job_id),
            "recipe": job.get("recipe") or "lecture",
            "samples": int(job.get("samples") or 1),
            "created_at": float(job["created_at"]), "updated_at": float(job["updated_at"]),
            "finished_at": float(job["finished_at"]) if job.get("finished_at") else None,
            "request": json.loads(job["request"]),
            "layers": self._layer_summaries(job_id, job, in_flight) if job.get("layers") else None,
        }  # fmt: skip

    def _layer_summaries(self, job_id: str, job: dict[str, str], in_flight: dict[str, float]) -> list[dict[str, Any]]:
        """Each layer's counts and progress (finished units and the running
        batches' steps, never shown going back, like the job's) and atlas."""
        layers: list[dict[str, Any]] = json.loads(job["layers"])
        counts = self._layer_counts(keys=[self._k(job_id, "order"), self._k(job_id, "done"), self._k(job_id, "failed")],
                                    args=[x["stop"] for x in layers])  # fmt: skip
        partial = [0.0] * len(layers)
        batches = list(in_flight)
        for batch, index in zip(batches, self.r.hmget(self._k(job_id, "batch_layer"), batches) if batches else []):
            if index is not None and 0 <= int(index) < len(layers):
                partial[int(index)] += in_flight[batch]
        shown = self.r.hgetall(self._k(job_id, "layer_shown"))
        atlases = json.loads(job.get("layer_atlases") or "{}")
        finished_job = job["state"] in ("done", "done_with_failures")
        out, raise_shown = [], {}
        for i, (x, (done, failed)) in enumerate(zip(layers, counts)):  # type: ignore[call-overload]
            units, cached = x["stop"] - x["start"], x["cached"]
            finished = done + failed + cached
            progress = 1.0 if finished_job else min(1.0, (finished + partial[i]) / max(1, units))
            before = float(shown.get(str(i)) or 0.0)  # type: ignore[union-attr]
            if progress > before:
                raise_shown[str(i)] = f"{progress:.4f}"
            out.append({
                "layer": x["layer"], "path": x["path"], "kind": x["kind"], "units": units, "cached": cached,
                "done": done, "failed": failed, "pending": max(0, units - finished),
                "progress": round(max(progress, before), 4), "atlas_key": atlases.get(x["layer"]),
            })  # fmt: skip
        if raise_shown:
            self.r.hset(self._k(job_id, "layer_shown"), mapping=raise_shown)  # type: ignore[arg-type]
        return out

    def quality(self, job_id: str) -> dict[str, dict[str, int]]:
        """Per network, of the units rendered in this job: how many it
        recognized top-1 and top-5 (`n` judged)."""
        out: dict[str, dict[str, int]] = {}
        for field, count in self.r.hgetall(self._k(job_id, "quality")).items():  # type: ignore[union-attr]
            model, _, what = str(field).rpartition(":")
            out.setdefault(model, {"n": 0, "top1": 0, "top5": 0})[what] = int(count)
        return out

    def failed_keys(self, job_id: str) -> list[str]:
        return list(self.r.hkeys(self._k(job_id, "failed")))  # type: ignore[arg-type]

    def reopen(self, job_id: str) -> None:
        """For a retry of failed units: the job runs again until they finish."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self._k(job_id), "finished_at", "atlas_key", "atlas_requested", "progress_shown", "layer_atlases")
        pipe.hset(self._k(job_id), mapping={"state": "running", "updated_at": str(time.time())})
        pipe.delete(self._k(job_id, "failed"), self._k(job_id, "layer_shown"))
        pipe.execute()

    def ping(self) -> None:
        self.r.ping()

    # Events: what happened to a job, as structured records (never log text).

    def add_event(self, job_id: str, kind: str, **fields: str | int | float | None) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(self._k(job_id, "events"), _event(kind, **fields))
        pipe.ltrim(self._k(job_id, "events"), -MAX_EVENTS, -1)
        pipe.execute()

    def events(self, job_id: str, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        raw = self.r.lrange(self._k(job_id, "events"), offset, offset + limit - 1)
        return [json.loads(e) for e in raw]  # type: ignore[union-attr]

    def event_count(self, job_id: str) -> int:
        return int(self.r.llen(self._k(job_id, "events")))  # type: ignore[arg-type]

    # Each tenant's jobs in flight (service.quota decides what counts).

    @staticmethod
    def _inflight(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:inflight"

    def inflight_add(self, tenant: str, job_id: str, at: float) -> None:
        self.r.zadd(self._inflight(tenant), {job_id: at})

    def inflight(self, tenant: str) -> list[tuple[str, float, str | None]]:
        """(job id, when it was added, the job's state or None) for each member."""
        members: list[tuple[str, float]] = self.r.zrange(self._inflight(tenant), 0, -1, withscores=True)  # type: ignore[assignment]
        pipe = self.r.pipeline(transaction=False)
        for member, _ in members:
            pipe.hget(f"{PREFIX}:job:{member}", "state")
        states = pipe.execute()
        return [(m, added, state) for (m, added), state in zip(members, states)]

    def inflight_remove(self, tenant: str, *job_ids: str) -> None:
        if job_ids:
            self.r.zrem(self._inflight(tenant), *job_ids)

    def in_flight_with_model(self, model: str) -> list[str]:
        """The jobs of `model` that are queued or running, whichever tenant's:
        what a registered network may not be deleted under."""
        found = []
        for key in self.r.scan_iter(match=self._inflight("*"), count=500):
            members: list[str] = self.r.zrange(key, 0, -1)  # type: ignore[assignment]
            pipe = self.r.pipeline(transaction=False)
            for member in members:
                pipe.hmget(f"{PREFIX}:job:{member}", "state", "model")
            for member, (state, name) in zip(members, pipe.execute()):
                if name == model and state in ("queued", "running"):
                    found.append(member)
        return found

    def recent_jobs(self, limit: int = 100) -> list[str]:
        """The newest job ids first."""
        return list(self.r.zrevrange(f"{PREFIX}:jobs", 0, limit - 1))  # type: ignore[arg-type]


def _event(kind: str, **fields: str | int | float | None) -> str:
    return json.dumps({"at": round(time.time(), 3), "type": kind, **fields}, sort_keys=True)
