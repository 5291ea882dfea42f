from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.jobs.models import JobStatus


class JobOut(BaseModel):
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
    error_detail: str | None  # the traceback of an unexpected error, or of a JobFailure
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
