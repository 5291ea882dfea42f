"""Database plumbing: the declarative base, portable column types, engines and sessions.

Services receive a ``Session`` and only ``flush()``; the request or task edge commits.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Enum, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

SQLITE_IMMEDIATE = "rlhf_sqlite_immediate"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> datetime:
    return datetime.now(UTC)


def day_bounds(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """A range of whole days (``until`` included) as [start, end) instants in UTC."""
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC) if until else None
    return start, end


def within_days(column: Any, since: date | None, until: date | None) -> list[Any]:
    """WHERE conditions keeping ``column`` (a timestamp) within the days since..until."""
    start, end = day_bounds(since, until)
    return [
        c
        for c in (column >= start if start else None, column < end if end else None)
        if c is not None
    ]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use app.db.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _configure_sqlite(engine: Engine, *, foreign_keys: bool, busy_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINTs; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A transaction that will write takes the write lock up front (IMMEDIATE): writers then
        # queue on busy_timeout, instead of failing when a read snapshot that went stale is
        # upgraded to a write. Readers stay DEFERRED so a long read never blocks writers.
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: what a request refused for a busy database tells the client to wait
BUSY_RETRY_AFTER_SECONDS = 5
_BUSY = ("database is locked", "database table is locked", "lock timeout", "could not obtain lock")


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "another writer holds the lock" (retry later), not a
    fault: SQLite's "database is locked", Postgres' lock_timeout (55P03)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03" or any(
        marker in text for marker in _BUSY
    )


def make_engine(
    database_url: str,
    *,
    sqlite_foreign_keys: bool = True,
    pool_size: int = 10,
    max_overflow: int = 20,
    sqlite_busy_seconds: float = 15,
    **kwargs: Any,
) -> Engine:
    """An engine for the URL. ``sqlite_foreign_keys=False`` is for migrations only: Alembic's
    batch mode rebuilds a SQLite table by dropping it, which would fire ON DELETE CASCADE."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_seconds},
            **kwargs,
        )
        _configure_sqlite(
            engine, foreign_keys=sqlite_foreign_keys, busy_seconds=sqlite_busy_seconds
        )
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow, **kwargs
    )


def make_session_factory(engine: Engine, *, writes: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``writes=True`` for units of work that write (on SQLite they
    begin IMMEDIATE; other databases ignore the option)."""
    import app.models  # noqa: F401 - every mapper must be known before the first query

    bind = engine.execution_options(**{SQLITE_IMMEDIATE: True}) if writes else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=True)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work for tasks and commands: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR + CHECK (no native type to migrate), storing values."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )
