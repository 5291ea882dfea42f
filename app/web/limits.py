"""Request bodies limited before they are parsed (design §15).

`BodyLimit` sits between the session middleware and the app and caps each request body by the
kind of route: the JSON API, page forms, and the upload of an import file. A body that says
(Content-Length) or turns out (while it streams in) to be larger than its cap is refused with
413 before any more of it is read or parsed. Who may send a large body is checked first, from
what the request carries without a database query: an upload needs a signed-in session, an API
call a bearer token. So an anonymous 500 MB upload is refused before a byte of it is spooled,
and an anonymous API call before its JSON is read.

The refusals are raised as ``HTTPException`` from the app's own read of the body, so they are
rendered like every other error (an error page, or ``{"detail": ...}`` on the API).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import SESSION_ID_KEY

UPLOAD_PATHS = re.compile(r"^/admin/projects/[^/]+/import$")
_NO_BODY = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class BodyCaps:
    json_api: int
    form: int
    upload: int


def _size(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2)):
        if size >= scale:
            return f"{size / scale:,.0f} {unit}"
    return f"{size / 1024:,.0f} KB"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, caps: BodyCaps, api_prefix: str) -> None:
        self.app = app
        self.caps = caps
        self.api_prefix = api_prefix

    def _kind(self, scope: Scope) -> tuple[str, int]:
        path: str = scope.get("path", "")
        if path.startswith(self.api_prefix + "/"):
            return "api", self.caps.json_api
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if content_type.startswith(b"multipart/form-data") and UPLOAD_PATHS.match(path):
            return "upload", self.caps.upload
        return "form", self.caps.form

    def _refusal(self, scope: Scope, kind: str, cap: int) -> HTTPException | None:
        """Why this body is refused before it is read, if it is."""
        headers = dict(scope.get("headers") or [])
        if kind == "upload" and not scope.get("session", {}).get(SESSION_ID_KEY):
            return HTTPException(403, "Sign in as an admin to upload a file.")
        if kind == "api" and not headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            return HTTPException(
                401, "Missing or invalid API token", headers={"WWW-Authenticate": "Bearer"}
            )
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            return _too_large(kind, cap)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in _NO_BODY:
            await self.app(scope, receive, send)
            return
        kind, cap = self._kind(scope)
        refusal = self._refusal(scope, kind, cap)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if refusal is not None:
                raise refusal
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise _too_large(kind, cap)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(kind: str, cap: int) -> HTTPException:
    what = {"api": "An API request", "upload": "An upload", "form": "A form"}[kind]
    hint = " Compress it (.jsonl.gz), or import it with `rlhf import`." if kind == "upload" else ""
    return HTTPException(413, f"{what} may be at most {_size(cap)}.{hint}")
