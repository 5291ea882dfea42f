"""The job page (design §10): a failed job's message in plain words with its traceback folded
below, and what a training job left out of its data, in words above the charts."""

from __future__ import annotations

import html
import re

import httpx
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.errors import JobFailure
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_job
from tests.helpers import login, make_admin, visible_text
from workers.runner import JobContext, run_job


class TrainingStopped(JobFailure, RuntimeError):
    """As workers/train.py's TrainingError: raised to tell the user what to change."""


def _failed_job(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, exc: Exception
) -> Job:
    job = create_job(session=session, kind=kinds.SELFCHECK)
    session.commit()

    def fails(ctx: JobContext) -> None:
        raise exc

    status = run_job(
        job_id=job.id, session_factory=session_factory, settings=settings,
        impls={kinds.SELFCHECK: fails},
    )  # fmt: skip
    assert status == JobStatus.failed
    session.refresh(job)
    return job


def _folded_traceback(page: str) -> str:
    """The text of the folded "Technical details" block, which must come after the message."""
    match = re.search(
        r'<details class="job-error-detail">\s*<summary>Technical details</summary>\s*'
        r'<pre class="code">(.*?)</pre>\s*</details>',
        page,
        re.S,
    )
    assert match is not None, "no folded traceback"
    assert " open" not in page[match.start() : match.start() + 40]  # folded: closed at first
    return match.group(1)


async def test_a_failed_job_shows_its_own_message_and_folds_the_traceback(
    client: httpx.AsyncClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    message = "The project has no rankings to train on: rank some answers first (<3 is not 3)."
    job = _failed_job(session, session_factory, settings, TrainingStopped(message))
    await login(client, make_admin(session))
    for headers in ({}, {"HX-Request": "true"}):  # the page and its polled fragment
        page = (await client.get(f"/admin/jobs/{job.id}", headers=headers)).text
        alert = page[page.index('<div class="alert alert-error') :]
        first = visible_text(alert.split("<details")[0])
        assert first == "Failed: " + message.replace("<", "&lt;")  # escaped, as it is
        assert "TrainingStopped" not in first and "Traceback" not in first
        folded = _folded_traceback(page)
        assert folded.startswith("Traceback (most recent call last):")
        assert "TrainingStopped" in folded


async def test_an_unexpected_error_says_so_in_a_plain_sentence(
    client: httpx.AsyncClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    job = _failed_job(session, session_factory, settings, ZeroDivisionError("division by zero"))
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    text = visible_text(page)
    assert (
        "Failed: The job stopped on an unexpected error: ZeroDivisionError: division by zero"
        in text
    )
    folded = html.unescape(_folded_traceback(page))
    assert folded.startswith("Traceback") and 'File "' in folded
    assert folded.endswith("ZeroDivisionError: division by zero\n")


async def test_a_job_without_a_traceback_shows_its_message_alone(
    client: httpx.AsyncClient, session: Session
) -> None:
    job = create_job(session=session, kind=kinds.SELFCHECK)
    job.status, job.error = JobStatus.failed, "The job lost its worker 3 times; giving up."
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert "Failed: The job lost its worker 3 times; giving up." in visible_text(page)
    assert "Technical details" not in page


async def test_the_page_says_what_the_job_left_out_of_its_data(
    client: httpx.AsyncClient, session: Session
) -> None:
    job = create_job(session=session, kind=kinds.TRAIN_RM)
    job.status = JobStatus.succeeded
    job.metrics = {
        "left_out": 4,
        "left_out_reasons": {
            "answer longer than max_length (512 tokens)": 3,
            "ranking of <b>import:a&b.jsonl</b>": 1,
        },
        "data_warnings": [
            "Only 1 validation row: validation figures mean little; add data or lower "
            "--validation-ratio.",
            "Labeler <script>alert(1)</script> ranked alone.",
        ],
        "loss": 0.25,
        "counts": {"train": 12, "validation": 1},
        "sizes": [2, 4],
        "nested": {"by_k": {"4": 3}},
    }
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    text = visible_text(page)
    assert (
        "Left out of training (4): 3 answer longer than max_length (512 tokens); "
        "1 ranking of &lt;b&gt;import:a&amp;b.jsonl&lt;/b&gt;."
    ) in text
    assert "Warning: Only 1 validation row: validation figures mean little;" in text
    assert "Warning: Labeler &lt;script&gt;alert(1)&lt;/script&gt; ranked alone." in text
    assert "<script>alert" not in page and "<b>import" not in page
    # Near the status, above the facts, charts and the metrics list.
    assert (
        page.index("job-status-line")
        < page.index("Left out of training (4)")
        < page.index("Created")
    )
    assert page.index("Only 1 validation row") < page.index(">Metrics<")
    assert page.count('role="note"') == 2  # the left-out note and the warnings
    # The metrics list: figures as they are, other values readable, the notes' keys gone.
    metrics = visible_text(page[page.index(">Metrics<") :].split("</dl>")[0])
    for key in ("left_out", "left_out_reasons", "data_warnings"):
        assert key not in metrics
    assert "loss 0.25" in metrics
    assert "counts train: 12 validation: 1" in metrics
    assert "sizes 2, 4" in metrics
    assert "nested by_k: 4: 3" in metrics
    assert "{" not in metrics and "[" not in metrics


async def test_nothing_left_out_means_no_note(client: httpx.AsyncClient, session: Session) -> None:
    job = create_job(session=session, kind=kinds.TRAIN_SFT)
    job.status = JobStatus.succeeded
    job.metrics = {"left_out": 0, "left_out_reasons": {}, "loss": 1.5}
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert "Left out" not in page and 'role="note"' not in page
    assert "left_out" not in page and "loss" in page
