"""The named recipes and their fields."""

from typing import Any

from fastapi import APIRouter, Depends

from api.deps import read_errors, reader_for
from api.schemas import ErrorBody, RecipeOut
from service import recipes
from service.config import Settings


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/recipes", tags=["recipes"], responses=read_errors(settings, ErrorBody))
    reader = reader_for(settings)

    @r.get("", response_model=list[RecipeOut])
    def list_recipes(_t: str | None = Depends(reader)) -> Any:
        return recipes.listing()

    return r
