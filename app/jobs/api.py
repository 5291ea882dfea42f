"""``/api/v1/jobs``: job status for scripts that started one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api_errors import ADMIN_ONLY
from app.deps import ApiAdmin, DbSession
from app.jobs.schemas import JobOut, JobSummaryOut
from app.jobs.service import get_job, list_jobs

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ADMIN_ONLY)
MAX_LIMIT = 500


@router.get("", response_model=list[JobSummaryOut])
def api_list_jobs(
    session: DbSession,
    user: ApiAdmin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="The newest this many")] = 50,
) -> list[JobSummaryOut]:
    return [JobSummaryOut.model_validate(j) for j in list_jobs(session=session, limit=limit)]


@router.get("/{job_id}", response_model=JobOut)
def api_get_job(job_id: int, session: DbSession, user: ApiAdmin) -> JobOut:
    return JobOut.model_validate(get_job(session=session, job_id=job_id))
