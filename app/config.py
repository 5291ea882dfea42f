"""Settings, read once from the environment (prefix ``RLHF_``) and an optional ``.env`` file."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me-rlhf-studio-default"  # noqa: S105 - the value we refuse
EMBEDDED_BROKER_URL = "filesystem://"


class SettingsError(ValueError):
    """Raised when the settings cannot run safely (e.g. a default secret in production)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RLHF_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite:///./var/rlhf.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    broker_url: str = Field(
        default=EMBEDDED_BROKER_URL,
        description="Celery broker: redis://..., amqp://..., or filesystem:// (embedded, in data_dir)",
    )
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    demo_mode: bool = Field(
        default=False,
        description="Allows the default secret and shows demo logins on the login page",
    )
    data_dir: Path = Field(default=Path("./var"), description="Exports, models, embedded broker")

    db_pool_size: int = Field(default=10, ge=1, description="Connections kept per process")
    db_max_overflow: int = Field(default=20, ge=0)
    web_threads: int = Field(
        # Requests do their database work on this many threads per web process, at most. As
        # many as the pool's connections: under load the requests beyond wait their turn in
        # the event loop (cheap) instead of taking turns at the GIL, and each finds a pooled
        # connection instead of opening one (Postgres forks a process for each).
        default=10,
        ge=1,
        le=1000,
        description="Threads per web process that run requests (keep at most db_pool_size)",
    )
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60)
    cookie_secure: bool = Field(default=False, description="Set behind TLS")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Proxies whose X-Forwarded-For is trusted (uvicorn)"
    )
    keep_alive_seconds: int = Field(
        # Longer than the idle timeout of what connects to us (httpx 5 s, aiohttp 15 s,
        # nginx's upstream keepalive_timeout and AWS ALB 60 s, Go 90 s): the client then
        # closes an idle connection first, never the server while a request is on its way.
        default=120,
        ge=1,
        le=3600,  # an hour at most: 120000 is milliseconds typed by mistake
        description="How long uvicorn keeps an idle HTTP connection open",
    )
    max_api_body_bytes: int = Field(
        default=8 * 1024**2, ge=1024, description="Largest JSON API request body (413 above)"
    )
    max_form_body_bytes: int = Field(
        default=4 * 1024**2, ge=1024, description="Largest page form body (413 above)"
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest import file uploaded in the browser"
    )
    model_roots: str = Field(
        default="",
        description="More folders the web form may register models from, separated by "
        "os.pathsep (':'); the data dir's models/ always",
    )
    sqlite_busy_seconds: float = Field(
        default=15, gt=0, description="SQLite: how long a request waits for another writer"
    )
    lease_minutes: int = Field(default=30, ge=1)
    login_max_failures: int = Field(default=5, ge=1, description="per email and address")
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    job_heartbeat_seconds: int = Field(default=30, ge=1)
    broker_visibility_timeout_seconds: int = Field(default=24 * 3600, ge=10)

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Self:
        if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY and not self.demo_mode:
            raise SettingsError(
                "RLHF_SECRET_KEY is left at its default. Set it to a long random value "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                "or set RLHF_DEMO_MODE=1 for a local demo."
            )
        if len(self.secret_key.get_secret_value()) < 16:
            raise SettingsError("RLHF_SECRET_KEY must be at least 16 characters long.")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def model_root_paths(self) -> list[Path]:
        """Where the model register form accepts local folders (design §15)."""
        extra = [Path(p).expanduser() for p in self.model_roots.split(os.pathsep) if p.strip()]
        return [self.data_dir / "models", *extra]

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def job_stale_after(self) -> timedelta:
        """A running job whose heartbeat is older than this has lost its worker."""
        return timedelta(seconds=3 * self.job_heartbeat_seconds)

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
