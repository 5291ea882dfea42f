"""How the JSON API answers an error: always ``{"detail": "<one sentence>"}`` (design §15),
for an unreadable body (400), a bad token (401), an admin-only route (403, on those
routes: ``ADMIN_ONLY``), a missing thing (404), a conflict (409), a body too large (413), a
request that does not fit (422: the fields and what is wrong with them, in words) and a busy
database (503). ``API_ERRORS`` documents them on every route of the OpenAPI description."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The body could not be read (not JSON, or not UTF-8)"),
    401: _error("Missing or invalid API token"),
    404: _error("No such item (or not yours)"),
    413: _error("The request body is larger than the server accepts"),
    422: _error("The request does not fit: which fields, and why"),
    503: _error("The database is busy; retry after the Retry-After seconds"),
}


ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: _error("The token's user is not an admin"),
}


def validation_detail(exc: RequestValidationError) -> str:
    """A request validation error as one sentence: "body.ranking: Field required; ..."."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "the request does not fit"
