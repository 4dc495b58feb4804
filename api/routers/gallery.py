"""The gallery, served: HTML pages from `service.gallery`, with the API's
read rules (a token when reads are protected, as a header or the sign-in
cookie; a tenant sees only its own jobs). Errors are pages too."""

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from api.deps import TOKEN_COOKIE, Services, model_viewer_for, reader_for, services
from api.security import bearer
from service import layout
from service.config import Settings
from service.errors import DreamfarmError, NotFound, one_line
from service.gallery.pages import LiveLinks, error_page, login_page

Page = Callable[[LiveLinks], str]


def router(settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/gallery", include_in_schema=False)
    reader = reader_for(settings)
    open_models = model_viewer_for(settings.model_copy(update={"protect_reads": False}))

    def seer(request: Request) -> str | None:
        """Whose registered networks the pages show where reads are open (a
        token's, as a header or the sign-in cookie; else only the public
        ones). Where they are not, the reader's: `viewer`."""
        return None if settings.protect_reads else open_models(request)

    def viewer(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Any:
        """The tenant, or the 401 page to show instead (a browser gets a way to sign in)."""
        try:
            return reader(request, creds) if settings.protect_reads else reader()
        except HTTPException as exc:
            return _error(services(request), 401, f"{exc.detail} (sign in at /gallery/login)")

    @r.get("", response_class=HTMLResponse)
    def home(s: Services = Depends(services), who: Any = Depends(viewer), seen: Any = Depends(seer)) -> Response:
        t = who if settings.protect_reads else seen
        return who if isinstance(who, Response) else _page(s, lambda links: s.gallery_for(t).home(links))

    @r.get("/login", response_class=HTMLResponse)
    def login(s: Services = Depends(services), next: str = "/gallery") -> Response:
        return HTMLResponse(login_page(_links(s), _local(next)))

    @r.post("/login", response_class=HTMLResponse)
    async def sign_in(request: Request, s: Services = Depends(services)) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token, target = form.get("token", [""])[0], _local(form.get("next", ["/gallery"])[0])
        try:
            s.auth.tenant(HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))
        except HTTPException:
            return HTMLResponse(login_page(_links(s), target, failed=True), status_code=401)
        done = RedirectResponse(target, status_code=303)
        done.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
        return done

    @r.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(job_id: str, s: Services = Depends(services), who: Any = Depends(viewer)) -> Response:
        if isinstance(who, Response):
            return who

        def page(links: LiveLinks) -> str:
            s.workflows.job(job_id, who)  # NotFound for another tenant's
            summary = s.jobs.summary(job_id)

            def atlas_file(key: str | None) -> str | None:
                return links.file(layout.atlas_keys(key)[0]) if key else None

            atlas = atlas_file(summary["atlas_key"])
            for layer in summary["layers"] or []:  # a job with several layers: an atlas each
                layer["atlas_file"] = atlas_file(layer["atlas_key"])
            return s.gallery_for(who).job(summary, links, atlas)

        return _page(s, page)

    @r.get("/{model}", response_class=HTMLResponse)
    def model(
        model: str, s: Services = Depends(services), who: Any = Depends(viewer), seen: Any = Depends(seer)
    ) -> Response:  # fmt: skip
        t = who if settings.protect_reads else seen
        return who if isinstance(who, Response) else _page(s, lambda links: s.gallery_for(t).model(model, links))

    @r.get("/{model}/{layer}", response_class=HTMLResponse)
    def layer(model: str, layer: str, page: str = "1", q: str = "", s: Services = Depends(services),
              who: Any = Depends(viewer), seen: Any = Depends(seer)) -> Response:  # fmt: skip
        if isinstance(who, Response):
            return who
        t = who if settings.protect_reads else seen
        if not page.isdigit() or int(page) < 1:
            return _error(s, 422, f"page must be a whole number from 1, got {page[:20]!r}")
        return _canonical(s, model, layer, who=t) or _page(
            s, lambda links: s.gallery_for(t).layer(model, layer, links, int(page), q)
        )

    @r.get("/{model}/{layer}/{unit}", response_class=HTMLResponse)
    def unit(
        model: str, layer: str, unit: str, s: Services = Depends(services), who: Any = Depends(viewer),
        seen: Any = Depends(seer),
    ) -> Response:  # fmt: skip
        if isinstance(who, Response):
            return who
        t = who if settings.protect_reads else seen
        if not unit.isdigit():
            return _error(s, 422, f"a unit is an index (0, 1, …), got {unit[:20]!r}")
        return _canonical(s, model, layer, unit, who=t) or _page(
            s, lambda links: s.gallery_for(t).unit(model, layer, int(unit), links)
        )

    return r


def _links(s: Services) -> LiveLinks:
    # Image URLs on pages live no longer than a page is likely to stay open.
    return LiveLinks(s.store, min(900, s.settings.presign_expires_s))


def _page(s: Services, page: Page) -> Response:
    try:
        return HTMLResponse(page(_links(s)))
    except NotFound as exc:
        return _error(s, 404, str(exc))
    except DreamfarmError as exc:
        return _error(s, 422, str(exc))


def _error(s: Services, status: int, message: str) -> Response:
    return HTMLResponse(error_page(status, one_line(message), _links(s)), status_code=status)


def _canonical(
    s: Services, model: str, layer: str, unit: str | None = None, who: str | None = None
) -> Response | None:  # fmt: skip
    """A layer named by alias redirects to its module path: one URL per page, to cite."""
    try:
        path = s.gallery_for(who).layer_path(model, layer)
    except DreamfarmError:
        return None  # the page itself says what is wrong
    if path == layer:
        return None
    return RedirectResponse(f"/gallery/{quote(model)}/{quote(path)}" + (f"/{unit}" if unit else ""), status_code=307)


def _local(target: str) -> str:
    """Only redirect within the gallery (no open redirect)."""
    return target if target.startswith("/gallery") and "//" not in target and "\\" not in target else "/gallery"
