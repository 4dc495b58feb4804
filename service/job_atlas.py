"""A finished job's atlas and its record in the bucket: built by a worker when
the job's last unit is counted, and again on request (the rebuild route).

A job with `layers` gets one atlas per layer (a grid mixing layers would put
a conv channel beside a class logit, and a whole network's would be tens of
thousands of tiles), each content-addressed and under the job's name as
`jobs/<id>/atlases/<layer>.png` + `.json`. Its `atlas_key` is then its first
layer's atlas (the first that has one): what tells a client that the job's
atlases are written, and what a client that knows only `atlas_url` shows.
It has no `jobs/<id>/atlas.png`: under that name a person browsing the
bucket would expect the whole job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service import layout
from service.atlas import Tile, atlas_key, build_atlas, columns_for, manifest_bytes
from service.jobstore import JobStore
from service.spec import canonical_json
from service.storage import Store


def write_job_atlas(job_id: str, jobs: JobStore, store: Store) -> str | None:
    """Build the atlas of the job's finished units (if any; for a job with
    `layers`, one per layer), file it and the job's record; returns the
    (first) atlas key. Raises StorageError (callers retry)."""
    job = jobs.summary(job_id)
    units = jobs.units(job_id, jobs.order(job_id))
    record: dict[str, Any] = dict(job)
    akey: str | None = None
    if job["layers"] is None:
        built = _build(units, job.get("title") or f"{job['model']} · {job['layer']}", job["samples"], store)
        if built is not None:
            akey = built.key
            _file(store, job_id, built, layout.atlas_keys(akey), layout.job_atlas_keys(job_id))
    else:
        atlases: dict[str, str] = {}
        for span, status in zip(jobs.layers(job_id) or [], record["layers"]):
            name = span["layer"]
            title = " · ".join(x for x in (job.get("title"), job["model"], name) if x)
            built = _build(units[span["start"] : span["stop"]], title, job["samples"], store)
            if built is not None:
                _file(store, job_id, built, layout.atlas_keys(built.key), layout.job_layer_atlas_keys(job_id, name))
                atlases[name] = status["atlas_key"] = built.key
        akey = next(iter(atlases.values()), None)
        if atlases:
            jobs.set_fields(job_id, layer_atlases=json.dumps(atlases))
    if akey is not None:
        jobs.set_fields(job_id, atlas_key=akey)
        record["atlas_key"] = akey
    record["units"] = units
    store.put(layout.job_record_key(job_id), canonical_json(record).encode(), "application/json")
    jobs.add_event(job_id, "atlas_written", atlas_key=record.get("atlas_key"))
    return record.get("atlas_key")


@dataclass(frozen=True)
class _Atlas:
    key: str
    png: bytes
    manifest: bytes


def _build(units: list[dict[str, Any]], title: str, samples: int, store: Store) -> _Atlas | None:
    """The atlas of these units' finished renders; None if none finished."""
    done = [u for u in units if u["state"] in ("done", "cached")]
    if not done:
        return None
    tiles = [Tile(store.get(u["png"]), u["caption"], u["unit"], u["key"], u.get("label")) for u in done]
    png, manifest = build_atlas(tiles, title=title, columns=columns_for(len(tiles), samples))
    return _Atlas(atlas_key([u["key"] for u in done]), png, manifest_bytes(manifest))


def _file(store: Store, job_id: str, atlas: _Atlas, *names: tuple[str, str]) -> None:
    """Content-addressed (what the API's URLs name), and again under the
    job's name for people browsing the bucket (jobs/<id>/atlas.*, or
    jobs/<id>/atlases/<layer>.*): each name a (PNG key, manifest key)."""
    for png_key, json_key in names:
        store.put(png_key, atlas.png, "image/png", {"job": job_id})
        store.put(json_key, atlas.manifest, "application/json", {"job": job_id})
