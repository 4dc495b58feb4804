"""The model zoo: models, their layers, unit counts and class names.

The zoo holds every torchvision and timm classifier (about 1,450): the
listing without a filter leaves timm's out (`?family=timm` or `?search=`
reach them), so that it stays a page rather than a thousand entries.
"""

from fastapi import APIRouter, Depends, HTTPException, Query

from api.deps import Services, read_errors, reader_for, services
from api.schemas import ErrorBody, LayerOut, ModelSummary
from service.config import Settings
from service.errors import BadRequest, UnknownModel
from service.zoo.registry import TIMM_PREFIX


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
    reader = reader_for(settings)

    @r.get("", response_model=list[ModelSummary])
    def list_models(
        family: str | None = Query(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_/]+$",
                                   description="one family (vgg, swin, timm/convnext), or timm for all of timm's"),
        search: str | None = Query(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./-]+$",
                                   description="names containing this text, any case, timm's included"),
        s: Services = Depends(services),
        _t: str | None = Depends(reader),
    ) -> list[ModelSummary]:  # fmt: skip
        if family is not None:
            try:
                names = s.registry.family(family)
            except UnknownModel as exc:
                raise BadRequest(str(exc), field="family") from None
        else:
            names = s.registry.names() if search is not None else [
                n for n in s.registry.names() if not n.startswith(TIMM_PREFIX)
            ]  # fmt: skip
        if search is not None:
            names = [n for n in names if search.lower() in n.lower()]
        return [ModelSummary.of(s.registry.get(name)) for name in names]

    def detail(name: str, s: Services) -> ModelLayers:
        if name not in s.registry:
            raise HTTPException(404, f"unknown model {name[:64]!r}; valid models: {s.registry.suggest(name[:64])}")
        arch = s.architectures.get(name, None)
        layers = [
            LayerWithLayout(path=x.path, aliases=list(x.aliases), type=x.module_type, kinds=list(x.kinds),
                            units=x.units, shape=list(x.shape), layout=x.layout)
            for x in arch.layers
        ]  # fmt: skip
        return ModelLayers(**ModelSummary.of(arch.entry).model_dump(), layers=layers, classes=list(arch.entry.classes))

    @r.get("/{name}", response_model=ModelLayers, responses={404: {"model": ErrorBody}})
    def get_model(name: str, s: Services = Depends(services), _t: str | None = Depends(reader)) -> ModelLayers:
        return detail(name, s)

    # timm's networks are named timm/<architecture>: a path of two segments.
    @r.get("/timm/{name}", response_model=ModelLayers, responses={404: {"model": ErrorBody}})
    def get_timm_model(name: str, s: Services = Depends(services), _t: str | None = Depends(reader)) -> ModelLayers:
        return detail(TIMM_PREFIX + name, s)

    return r
