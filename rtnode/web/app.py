"""The web application: pages, /api/v1, /metrics, /healthz, static files, error handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rtnode import __version__
from rtnode.config import Config
from rtnode.views import ViewError
from rtnode.web import api, pages
from rtnode.web.auth import Auth, LoginRequired
from rtnode.web.context import WebContext, web_context
from rtnode.web.metrics import NodeCollector, health

STATIC = Path(__file__).parent / "static"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-src 'self'; frame-ancestors 'self'; form-action 'self'")
API_DOC = """Everything `rtnode ... --json` lists, with the same keys (docs/API.md), and the admin
actions. Reading needs a login when `http.token` or `http.username` is configured; actions always
do (`Authorization: Bearer <token>` or HTTP basic auth)."""


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or \
        "text/html" not in request.headers.get("accept", "")


def create_app(cfg: Config, scp: Any = None) -> FastAPI:
    """The app for one node; ``scp`` is the running StorageSCP (health, open associations)."""
    app = FastAPI(title="rtnode", version=__version__, description=API_DOC,
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    ctx = WebContext(cfg=cfg, auth=Auth(cfg.http), scp=scp)
    app.state.ctx = ctx
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(cfg, ctx.book_or_none, scp))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # only our own script runs: text from DICOM headers (names, AE titles) is escaped by
        # the templates, and an injected inline script would still not execute
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        return pages.login_redirect(exc.next_url)

    @app.exception_handler(ViewError)
    async def view_error(request: Request, exc: ViewError):
        if _wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return pages.render(request, "error.html", status_code=exc.status, message=str(exc),
                            code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        return pages.render(request, "error.html", status_code=exc.status_code,
                            message=str(exc.detail), code=exc.status_code)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["node"], summary="listener, index, queues, disk: 200 or 503")
    def healthz(request: Request) -> JSONResponse:
        c = web_context(request)
        ok, checks = health(c.cfg, c.book_or_none(), c.scp)
        return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/api/v1/docs", include_in_schema=False, response_class=HTMLResponse)
    def api_docs(request: Request):
        pages.page_reader(request)
        schema = app.openapi()
        ops = [{"method": m.upper(), "path": p, "summary": op.get("summary", ""),
                "doc": op.get("description", ""), "tags": ", ".join(op.get("tags", [])),
                "params": [q["name"] for q in op.get("parameters", [])]}
               for p, methods in schema["paths"].items() for m, op in methods.items()]
        return pages.render(request, "api_docs.html", ops=ops, description=API_DOC)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def context_of(app: FastAPI) -> WebContext:
    return app.state.ctx
