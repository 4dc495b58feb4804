"""The model zoo: models, their layers, unit counts and class names."""

from fastapi import APIRouter, Depends, HTTPException

from api.deps import Services, read_errors, reader_for, services
from api.schemas import ErrorBody, LayerOut, ModelDetail, ModelSummary
from service.config import Settings


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/models", tags=["models"], responses=read_errors(settings, ErrorBody))
    reader = reader_for(settings)

    @r.get("", response_model=list[ModelSummary])
    def list_models(s: Services = Depends(services), _t: str | None = Depends(reader)) -> list[ModelSummary]:
        return [ModelSummary.of(s.registry.get(name)) for name in s.registry.names()]

    @r.get("/{name}", response_model=ModelDetail, responses={404: {"model": ErrorBody}})
    def get_model(name: str, s: Services = Depends(services), _t: str | None = Depends(reader)) -> ModelDetail:
        if name not in s.registry.names():
            raise HTTPException(404, f"unknown model {name[:64]!r}; valid models: {', '.join(s.registry.names())}")
        arch = s.architectures.get(name, None)
        layers = [LayerOut(path=x.path, aliases=list(x.aliases), type=x.module_type, kinds=list(x.kinds),
                           units=x.units, shape=list(x.shape)) for x in arch.layers]  # fmt: skip
        return ModelDetail(**ModelSummary.of(arch.entry).model_dump(), layers=layers, classes=list(arch.entry.classes))

    return r
