"""The generation job on a tiny model built here (no download), run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.labeling.models import Completion
from app.models_registry.models import ModelKind, ModelVersion
from tests.helpers import make_project, make_prompt
from tests.lost_worker import WorkerKilled
from workers.runner import run_job

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Labelers rank answers from best to worst.",
    "A reward model learns which answer people prefer.",
] * 20


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model", texts=TEXTS)


def answers(session: Session, prompt_id: int) -> int:
    return session.scalar(select(func.count()).where(Completion.prompt_id == prompt_id)) or 0


def test_fills_each_prompt_to_k_and_a_rerun_adds_nothing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_model: Path
) -> None:
    project = make_project(session, k=4)
    empty = make_prompt(session, project, text="Tell me about foxes", answers=0)
    half = make_prompt(session, project, text="Why rank answers?", answers=2)
    full = make_prompt(session, project, text="Already done", answers=4)
    version = ModelVersion(name="tiny", kind=ModelKind.policy, path=str(tiny_model))
    session.add(version)
    session.flush()
    project.current_policy_id = version.id
    params = {"sampling": {"max_new_tokens": 12, "seed": 1}, "batch_size": 2}
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.succeeded
    )
    session.refresh(job)
    assert [answers(session, p.id) for p in (empty, half, full)] == [4, 4, 4]
    stored = session.scalars(select(Completion).where(Completion.prompt_id == empty.id)).all()
    assert {c.origin for c in stored} == {f"model:{version.id}"}
    assert all(c.model_version_id == version.id and c.sampling_params for c in stored)
    assert job.metrics["prompts_done"] == 2 and job.metrics["tokens"] > 0

    again = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()
    assert (
        run_job(job_id=again.id, session_factory=session_factory, settings=settings)
        == JobStatus.succeeded
    )
    assert [answers(session, p.id) for p in (empty, half, full)] == [4, 4, 4]


def test_a_missing_model_fails_fast_and_stores_nothing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, answers=0)
    job = create_job(
        session=session, kind=kinds.GENERATE, project_id=project.id,
        params={"model": str(tmp_path / "nowhere")},
    )  # fmt: skip
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(job)
    assert "the folder does not exist" in (job.error or "")
    assert answers(session, prompt.id) == 0


def test_a_model_that_is_not_a_causal_lm_is_refused(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    project = make_project(session, k=4)
    make_prompt(session, project, answers=0)
    job = create_job(
        session=session, kind=kinds.GENERATE, project_id=project.id,
        params={"model": str(tmp_path / "vit")},
    )  # fmt: skip
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(job)
    assert "is not a causal language model" in (job.error or "")


def test_no_policy_and_no_model_says_what_to_do(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project = make_project(session, k=4)
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id)
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(job)
    assert "has no current policy" in (job.error or "")


async def test_the_project_page_starts_a_generation_job(client, session: Session) -> None:  # type: ignore[no-untyped-def]
    from app.jobs.models import Job
    from tests.helpers import csrf_token, login, make_admin

    project = make_project(session)
    await login(client, make_admin(session))
    token = await csrf_token(client, f"/admin/projects/{project.id}")
    r = await client.post(f"/admin/projects/{project.id}/generate", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/jobs/")
    job = session.get_one(Job, int(r.headers["location"].rsplit("/", 1)[1]))
    assert (job.kind, job.project_id, job.queue) == ("generate", project.id, "train")


def test_a_worker_killed_mid_job_keeps_its_answers_and_the_retry_completes(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_model: Path
) -> None:
    from datetime import timedelta

    from app.db import utcnow
    from app.jobs.models import Job
    from workers.generate import generate_impl
    from workers.runner import JobContext, recover_lost_jobs

    project = make_project(session, k=4)
    prompts = [make_prompt(session, project, text=f"Question {i}?", answers=0) for i in range(8)]
    params = {
        "model": str(tiny_model),
        "batch_size": 2,
        "sampling": {"max_new_tokens": 8, "seed": 3},
    }
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()

    def dies_after_first_batch(ctx: JobContext) -> None:
        real_progress = ctx.progress

        def progress(fraction: float, message: str = "", **metrics: object) -> None:
            real_progress(fraction, message, **metrics)
            if fraction > 0:
                raise WorkerKilled()

        ctx.progress = progress  # type: ignore[method-assign]
        generate_impl(ctx)

    with pytest.raises(WorkerKilled):
        run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                impls={kinds.GENERATE: dies_after_first_batch})  # fmt: skip
    session.refresh(job)
    assert job.status == JobStatus.running
    kept = [answers(session, p.id) for p in prompts]
    assert kept[:2] == [4, 4] and kept[2:] == [0] * 6  # the first batch was stored

    # Its heartbeat goes stale; a worker's recovery queues it again, and the retry finishes.
    session.get_one(Job, job.id).heartbeat_at = (
        utcnow() - 2 * settings.job_stale_after - timedelta(seconds=1)
    )
    session.commit()

    class Recorder:
        sent: list[int] = []

        def send_task(self, name: str, args: list[int], queue: str) -> None:
            self.sent.extend(args)

    recorder = Recorder()
    assert recover_lost_jobs(
        session_factory=session_factory, settings=settings, celery=recorder
    ) == [job.id]  # type: ignore[arg-type]
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.succeeded
    )
    session.refresh(job)
    assert job.attempts == 2
    assert [answers(session, p.id) for p in prompts] == [4] * 8


@pytest.mark.parametrize(
    ("prompts", "batch_size", "seen"),
    [
        # The demo's four open prompts fit one batch of 8: cut into four, the bar moves.
        (4, 8, [0.0, 0.25, 0.5, 0.75, 1.0]),
        # A job of many prompts keeps its batch size: 10 prompts in batches of 2.
        (10, 2, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ],
)
def test_progress_is_reported_after_each_batch(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    tiny_model: Path, prompts: int, batch_size: int, seen: list[float],
) -> None:  # fmt: skip
    from workers.generate import generate_impl
    from workers.runner import JobContext

    project = make_project(session, k=2)
    for i in range(prompts):
        make_prompt(session, project, text=f"Question {i}?", answers=0)
    params = {
        "model": str(tiny_model), "batch_size": batch_size,
        "sampling": {"max_new_tokens": 4, "seed": 5},
    }  # fmt: skip
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()
    fractions: list[float] = []

    def recording(ctx: JobContext) -> None:
        real_progress = ctx.progress

        def progress(fraction: float, message: str = "", **metrics: object) -> None:
            fractions.append(round(fraction, 4))
            real_progress(fraction, message, **metrics)

        ctx.progress = progress  # type: ignore[method-assign]
        generate_impl(ctx)

    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings,
                     impls={kinds.GENERATE: recording})  # fmt: skip
    assert status == JobStatus.succeeded
    assert fractions == seen
    session.refresh(job)
    assert job.progress_message == f"{prompts} / {prompts} prompts"
