"""Jinja2 rendering: full pages, or one block of the same template for an htmx request."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

import app
from app.auth.csrf import CSRF_FIELD, CSRF_HEADER, get_csrf_token
from app.db import utcnow
from app.dialogue import ROLE_LABELS, is_dialogue
from app.web.bidi import finalize
from app.web.markdown import render_markdown

ERROR_FRAGMENT_HEADER = "X-Error-Fragment"
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


def _context(request: Request) -> dict[str, Any]:
    return {
        "current_user": getattr(request.state, "user", None),
        "csrf_token": get_csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "csrf_header": CSRF_HEADER,
        "app_version": app.__version__,
        "demo_mode": request.app.state.settings.demo_mode,
    }


def _timeago(value: datetime | None) -> str:
    if value is None:
        return "-"
    seconds = int((utcnow() - value).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _queue_count(n: int) -> str:
    from app.labeling.queue import QUEUE_COUNT_LIMIT

    return f"{QUEUE_COUNT_LIMIT}+" if n >= QUEUE_COUNT_LIMIT else str(n)


def _build_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=finalize,
    )
    env.filters["markdown"] = render_markdown
    env.filters["timeago"] = _timeago
    env.filters["queue_count"] = _queue_count
    env.filters["iso"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "-"
    # `{% if prompt.input is dialogue %}`: shown as turns (templates/labeling/_prompt.html).
    env.tests["dialogue"] = is_dialogue
    env.globals["ROLE_LABELS"] = ROLE_LABELS
    return Jinja2Templates(env=env, context_processors=[_context])


templates = _build_templates()


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render ``name``; when the request comes from htmx and ``block`` is given, render only
    that block, so a fragment and its page can never drift apart.

    A refused htmx action answered with a fragment (a block, or a `_partial.html` template)
    that shows its message in a role="alert" region is marked with `X-Error-Fragment`:
    static/js/app.js swaps it in like a success, where htmx would drop an error response."""
    fragment = is_htmx(request) and (block is not None or Path(name).name.startswith("_"))
    if fragment and status_code >= 400:
        headers = {**(headers or {}), ERROR_FRAGMENT_HEADER: "1"}
    if block is None or not is_htmx(request):
        return templates.TemplateResponse(
            request, name, context or {}, status_code=status_code, headers=headers
        )
    template = templates.get_template(name)
    full: dict[str, Any] = {"request": request, **_context(request), **(context or {})}
    html = "".join(template.blocks[block](template.new_context(full)))
    return HTMLResponse(html, status_code=status_code, headers=headers)
