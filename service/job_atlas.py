"""A finished job's atlas and its record in the bucket: built by a worker when
the job's last unit is counted, and again on request (the rebuild route)."""

from __future__ import annotations

from typing import Any

from service import layout
from service.atlas import Tile, atlas_key, build_atlas, columns_for, manifest_bytes
from service.jobstore import JobStore
from service.spec import canonical_json
from service.storage import Store


def write_job_atlas(job_id: str, jobs: JobStore, store: Store) -> str | None:
    """Build the atlas of the job's finished units (if any), file it and the
    job's record; returns the atlas key. Raises StorageError (callers retry)."""
    job = jobs.summary(job_id)
    keys = jobs.order(job_id)
    units = [u for u in jobs.units(job_id, keys) if u["state"] in ("done", "cached")]
    record: dict[str, Any] = dict(job)
    if units:
        tiles = [Tile(store.get(u["png"]), u["caption"], u["unit"], u["key"], u.get("label")) for u in units]
        title = job.get("title") or f"{job['model']} · {job['layer']}"
        png, manifest = build_atlas(tiles, title=title, columns=columns_for(len(tiles), job["samples"]))
        akey = atlas_key([u["key"] for u in units])
        png_key, json_key = layout.atlas_keys(akey)
        store.put(png_key, png, "image/png", {"job": job_id})
        store.put(json_key, manifest_bytes(manifest), "application/json", {"job": job_id})
        jobs.set_fields(job_id, atlas_key=akey)
        record["atlas_key"] = akey
    record["units"] = jobs.units(job_id, keys)
    store.put(layout.job_record_key(job_id), canonical_json(record).encode(), "application/json")
    jobs.add_event(job_id, "atlas_written", atlas_key=record.get("atlas_key"))
    return record.get("atlas_key")
