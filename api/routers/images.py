"""Images that renders start from (the adversarial recipe): uploaded as the
raw body, stored in the bucket under their content key."""

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Services, services, writer
from api.errors import error_response
from api.schemas import ErrorBody, ImageStored
from service import layout
from service.images import decode_image

ERR: dict[str, Any] = {"model": ErrorBody}
TYPES = ("image/png", "image/jpeg")

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.post("", status_code=201, response_model=ImageStored,
             responses={401: ERR, 413: ERR, 415: ERR, 422: ERR, 503: ERR},
             openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                        for t in TYPES}, "required": True}})  # fmt: skip
async def upload(request: Request, s: Services = Depends(services), _tenant: str = Depends(writer)) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in TYPES:
        return error_response(415, f"send the image as the body with Content-Type {' or '.join(TYPES)}, got "
                                   f"{kind[:60] or 'none'!r}")  # fmt: skip
    data = await request.body()
    try:
        image = await run_in_threadpool(decode_image, data)
    except ValueError as exc:
        return error_response(422, str(exc), field="body")
    key = hashlib.sha256(data).hexdigest()
    meta = {"width": str(image.width), "height": str(image.height)}
    await run_in_threadpool(s.store.put, layout.image_key(key), data, kind, meta)
    body = ImageStored(key=key, width=image.width, height=image.height, bytes=len(data), content_type=kind)
    return JSONResponse(body.model_dump(), status_code=201)
