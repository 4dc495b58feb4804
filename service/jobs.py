"""Jobs: the request body, planning (expand, dedupe against the bucket, batch)
and job records in Redis.

Job records live in Redis under `dreamfarm:job:<id>…` (not in Celery's result
backend, which expires), so they survive an API restart; with Redis's
append-only file they survive a Redis restart too. A finished job's record is
also written to the bucket (`jobs/<id>.json`).

Unit state changes go through one Lua script, so that concurrent workers
count every unit once and exactly one of them sees the job finish.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import redis
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from service import layout
from service.errors import BadPrior, BadUnit, DreamfarmError, one_line
from service.planning import PlannedUnit, UnitRange, UnitSelection, batches, plan
from service.spec import MAX_SIZE, MAX_STEPS, PriorName, Recipe, RenderSpec, UnitKind
from service.storage import Store
from service.zoo import Architecture

PREFIX = "dreamfarm"
JOB_ID = re.compile(r"^[a-z0-9]{8,40}$")


def printable(v: str) -> str:
    """Refuse text that would break a log line or a terminal: control and
    format characters, line separators, lone surrogates (the pattern in the
    schema catches only ASCII controls)."""
    if not v.isprintable():
        bad = next(ch for ch in v if not ch.isprintable())
        raise ValueError(f"must be printable text, without control or separator characters (found U+{ord(bad):04X})")
    return v


ClassName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(printable)
]
Title = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(printable)]

FINAL_STATES = ("done", "done_with_failures", "cancelled")


class PriorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PriorName
    weight: float = Field(1.0, ge=0, le=1e6)

    @field_validator("weight")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class UnitRangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=0, le=10**7)
    stop: int = Field(ge=1, le=10**7)


class JobRequest(BaseModel):
    """A render job as clients submit it. Every field but model, layer and
    units has the lecture's default."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    layer: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")
    units: list[Annotated[int, Field(ge=0, le=10**7)] | ClassName] | UnitRangeIn | Literal["all"]
    kind: UnitKind | None = None
    position: tuple[Annotated[int, Field(ge=0, le=4096)], Annotated[int, Field(ge=0, le=4096)]] | None = None
    prior: list[PriorIn] = Field(default_factory=lambda: [PriorIn(name="edge_energy", weight=1.0)], max_length=4)
    steps: int = Field(250, ge=1, le=MAX_STEPS)
    lr: float = Field(0.1, gt=0, le=100)
    size: int | None = Field(None, ge=16, le=MAX_SIZE)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    init_scale: float = Field(0.01, ge=0, le=10)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    random_weights: bool = False
    batch_size: int | None = Field(None, ge=1, le=1024)
    title: Title | None = None

    @field_validator("prior")
    @classmethod
    def _distinct_priors(cls, v: list[PriorIn]) -> list[PriorIn]:
        names = [p.name for p in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each prior term may appear once; repeated: {', '.join(dupes)}")
        return v

    @field_validator("lr", "init_scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("units")
    @classmethod
    def _not_empty(cls, v: object) -> object:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one unit, a range {start, stop} or 'all'")
        return v

    def selection(self) -> UnitSelection:
        if isinstance(self.units, UnitRangeIn):
            if self.units.stop <= self.units.start:
                raise BadUnit(f"empty unit range: stop ({self.units.stop}) must be > start ({self.units.start})")
            return UnitRange(self.units.start, self.units.stop)
        return self.units

    def recipe(self, default_size: int) -> Recipe:
        from service.spec import PriorTerm

        try:
            return Recipe(
                prior=tuple(PriorTerm(name=p.name, weight=p.weight) for p in self.prior),
                steps=self.steps, lr=self.lr, size=self.size or default_size, init_scale=self.init_scale,
                precision=self.precision,
            )  # fmt: skip
        except ValidationError as exc:
            errors = exc.errors()
            where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            msg = errors[0]["msg"] if errors else str(exc)
            cls = BadPrior if where.startswith("prior") else DreamfarmError
            raise cls(one_line(f"{where or 'request'}: {msg}"), field=where or None) from None


@dataclass
class JobPlan:
    job_id: str
    request: JobRequest
    units: list[PlannedUnit]
    cached: set[str]
    batches: list[list[RenderSpec]]


def new_job_id() -> str:
    return secrets.token_hex(8)


def existing_sidecars(store: Store, prefix: str) -> set[str]:
    """Keys of every sidecar under a model/layer: one listing, not one request
    per unit (1000 HEADs would take seconds; a listing is a few pages)."""
    return {k for k in store.list(prefix) if k.endswith(".json")}


def plan_job(
    request: JobRequest, arch: Architecture, store: Store, *, batch_size: int, max_units: int | None = None
) -> JobPlan:
    recipe = request.recipe(arch.entry.input_size)
    units = plan(
        arch, layer=request.layer, units=request.selection(), recipe=recipe, kind=request.kind, seed=request.seed,
        random_weights=request.random_weights, position=request.position,
    )  # fmt: skip
    if max_units is not None and len(units) > max_units:
        raise BadUnit(f"{len(units)} units in one job; the limit is {max_units} (split the job)")
    present = existing_sidecars(store, layout.layer_prefix(units[0].spec)) if units else set()
    cached = {u.spec.key() for u in units if layout.render_sidecar_key(u.spec) in present}
    todo = [u.spec for u in units if u.spec.key() not in cached]
    return JobPlan(new_job_id(), request, units, cached, batches(todo, request.batch_size or batch_size))


_MARK = """
-- KEYS: 1 job hash, 2 done set, 3 failed hash, 4 progress hash
-- ARGV: 1 render key, 2 'done' | 'failed', 3 reason, 4 now, 5 batch id
local job, done, failed, progress = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', job) == 0 then return -1 end
if ARGV[2] == 'done' then
  if redis.call('SADD', done, ARGV[1]) == 1 then redis.call('HDEL', failed, ARGV[1]) end
elseif redis.call('SISMEMBER', done, ARGV[1]) == 0 then
  redis.call('HSET', failed, ARGV[1], ARGV[3])
end
if ARGV[5] ~= '' then redis.call('HDEL', progress, ARGV[5]) end
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
    return 1
  end
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


class JobStore:
    """Job records in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._mark = client.register_script(_MARK)
        self._start = client.register_script(_START)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
                                        health_check_interval=30))  # fmt: skip

    @staticmethod
    def _k(job_id: str, part: str = "") -> str:
        if not JOB_ID.fullmatch(job_id):
            raise DreamfarmError(f"malformed job id {job_id[:50]!r}")
        return f"{PREFIX}:job:{job_id}" + (f":{part}" if part else "")

    def create(self, p: JobPlan, *, tenant: str = "default") -> None:
        now = str(time.time())
        units = {
            u.spec.key(): json.dumps({"unit": u.spec.unit, "label": u.label, "caption": u.caption,
                                      "png": layout.render_png_key(u.spec),
                                      "sidecar": layout.render_sidecar_key(u.spec)})
            for u in p.units
        }  # fmt: skip
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._k(p.job_id), mapping={  # type: ignore[arg-type]
            "id": p.job_id, "state": "queued", "model": p.request.model, "layer": p.units[0].spec.layer,
            "request": p.request.model_dump_json(), "total": len(p.units), "cached": len(p.cached),
            "batches": len(p.batches), "created_at": now, "updated_at": now, "tenant": tenant,
            "title": p.request.title or "",
        })  # fmt: skip
        pipe.rpush(self._k(p.job_id, "order"), *[u.spec.key() for u in p.units])
        pipe.hset(self._k(p.job_id, "units"), mapping=units)  # type: ignore[arg-type]
        if p.cached:
            pipe.sadd(self._k(p.job_id, "cached"), *p.cached)
        pipe.zadd(f"{PREFIX}:jobs", {p.job_id: float(now)})
        if not p.batches:  # everything cached: done at once
            pipe.hset(self._k(p.job_id), mapping={"state": "done", "finished_at": now})
        pipe.execute()

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self._k(job_id)))

    def get(self, job_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self._k(job_id)))  # type: ignore[arg-type]

    def state(self, job_id: str) -> str | None:
        return self.r.hget(self._k(job_id), "state")  # type: ignore[return-value]

    def mark(self, job_id: str, key: str, ok: bool, reason: str = "", batch_id: str = "") -> bool:
        """Record a unit's outcome; True exactly once: when this call finished the job."""
        keys = [self._k(job_id), self._k(job_id, "done"), self._k(job_id, "failed"), self._k(job_id, "progress")]
        out = self._mark(keys=keys, args=[key, "done" if ok else "failed", reason[:500], str(time.time()), batch_id])
        return int(out) == 1  # type: ignore[arg-type]

    def start(self, job_id: str) -> str | None:
        """A worker begins one of the job's batches; returns the job's state."""
        state = self._start(keys=[self._k(job_id)], args=[str(time.time())])
        return str(state) if state is not None else None

    def set_progress(self, job_id: str, batch_id: str, units: int, fraction: float) -> None:
        self.r.hset(self._k(job_id, "progress"), batch_id, f"{units}:{fraction:.4f}")

    def cancel(self, job_id: str) -> bool:
        """Mark a job cancelled; batches not yet started are skipped by workers."""
        state = self.state(job_id)
        if state in FINAL_STATES:
            return False
        self.r.hset(self._k(job_id), mapping={"state": "cancelled", "finished_at": str(time.time())})
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
        partial = 0.0
        for v in self.r.hvals(self._k(job_id, "progress")):  # type: ignore[union-attr]
            n, frac = str(v).split(":")
            partial += int(n) * float(frac)
        finished = done + cached + len(failures)  # type: ignore[arg-type]
        progress = 1.0 if job["state"] in ("done", "done_with_failures") else min(1.0, (finished + partial) / total)
        return {
            "id": job_id, "state": job["state"], "model": job["model"], "layer": job["layer"],
            "title": job.get("title") or None,
            "totals": {"units": total, "cached": cached, "done": done, "failed": len(failures),  # type: ignore[arg-type]
                       "pending": max(0, total - finished), "batches": int(job["batches"])},
            "progress": round(progress, 4),
            "failures": [{"key": k, "error": v} for k, v in sorted(failures.items())],  # type: ignore[union-attr]
            "atlas_key": job.get("atlas_key") or None,
            "created_at": float(job["created_at"]), "updated_at": float(job["updated_at"]),
            "finished_at": float(job["finished_at"]) if job.get("finished_at") else None,
            "request": json.loads(job["request"]),
        }  # fmt: skip

    def failed_keys(self, job_id: str) -> list[str]:
        return list(self.r.hkeys(self._k(job_id, "failed")))  # type: ignore[arg-type]

    def reopen(self, job_id: str) -> None:
        """For a retry of failed units: the job runs again until they finish."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self._k(job_id), "finished_at", "atlas_key")
        pipe.hset(self._k(job_id), mapping={"state": "running", "updated_at": str(time.time())})
        pipe.delete(self._k(job_id, "failed"))
        pipe.execute()

    def ping(self) -> None:
        self.r.ping()


def specs_for_keys(request: JobRequest, arch: Architecture, keys: Sequence[str]) -> list[PlannedUnit]:
    """Re-plan a job and keep the units with these keys (for retries)."""
    recipe = request.recipe(arch.entry.input_size)
    units = plan(
        arch, layer=request.layer, units=request.selection(), recipe=recipe, kind=request.kind, seed=request.seed,
        random_weights=request.random_weights, position=request.position,
    )  # fmt: skip
    wanted = set(keys)
    return [u for u in units if u.spec.key() in wanted]
