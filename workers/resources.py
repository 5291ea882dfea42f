"""Per-process resources of a worker: settings, engine and session factory.

Built lazily in the process that runs tasks, so a forked child never shares its parent's
database connections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory


@dataclass(frozen=True)
class WorkerResources:
    pid: int
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]


_resources: WorkerResources | None = None


def worker_resources() -> WorkerResources:
    global _resources
    if _resources is None or _resources.pid != os.getpid():
        settings = get_settings()
        engine = make_engine(settings.database_url)
        _resources = WorkerResources(
            pid=os.getpid(),
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine, writes=True),
        )
    return _resources
