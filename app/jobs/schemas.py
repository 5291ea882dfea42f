from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs.models import JobStatus


class JobSummaryOut(BaseModel):
    """A job in a list: everything but the traceback of a failure (up to 50k characters)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: JobStatus
    project_id: int | None
    params: dict[str, Any]
    progress: float
    progress_message: str
    metrics: dict[str, Any]
    artifacts: dict[str, Any]
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobOut(JobSummaryOut):
    """One job, with the traceback of a failure (``error`` says it in plain words)."""

    error_detail: str | None
