"""The self-check job: proves a worker can read and write the database, write to the data
directory and run the ML stack. Param ``delay``: seconds to pause between checks
(so progress can be watched), both small by default."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from sqlalchemy import func, select

from app import __version__
from app.auth.models import User
from app.db import session_scope, utcnow
from app.projects.models import Project
from workers.runner import JobContext

MAX_DELAY_SECONDS = 60.0


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def selfcheck_impl(ctx: JobContext) -> None:
    delay = min(float(ctx.params.get("delay", 0.2)), MAX_DELAY_SECONDS)
    ctx.log(f"self-check on {platform.node()} (pid {os.getpid()})")

    with session_scope(ctx.session_factory) as session:
        users = session.scalar(select(func.count()).select_from(User)) or 0
        projects = session.scalar(select(func.count()).select_from(Project)) or 0
    ctx.progress(0.25, "database reachable", users=users, projects=projects)
    time.sleep(delay)

    import torch  # the worker's ML stack; a broken install shows up here, not in a training job

    product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert float(product.sum()) == 8.0, "torch computed a wrong matrix product"
    ctx.progress(0.5, f"torch {torch.__version__} works", torch=torch.__version__)
    time.sleep(delay)

    report = {
        "job_id": ctx.job_id,
        "app_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "users": users,
        "projects": projects,
        "checked_at": utcnow().isoformat(),
    }
    path = ctx.settings.data_dir / "selfcheck" / f"job-{ctx.job_id}.json"
    _write_atomically(path, json.dumps(report, indent=2))
    ctx.set_artifacts(report=str(path))
    ctx.progress(0.75, "data directory writable")
    time.sleep(delay)
    ctx.progress(1.0, "all checks passed")
    ctx.log("all checks passed")
