"""The gallery's index: one summary per render, grouped by model, layer and
unit, so that a page with 1000 units does not list or read the bucket.

Live, it lives in Redis (`RedisIndex`), kept current by the workers as they
file renders: each write is a few atomic commands, so concurrent workers
never lose one another's entries. It can be rebuilt from the bucket's
sidecars at any time (`dreamfarm gallery reindex`), and a static export
builds the same index in memory from a store (`MemoryIndex`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis
from pydantic import BaseModel

PREFIX = "dreamfarm:index"


class Entry(BaseModel):
    """What a gallery page shows of one render without reading its sidecar."""

    key: str
    model: str
    layer: str
    unit: int
    kind: str
    label: str | None = None
    recipe: str | None = None
    seed: int = 0
    sample: int = 0
    samples: int = 1
    direction: str = "max"
    activation: float | None = None
    ranks: dict[str, int] = {}  # target rank by each network that judged it
    png: str
    sidecar: str
    created_at: str | None = None

    @classmethod
    def from_sidecar(cls, side: dict[str, Any]) -> Entry:
        spec = side["spec"]
        quality = side.get("quality") or {}
        verdicts = [quality.get("renderer"), *(quality.get("judges") or [])]
        ranks = {v["model"]: v["target_rank"] for v in verdicts if v and v.get("target_rank") is not None}
        return cls(
            key=side["key"], model=spec["model"], layer=spec["layer"], unit=spec["unit"], kind=spec["kind"],
            label=side.get("label"), recipe=side.get("recipe") or _recipe_of(spec), seed=spec.get("seed", 0),
            sample=spec.get("sample", 0), samples=spec.get("samples", 1), direction=spec.get("direction", "max"),
            activation=side.get("activation"), ranks=ranks, png=side["png"],
            sidecar=side["png"][: -len(".png")] + ".json", created_at=side.get("created_at"),
        )  # fmt: skip


def _recipe_of(spec: dict[str, Any]) -> str:
    """Renders filed before recipes had names: the lecture's, or by parameterization."""
    return {"pixel": "lecture", "fourier": "lucid", "maco": "maco", "image": "adversarial"}.get(
        (spec.get("param") or {}).get("name", "pixel"), "lecture"
    )


class Index(Protocol):
    def add(self, entries: Iterable[Entry]) -> None: ...

    def models(self) -> dict[str, int]: ...

    def layers(self, model: str) -> dict[str, int]: ...

    def units(self, model: str, layer: str, offset: int, limit: int, only: Sequence[int] | None = None
              ) -> tuple[int, list[tuple[int, Entry]]]: ...  # fmt: skip

    def renders(self, model: str, layer: str, unit: int) -> list[Entry]: ...


class RedisIndex:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @staticmethod
    def _k(*parts: object) -> str:
        return ":".join([PREFIX, *map(str, parts)])

    def add(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            new = self.r.hsetnx(self._k("render", e.model, e.layer), e.key, e.model_dump_json())
            pipe = self.r.pipeline(transaction=True)
            if not new:  # refreshed (reindexed): counts stay
                pipe.hset(self._k("render", e.model, e.layer), e.key, e.model_dump_json())
            else:
                pipe.hincrby(self._k("models"), e.model, 1)
                pipe.hincrby(self._k("layers", e.model), e.layer, 1)
            pipe.zadd(self._k("units", e.model, e.layer), {str(e.unit): e.unit})
            pipe.sadd(self._k("unit", e.model, e.layer, e.unit), e.key)
            # The unit's thumbnail: its first render, or a positive lecture-free one when it comes.
            pipe.hsetnx(self._k("thumb", e.model, e.layer), str(e.unit), e.key)
            pipe.execute()

    def models(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.r.hgetall(self._k("models")).items()}  # type: ignore[union-attr]

    def layers(self, model: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.r.hgetall(self._k("layers", model)).items()}  # type: ignore[union-attr]

    def units(
        self, model: str, layer: str, offset: int, limit: int, only: Sequence[int] | None = None
    ) -> tuple[int, list[tuple[int, Entry]]]:
        zkey = self._k("units", model, layer)
        if only is None:
            total = int(self.r.zcard(zkey))  # type: ignore[arg-type]
            units = [int(u) for u in self.r.zrange(zkey, offset, offset + limit - 1)]  # type: ignore[union-attr, arg-type]
        else:
            present = self.r.zmscore(zkey, [str(u) for u in only])
            hits = [u for u, s in zip(only, present) if s is not None]  # type: ignore[arg-type]
            total, units = len(hits), hits[offset : offset + limit]
        if not units:
            return total, []
        thumbs = self.r.hmget(self._k("thumb", model, layer), [str(u) for u in units])
        raw = self.r.hmget(self._k("render", model, layer), [t for t in thumbs if t])  # type: ignore[misc]
        by_key = {e.key: e for e in (Entry.model_validate_json(x) for x in raw if x)}  # type: ignore[union-attr]
        return total, [(u, by_key[t]) for u, t in zip(units, thumbs) if t in by_key]  # type: ignore[operator]

    def renders(self, model: str, layer: str, unit: int) -> list[Entry]:
        keys = sorted(self.r.smembers(self._k("unit", model, layer, unit)))  # type: ignore[call-overload]
        if not keys:
            return []
        raw = self.r.hmget(self._k("render", model, layer), keys)
        return _ordered([Entry.model_validate_json(x) for x in raw if x])  # type: ignore[union-attr]


class MemoryIndex:
    """The same index held in memory (a static export, tests)."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: dict[str, Entry] = {}
        self.add(entries)

    def add(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self.entries.setdefault(e.key, e)

    def models(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries.values():
            out[e.model] = out.get(e.model, 0) + 1
        return out

    def layers(self, model: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries.values():
            if e.model == model:
                out[e.layer] = out.get(e.layer, 0) + 1
        return out

    def units(
        self, model: str, layer: str, offset: int, limit: int, only: Sequence[int] | None = None
    ) -> tuple[int, list[tuple[int, Entry]]]:
        first: dict[int, Entry] = {}
        for e in sorted(self.entries.values(), key=lambda e: e.created_at or ""):
            if e.model == model and e.layer == layer:
                first.setdefault(e.unit, e)
        units = sorted(first) if only is None else [u for u in only if u in first]
        return len(units), [(u, first[u]) for u in units[offset : offset + limit]]

    def renders(self, model: str, layer: str, unit: int) -> list[Entry]:
        return _ordered([e for e in self.entries.values() if (e.model, e.layer, e.unit) == (model, layer, unit)])


def _ordered(entries: list[Entry]) -> list[Entry]:
    """By recipe, then seed, then positive before negative, then sample."""
    return sorted(entries, key=lambda e: (e.recipe or "", e.seed, e.direction != "max", e.sample, e.key))
