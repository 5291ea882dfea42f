"""The FastAPI application: ``create_app()`` wires settings, database, Celery and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import app as app_package
from app.agreement import api as agreement_api
from app.agreement import views as agreement_views
from app.api_errors import API_ERRORS, validation_detail
from app.auth import api as auth_api
from app.auth import views as auth_views
from app.auth.csrf import CSRFError, require_csrf
from app.config import Settings, get_settings
from app.db import BUSY_RETRY_AFTER_SECONDS, is_busy, make_engine, make_session_factory
from app.deps import Forbidden, LoginRequired, ids_in_range
from app.errors import NotFoundError
from app.exports import views as exports_views
from app.home import views as home_views
from app.imports import views as imports_views
from app.jobs import api as jobs_api
from app.jobs import views as jobs_views
from app.labeling import admin_views as labeling_admin_views
from app.labeling import api as labeling_api
from app.labeling import views as labeling_views
from app.models_registry import views as models_views
from app.projects import api as projects_api
from app.projects import views as projects_views
from app.review import api as review_api
from app.review import views as review_views
from app.users import views as users_views
from app.web.limits import BodyCaps, BodyLimit
from app.web.templating import is_htmx, render

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
API_PREFIX = "/api/v1"
SESSION_COOKIE = "rlhf_session"

DOCS_PATH = "/docs"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """CSP and friends on every response (pure ASGI, so streaming responses stay streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                # Swagger UI's page starts itself with an inline script; only it may.
                csp = DOCS_CSP if scope.get("path") == DOCS_PATH else CONTENT_SECURITY_POLICY
                headers.append((b"content-security-policy", csp.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                headers.append((b"x-frame-options", b"DENY"))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route at this path answers. Starlette's 405 names only the first
    route that matched the path, and a GET and a PATCH on one path are two routes here."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = f"/login?next={target}" if target not in ("/", "") else "/login"
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return render(
            request, "errors/error.html",
            {"title": "Not allowed", "message": exc.message, "status": 403},
            status_code=403,
        )  # fmt: skip

    @app.exception_handler(CSRFError)
    async def _csrf(request: Request, exc: CSRFError) -> Response:
        message = (
            "This form has expired or did not come from this site, so nothing was changed. "
            "Go back, reload the page and send it again."
        )
        return render(
            request, "errors/error.html",
            {"title": "Form expired", "message": message, "status": 403},
            status_code=403,
        )  # fmt: skip

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.message}, status_code=404)
        return render(
            request, "errors/error.html",
            {"title": "Not found", "message": exc.message.capitalize() + ".", "status": 404},
            status_code=404,
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": validation_detail(exc)}, status_code=422)
        # A page's form arrived malformed (hand-made request, field far too long): say which
        # fields, without echoing what was sent.
        fields = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        message = "This request could not be read: check " + ", ".join(fields) + "."
        return render(
            request, "errors/error.html",
            {"title": "Invalid input", "message": message, "status": 422},
            status_code=422,
        )  # fmt: skip

    @app.exception_handler(OperationalError)
    async def _busy(request: Request, exc: OperationalError) -> Response:
        # A database busy with another writer (SQLite's lock outlasted its 15 s wait, or a
        # Postgres lock timeout): say so with 503 and Retry-After, never a 500. Any other
        # operational error is a real failure and stays one.
        if not is_busy(exc):
            raise exc
        message = "The database is busy with another write (an import?). Try again in a moment."
        headers = {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)}
        if _is_api(request):
            return JSONResponse({"detail": message}, status_code=503, headers=headers)
        return render(
            request, "errors/error.html",
            {"title": "Busy", "message": message, "status": 503},
            status_code=503, headers=headers,
        )  # fmt: skip

    @app.exception_handler(HTTPException)  # Starlette's: its router's 404 and 405 too
    async def _http(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        if _is_api(request) or exc.status_code < 400:
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=headers
            )
        titles = {401: "Sign in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
                  413: "Too large"}  # fmt: skip
        return render(
            request, "errors/error.html",
            {"title": titles.get(exc.status_code, "Error"), "message": str(exc.detail),
             "status": exc.status_code},
            status_code=exc.status_code, headers=headers,
        )  # fmt: skip


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        sqlite_busy_seconds=settings.sqlite_busy_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Plain `def` routes and dependencies run on anyio's worker threads (40 by default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.web_threads
        yield
        engine.dispose()

    app = FastAPI(
        title="RLHF Studio",
        version=app_package.__version__,
        description="Human feedback collection and the InstructGPT training loop.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served below from /static, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factories = {
        "read": make_session_factory(engine),
        "write": make_session_factory(engine, writes=True),
    }
    from workers.celery_app import create_celery_app

    app.state.celery = create_celery_app(settings)

    # Inside the session middleware: the cap of an upload depends on a signed-in session.
    app.add_middleware(
        BodyLimit,
        caps=BodyCaps(
            json_api=settings.max_api_body_bytes,
            form=settings.max_form_body_bytes,
            upload=settings.max_upload_bytes + 1024**2,  # and the form's other fields
        ),
        api_prefix=API_PREFIX,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # The API first: a request is matched against the routes in order, and the API is the hot
    # path (a labeling tool leasing and submitting), the pages are not.
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(ids_in_range)], responses=API_ERRORS)
    api.include_router(labeling_api.router)
    api.include_router(auth_api.router)
    api.include_router(projects_api.router)
    api.include_router(agreement_api.router)
    api.include_router(jobs_api.router)
    api.include_router(review_api.router)
    app.include_router(api)

    # Every page and htmx route: CSRF-checked; each route declares its role dependency.
    web = APIRouter(
        dependencies=[Depends(ids_in_range), Depends(require_csrf)], include_in_schema=False
    )
    web.include_router(agreement_views.router)
    web.include_router(auth_views.router)
    web.include_router(exports_views.router)
    web.include_router(home_views.router)
    web.include_router(imports_views.router)
    web.include_router(jobs_views.router)
    web.include_router(labeling_views.router)
    web.include_router(labeling_admin_views.router)
    web.include_router(models_views.router)
    web.include_router(projects_views.router)
    web.include_router(review_views.router)
    web.include_router(users_views.router)
    app.include_router(web)

    @app.get(DOCS_PATH, include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{API_PREFIX}/openapi.json",
            title="RLHF Studio API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    _install_error_handlers(app)
    return app
