"""The model zoo: models, their layers, unit counts and class names.

The zoo holds every torchvision and timm classifier (about 1,450): the
listing without a filter leaves timm's out (`?family=timm` or `?search=`
reach them), so that it stays a page rather than a thousand entries.
Beside them, the registered networks the caller may see (its own and the
public ones: `api.routers.registered` registers them), family "registered".
"""

import logging

from fastapi import APIRouter, Depends, HTTPException, Query

from api.deps import Services, model_viewer_for, read_errors, services
from api.schemas import ErrorBody, LayerOut, ModelSummary
from service.config import Settings
from service.errors import BadRequest, StorageError, UnknownModel, one_line
from service.zoo import Registry
from service.zoo.registry import TIMM_PREFIX

log = logging.getLogger("dreamfarm.api")


# Here rather than in api/schemas.py only because this change was kept to the
# zoo's own files; they belong beside LayerOut and ModelDetail.
class LayerWithLayout(LayerOut):
    """A layer, with how its shape is laid out: NC (a vector), NCHW or NHWC
    (a feature map, channels first or last), NLD (tokens x features)."""

    layout: str


class ModelLayers(ModelSummary):
    layers: list[LayerWithLayout]
    classes: list[str]


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/models", tags=["models"], responses=read_errors(settings, ErrorBody))
    model_viewer = model_viewer_for(settings)

    def zoo(s: Services, tenant: str | None) -> Registry:
        """The built-ins and what the caller may see of the registered
        networks; the built-ins alone while the bucket cannot be listed."""
        try:
            return s.architectures_for(tenant).registry
        except StorageError as exc:
            log.warning("registered models not listed: %s", one_line(str(exc)))
            return s.registry

    @r.get("", response_model=list[ModelSummary])
    def list_models(
        family: str | None = Query(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_/]+$",
                                   description="one family (vgg, swin, timm/convnext), or timm for all of timm's"),
        search: str | None = Query(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./-]+$",
                                   description="names containing this text, any case, timm's included"),
        s: Services = Depends(services),
        tenant: str | None = Depends(model_viewer),
    ) -> list[ModelSummary]:  # fmt: skip
        registry = zoo(s, tenant)
        if family is not None:
            try:
                names = registry.family(family)
            except UnknownModel as exc:
                raise BadRequest(str(exc), field="family") from None
        else:
            names = registry.names() if search is not None else [
                n for n in registry.names() if not n.startswith(TIMM_PREFIX)
            ]  # fmt: skip
        if search is not None:
            names = [n for n in names if search.lower() in n.lower()]
        return [summary(s, registry, name) for name in names]

    def summary(s: Services, registry: Registry, name: str) -> ModelSummary:
        entry = registry.get(name)
        if entry.source != "registered":
            return ModelSummary.of(entry)
        return ModelSummary.of(entry, s.registered.all().get(name))

    def detail(name: str, s: Services, tenant: str | None) -> ModelLayers:
        archs = s.architectures_for(tenant, name)
        if name not in archs.registry:
            raise HTTPException(404, f"unknown model {name[:64]!r}; valid models: {archs.registry.suggest(name[:64])}")
        arch = archs.get(name, None)
        layers = [
            LayerWithLayout(path=x.path, aliases=list(x.aliases), type=x.module_type, kinds=list(x.kinds),
                            units=x.units, shape=list(x.shape), layout=x.layout)
            for x in arch.layers
        ]  # fmt: skip
        head = summary(s, archs.registry, name)
        return ModelLayers(**head.model_dump(), layers=layers, classes=list(arch.entry.classes))

    @r.get("/{name}", response_model=ModelLayers, responses={404: {"model": ErrorBody}})
    def get_model(
        name: str, s: Services = Depends(services), tenant: str | None = Depends(model_viewer)
    ) -> ModelLayers:  # fmt: skip
        return detail(name, s, tenant)

    # timm's networks are named timm/<architecture>: a path of two segments.
    @r.get("/timm/{name}", response_model=ModelLayers, responses={404: {"model": ErrorBody}})
    def get_timm_model(
        name: str, s: Services = Depends(services), tenant: str | None = Depends(model_viewer)
    ) -> ModelLayers:  # fmt: skip
        return detail(TIMM_PREFIX + name, s, tenant)

    return r
