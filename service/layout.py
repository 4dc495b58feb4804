"""The bucket layout, in one place.

Objects are content-addressed (a render's key is the sha256 of its spec, an
atlas's that of its tiles), so a key never changes and concurrent writers of
the same key write the same bytes. Beside them, readable names for people
browsing the bucket by hand, written at the same time as what they name and
never read-modify-written (each is a whole object some single writer owns,
or has the same content whoever writes it):

renders/<model>/<layer>/<unit>/<key>.png   the image (<layer> is the module path, e.g. _fc)
renders/<model>/<layer>/<unit>/<key>.json  its sidecar, written last: a
                                           render exists iff this does
renders/<model>/<alias>/index.json         a layer alias (logits, conv4, block6 …) → the
                                           module path its renders are under; the same
                                           bytes every time it is written
atlases/<atlas-key>.png + .json            grids and their manifests
jobs/<job-id>.json                         finished jobs' records
jobs/<job-id>/atlas.png + atlas.json       the job's atlas under the job's name (a copy
                                           of atlases/<atlas-key>.*, rewritten on rebuild)
jobs/<job-id>/atlases/<layer>.png + .json  a job with `layers`: each layer's atlas (<layer>
                                           as the job names it: conv4, logits, features.7);
                                           such a job has no jobs/<job-id>/atlas.*
cache/precision/<id>.json                  bf16 verdicts (service.precision_policy)
cache/autotune/<id>.json                   tuned batch sizes (service.autotune)
tuned/<tenant>/<model>/<kind>.json         the recipe a tenant's `dreamfarm tune` found for a model's
                                           logit, channel or neuron units (service.tuned_recipes)
images/<sha256>                            uploaded images that renders start from
models/<name>/manifest.json                a registered network (service.zoo.registered):
                                           architecture, classes, preprocessing, owner and
                                           weights' sha256; written last: a registered
                                           network exists iff this does
weights/<sha256>                           a registered network's checkpoint, as uploaded
                                           (content-addressed: names may share one)
site/                                      (by default) a gallery exported into the bucket
                                           (`dreamfarm gallery export --to-bucket`)
"""

from __future__ import annotations

from collections.abc import Sequence

from service.spec import RenderSpec, canonical_json
from service.storage import check_key

#: The name of a layer alias's pointer object (`alias_index_key`).
ALIAS_INDEX = "index.json"


def render_prefix(spec: RenderSpec) -> str:
    return check_key(f"renders/{spec.model}/{spec.layer}/{spec.unit}")


def layer_prefix_of(model: str, layer: str) -> str:
    """Everything rendered for one model and layer (a module path)."""
    return check_key(f"renders/{model}/{layer}") + "/"


def layer_prefix(spec: RenderSpec) -> str:
    """Everything rendered for one model and layer (all units, all recipes)."""
    return layer_prefix_of(spec.model, spec.layer)


def render_png_key(spec: RenderSpec) -> str:
    return f"{render_prefix(spec)}/{spec.key()}.png"


def render_sidecar_key(spec: RenderSpec) -> str:
    return f"{render_prefix(spec)}/{spec.key()}.json"


def atlas_keys(atlas_key: str) -> tuple[str, str]:
    return check_key(f"atlases/{atlas_key}.png"), check_key(f"atlases/{atlas_key}.json")


def job_record_key(job_id: str) -> str:
    return check_key(f"jobs/{job_id}.json")


def job_atlas_keys(job_id: str) -> tuple[str, str]:
    """The job's atlas PNG and manifest beside its record, findable by job id."""
    return check_key(f"jobs/{job_id}/atlas.png"), check_key(f"jobs/{job_id}/atlas.json")


def job_layer_atlas_keys(job_id: str, layer: str) -> tuple[str, str]:
    """One layer's atlas PNG and manifest, for a job with several layers.
    `layer` is one of the zoo's names for it (an alias or its module path)."""
    return check_key(f"jobs/{job_id}/atlases/{layer}.png"), check_key(f"jobs/{job_id}/atlases/{layer}.json")


def alias_index_key(model: str, alias: str) -> str:
    return check_key(f"renders/{model}/{alias}/{ALIAS_INDEX}")


def alias_index(model: str, layer: str, alias: str, aliases: Sequence[str]) -> bytes:
    """The pointer from an alias to the layer's renders. Deterministic (no
    time, no writer): concurrent workers filing the same layer write the same
    bytes, so no write can undo another."""
    return canonical_json({
        "model": model, "alias": alias, "layer": layer, "aliases": list(aliases),
        "renders": layer_prefix_of(model, layer),
    }).encode()  # fmt: skip


def is_alias_index(key: str) -> bool:
    """Whether a key under renders/ is an alias pointer rather than a render's file."""
    parts = key.split("/")
    # timm's models are named timm/<architecture>: one segment more.
    segments = 5 if len(parts) > 1 and parts[1] == "timm" else 4
    return len(parts) == segments and parts[0] == "renders" and parts[-1] == ALIAS_INDEX


def precision_verdict_key(verdict_id: str) -> str:
    return check_key(f"cache/precision/{verdict_id}.json")


def image_key(content_key: str) -> str:
    return check_key(f"images/{content_key}")


def autotune_key(tune_id: str) -> str:
    return check_key(f"cache/autotune/{tune_id}.json")


def tuned_recipe_key(tenant: str, model: str, kind: str) -> str:
    return check_key(f"tuned/{tenant}/{model}/{kind}.json")


MODELS_PREFIX = "models/"
MANIFEST = "manifest.json"


def model_manifest_key(name: str) -> str:
    return check_key(f"{MODELS_PREFIX}{name}/{MANIFEST}")


def weights_key(sha256: str) -> str:
    return check_key(f"weights/{sha256}")
