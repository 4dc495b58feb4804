"""The bucket layout, in one place.

renders/<model>/<layer>/<unit>/<key>.png   the image
renders/<model>/<layer>/<unit>/<key>.json  its sidecar, written last: a
                                           render exists iff this does
atlases/<atlas-key>.png + .json            grids and their manifests
jobs/<job-id>.json                         finished jobs' records
cache/precision/<id>.json                  bf16 verdicts (service.precision_policy)
cache/autotune/<id>.json                   tuned batch sizes (service.autotune)
images/<sha256>                            uploaded images that renders start from
"""

from __future__ import annotations

from service.spec import RenderSpec
from service.storage import check_key


def render_prefix(spec: RenderSpec) -> str:
    return check_key(f"renders/{spec.model}/{spec.layer}/{spec.unit}")


def layer_prefix(spec: RenderSpec) -> str:
    """Everything rendered for one model and layer (all units, all recipes)."""
    return check_key(f"renders/{spec.model}/{spec.layer}") + "/"


def render_png_key(spec: RenderSpec) -> str:
    return f"{render_prefix(spec)}/{spec.key()}.png"


def render_sidecar_key(spec: RenderSpec) -> str:
    return f"{render_prefix(spec)}/{spec.key()}.json"


def atlas_keys(atlas_key: str) -> tuple[str, str]:
    return check_key(f"atlases/{atlas_key}.png"), check_key(f"atlases/{atlas_key}.json")


def job_record_key(job_id: str) -> str:
    return check_key(f"jobs/{job_id}.json")


def precision_verdict_key(verdict_id: str) -> str:
    return check_key(f"cache/precision/{verdict_id}.json")


def image_key(content_key: str) -> str:
    return check_key(f"images/{content_key}")


def autotune_key(tune_id: str) -> str:
    return check_key(f"cache/autotune/{tune_id}.json")
