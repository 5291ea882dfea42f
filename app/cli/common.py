"""What every command uses: the settings, a database session, errors and JSON output.

Heavy modules (SQLAlchemy, pydantic) are imported inside the functions: `rlhf --help` and
every test that runs `rlhf` as a process should not pay for them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.config import Settings


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    from app.config import get_settings

    return get_settings()


@contextmanager
def db_session() -> Iterator[Session]:
    from app.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings().database_url)
    try:
        with session_scope(make_session_factory(engine, writes=True)) as session:
            yield session
    finally:
        engine.dispose()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
