"""Dependencies shared by every router: the database session, the signed-in user, roles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.config import Settings
from app.errors import NotFoundError


@contextmanager
def request_session(request: Request) -> Iterator[Session]:
    """The request's database session; anything uncommitted is rolled back at the end.
    Requests that change state get a writing session (see ``make_session_factory``)."""
    factories = request.app.state.session_factories
    session = factories["read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"]()
    try:
        yield session
    finally:
        session.close()


def get_db_session(request: Request) -> Iterator[Session]:
    """One session per request; views commit at the edge (``request_session``)."""
    with request_session(request) as session:
        yield session


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


# The database's integers are 64-bit: a larger id names nothing (and would overflow the driver).
_DB_INT = range(-(2**63), 2**63)
_INTEGER = re.compile(r"^[+-]?\d+$")


async def ids_in_range(request: Request) -> None:
    """An integer in the path beyond 64 bits is 404, one in the query string 422: never the
    driver's overflow as a 500. Runs before the route's own parameters are read. Async (it does
    no I/O), like the other dependencies here that only read the request: FastAPI runs each
    plain ``def`` dependency in a worker thread of its own, a thread switch per request."""
    for value in request.path_params.values():
        if isinstance(value, str) and _INTEGER.match(value) and int(value) not in _DB_INT:
            raise NotFoundError("no such page or item")
    for key, value in request.query_params.multi_items():
        if _INTEGER.match(value) and int(value) not in _DB_INT:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("query", key),
                        "msg": "out of range",
                        "input": value,
                    }
                ]
            )


DbSession = Annotated[Session, Depends(get_db_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, htmx gets HX-Redirect."""


class Forbidden(Exception):
    def __init__(self, message: str = "You do not have access to this page.") -> None:
        super().__init__(message)
        self.message = message


SESSION_ID_KEY = "sid"


def get_optional_user(request: Request, session: DbSession) -> User | None:
    from app.auth.service import user_for_session

    session_id = request.session.get(SESSION_ID_KEY)
    if not isinstance(session_id, str):
        return None
    user = user_for_session(session=session, session_id=session_id)
    if user is None:
        request.session.pop(SESSION_ID_KEY, None)
        return None
    request.state.user = user
    return user


def require_user(user: Annotated[User | None, Depends(get_optional_user)]) -> User:
    if user is None:
        raise LoginRequired()
    return user


def require_admin(user: Annotated[User, Depends(require_user)]) -> User:
    if user.role != Role.admin:
        raise Forbidden("This page is for admins. Ask an admin if you need access.")
    return user


CurrentUser = Annotated[User, Depends(require_user)]
AdminUser = Annotated[User, Depends(require_admin)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


_bearer = HTTPBearer(auto_error=False, description="An API token from `rlhf users create --token`")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate_api(session: Session, credentials: HTTPAuthorizationCredentials | None) -> User:
    """The user of a bearer token, or 401. API callers authenticate with a bearer token only
    (never the session cookie, so the API cannot be driven by a cross-site form)."""
    from app.auth.service import api_token_for, token_needs_touch, touch_api_token

    token = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        token = api_token_for(session=session, token=credentials.credentials)
    if token is None:
        raise HTTPException(
            status_code=401,
            detail="Missing or invalid API token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = token.user
    if token_needs_touch(token):  # at most every few minutes per token
        try:
            touch_api_token(session=session, token_id=token.id)
            session.commit()
        except OperationalError:  # SQLite busy: bookkeeping only, the next request retries
            session.rollback()
    return user


def require_api_user(session: DbSession, credentials: BearerCredentials) -> User:
    return authenticate_api(session, credentials)


def require_api_admin(user: Annotated[User, Depends(require_api_user)]) -> User:
    if user.role != Role.admin:
        raise HTTPException(status_code=403, detail="Admin role required")
    return user


ApiUser = Annotated[User, Depends(require_api_user)]
ApiAdmin = Annotated[User, Depends(require_api_admin)]
