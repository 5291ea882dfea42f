"""Test fixtures.

Databases: every database test runs on SQLite, and also on Postgres when
``RLHF_TEST_DATABASE_URL`` is set (CI). Each database is built once per session by Alembic
(so the migration is what the tests exercise), and each test runs in a transaction that is
rolled back. Brokers: worker tests run on the embedded filesystem broker, and also on the
brokers named in ``RLHF_TEST_BROKER_URL`` (comma-separated; CI passes Redis and RabbitMQ).

In parallel (``make test`` runs pytest-xdist, ``-n auto --dist loadfile``): each xdist worker
has a Postgres database of its own, named after it beside the one given (``test_gw0``, ...),
and a demo server of its own for the browser tests; the tests of the real brokers, which share
Redis's database and RabbitMQ's vhost, run on one worker, one at a time (``BROKER_TESTS``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.agreement.leaderboard import leaderboard_cache
from app.agreement.service import report_cache
from app.cli import alembic_config
from app.config import Settings
from app.db import make_engine
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET = "test-secret-key-not-for-production-0123456789"


def _database_params() -> list[str]:
    params = ["sqlite"]
    if os.environ.get("RLHF_TEST_DATABASE_URL"):
        params.append("postgresql")
    return params


def _broker_params() -> list[str]:
    extra = [u.strip() for u in os.environ.get("RLHF_TEST_BROKER_URL", "").split(",") if u.strip()]
    return ["filesystem://", *extra]


def worker_database(url: str) -> str:
    """The Postgres database of this xdist worker (made if missing), or ``url`` itself when
    the suite runs in one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    given = make_url(url)
    name = f"{given.database}_{worker}"
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}) is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return given.set(database=name).render_as_string(hide_password=False)


def reset_postgres(url: str) -> None:
    """Empty the CI database: the suite owns it and builds it again with Alembic."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


# The tests of the real brokers share Redis's database 15 and RabbitMQ's vhost between xdist
# workers, so they live in one file, which xdist gives to one worker (``--dist loadfile``):
# they run one at a time. (xdist's ``loadgroup`` groups nothing under pytest 9.2:
# pytest-dev/pytest-xdist#1386.)
BROKER_TESTS = "tests/test_worker.py"
# The files that take longest start first, so that no worker is left with one at the end while
# the others wait (each file goes to one worker).
LONGEST_FIRST = [
    BROKER_TESTS, "tests/test_train_jobs.py", "tests/test_lora.py", "tests/test_train_processes.py",
    "tests/test_ppo_job.py", "tests/test_judge.py",
]  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``one_database`` (a training test whose subject is the model, through a
    job whose bookkeeping other tests check on every database) runs on one database: Postgres
    where there is one, else SQLite. Its SQLite run is deselected, and counted so. And every
    test of the real brokers must be in ``BROKER_TESTS``. The files in ``LONGEST_FIRST`` are
    moved to the front (the order within a file is kept)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
    elsewhere = [
        item.nodeid
        for item in items
        if "broker_url" in getattr(item, "fixturenames", ())
        and not item.nodeid.startswith(BROKER_TESTS + "::")
    ]
    if elsewhere:
        raise pytest.UsageError(
            f"tests of the real brokers belong in {BROKER_TESTS}, whose tests run one at a "
            f"time under xdist: {', '.join(elsewhere)}"
        )
    if "postgresql" not in _database_params():
        return
    dropped = [
        item
        for item in items
        if item.get_closest_marker("one_database")
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("database_url") == "sqlite"
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(dropped)
        items[:] = [item for item in items if item not in gone]


@pytest.fixture(scope="session", params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = os.environ["RLHF_TEST_DATABASE_URL"]
        assert make_url(url).get_backend_name() == "postgresql", url
        url = worker_database(url)
        reset_postgres(url)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"secret_key": TEST_SECRET, "demo_mode": False}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Argon2id with the least work inside the test process (as Django's test settings
    swap in a fast hasher): a hash at the real cost takes a quarter of a second, and the
    suite makes thousands of users and logins. The app's own processes that tests start
    (``rlhf``, servers, workers) hash at the real cost."""
    from argon2 import PasswordHasher

    from app.auth import passwords

    real = passwords._hasher
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    yield
    passwords._hasher = real


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    # No heartbeat thread writes while a test's job runs (tests of the heartbeat set their
    # own interval): the tests' sessions share one connection (``session_factory``), which is
    # not thread-safe, and a beat interleaving its savepoint with the job's writes threw some
    # of them away (a resumed run's charted steps stopping at 120 of 160) or broke the
    # transaction ("savepoint does not exist").
    return make_settings(database_url=database_url, data_dir=data_dir, job_heartbeat_seconds=3600)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions joined to one outer transaction that is rolled back after the test; their
    commits only release savepoints."""
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield factory
    outer.rollback()
    connection.close()
    # Rolled-back ids are handed out again (SQLite), so a cached report could match another
    # test's data: each test starts with empty agreement and leaderboard caches.
    report_cache.clear()
    leaderboard_cache.clear()


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[FastAPI]:
    """The real app, its request sessions joined to the test's rolled-back transaction."""
    application = create_app(settings)
    application.state.session_factories = {"read": session_factory, "write": session_factory}
    yield application
    application.state.engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture(params=_broker_params())
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.param)


# --- browser tests (tests/browser.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The demo served by `rlhf serve --with-worker`, exactly as `make run` starts it; one for
    every browser test of the session."""
    from tests.processes import rlhf, rlhf_env, serve_with_worker

    tmp = tmp_path_factory.mktemp("browser")
    env = rlhf_env(f"sqlite:///{tmp / 'demo.db'}", tmp / "var", RLHF_DEMO_MODE="1")
    for args in (["db", "upgrade"], ["demo"]):
        result = rlhf(env, *args)
        assert result.returncode == 0, result.stderr
    with serve_with_worker(env) as server:
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One Chromium per test module: Playwright's sync API holds an event loop while it
    runs, which would break the async tests of later modules if it lived for the session."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: object) -> Iterator[object]:
    """A desktop page (1280x800) in a fresh context; fails the test on any script error or
    Content-Security-Policy violation."""
    from tests.browser import DESKTOP, watch_errors

    context = chromium.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page = context.new_page()
    errors = watch_errors(page)
    yield page
    context.close()
    assert errors == [], errors  # no script errors, nothing blocked by the CSP


@pytest.fixture
def phone(chromium: object) -> Iterator[object]:
    """A 390x844 touch page in a fresh context, checked like `page`."""
    from tests.browser import PHONE, watch_errors

    context = chromium.new_context(**PHONE)  # type: ignore[attr-defined]
    page = context.new_page()
    errors = watch_errors(page)
    yield page
    context.close()
    assert errors == [], errors
