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
    assert "Loss 0.25" in metrics
    assert "Counts train: 12 validation: 1" in metrics
    assert "Sizes 2, 4" in metrics
    assert "Nested by_k: 4: 3" in metrics
    assert "{" not in metrics and "[" not in metrics


async def test_a_judge_or_score_job_says_what_it_left_out_of_judging_or_scoring(
    client: httpx.AsyncClient, session: Session
) -> None:
    await login(client, make_admin(session))
    for kind, words in ((kinds.JUDGE, ("judging", "judged")), (kinds.SCORE, ("scoring", "scored"))):
        job = create_job(session=session, kind=kind)
        job.status = JobStatus.succeeded
        job.metrics = {"left_out": 2, "left_out_reasons": {"unreadable reply after a retry": 2}}
        session.flush()
        text = visible_text((await client.get(f"/admin/jobs/{job.id}")).text)
        assert f"Left out of {words[0]} (2): 2 unreadable reply after a retry." in text
        assert f"The job {words[1]} the rest" in text and "training" not in text.lower()
    # a job that failed with everything left out did nothing with "the rest"
    failed = create_job(session=session, kind=kinds.JUDGE)
    failed.status, failed.error = JobStatus.failed, "None of the 2 prompts got a ranking."
    failed.metrics = {"left_out": 2, "left_out_reasons": {"unreadable reply after a retry": 2}}
    session.flush()
    text = visible_text((await client.get(f"/admin/jobs/{failed.id}")).text)
    assert "Left out of judging (2): 2 unreadable reply after a retry." in text
    assert "the rest" not in text


async def test_nothing_left_out_means_no_note(client: httpx.AsyncClient, session: Session) -> None:
    job = create_job(session=session, kind=kinds.TRAIN_SFT)
    job.status = JobStatus.succeeded
    job.metrics = {"left_out": 0, "left_out_reasons": {}, "loss": 1.5}
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    assert "Left out" not in page and 'role="note"' not in page
    assert "left_out" not in page and "Loss" in page


def test_keys_read_as_words() -> None:
    from app.jobs.labels import kind_label, metric_label, words

    assert metric_label("kl_k3") == "KL (k3)"
    assert metric_label("eos_rate") == "EOS rate"
    assert metric_label("prompts_total") == "Prompts to answer"
    assert metric_label("heldout_score") == "Held-out score"
    # keys no job writes yet: words, the acronyms kept
    assert words("val_loss") == "Validation loss"
    assert words("eval_eos_rate") == "Validation EOS rate"
    assert words("rm_lr") == "RM LR"
    assert words("sft_kl_penalty") == "SFT KL penalty"
    assert words("heldout_entropy") == "Held-out entropy"
    assert words("Tokens") == "Tokens" and words("") == ""
    assert kind_label("train_ppo") == "PPO training" and kind_label("train_dpo") == "DPO training"
    assert kind_label("train_sft_kl") == "Train SFT KL"  # a kind with no label reads as words


async def test_a_training_jobs_figures_and_outputs_are_words_and_links(
    client: httpx.AsyncClient, session: Session
) -> None:
    job = create_job(session=session, kind=kinds.TRAIN_PPO, params={"steps": 20, "eval_every": 5})
    job.status = JobStatus.succeeded
    job.metrics = {"heldout_score": 0.5, "reward_model_id": 7, "train_prompts": 1234}
    job.artifacts = {"export_id": 3, "dataset": "/data/training/job-1/prompts",
                     "model_version_id": 9, "model": "/data/models/ppo"}  # fmt: skip
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    text = visible_text(page)
    assert f"Job #{job.id}: PPO training" in text
    assert "Held-out score 0.5" in text and "Training prompts 1,234" in text
    assert '<a href="/admin/models/7">version #7</a>' in page  # the reward model
    assert "Dataset snapshot export #3" in text and 'href="/admin/exports/3"' in page
    assert "Model version #9" in text and 'href="/admin/models/9"' in page
    assert "Model folder /data/models/ppo" in text
    for key in ("heldout_score", "reward_model_id", "export_id", "model_version_id"):
        assert key not in text


async def test_an_export_jobs_page_links_to_the_export_its_files_and_counts(
    client: httpx.AsyncClient, session: Session
) -> None:
    from app.exports.models import Export
    from tests.helpers import make_project

    project = make_project(session)
    job = create_job(session=session, kind=kinds.EXPORT, project_id=project.id)
    export = Export(
        project_id=project.id, job_id=job.id, kind="pairwise", format="jsonl",
        counts={"train": 1275, "validation": 31, "prompts": 40}, directory="/data/exports/x",
        files={"train.jsonl": "ab", "validation.jsonl": "cd", "manifest.json": "", "README.md": ""},
    )  # fmt: skip
    session.add(export)
    session.flush()
    job.status = JobStatus.succeeded
    job.artifacts = {"export_id": export.id, "directory": "/data/exports/x",
                     "counts": {"train": 1275, "validation": 31}}  # fmt: skip
    session.flush()
    await login(client, make_admin(session))
    page = (await client.get(f"/admin/jobs/{job.id}")).text
    text = visible_text(page)
    assert f'<a href="/admin/exports/{export.id}">export #{export.id}</a>' in page
    assert "pairwise rows, jsonl, from 40 prompts" in text
    assert "Split Rows Train 1,275 Validation 31 Total 1,306" in text
    for name in ("README.md", "manifest.json", "train.jsonl", "validation.jsonl"):
        assert f'href="/admin/exports/{export.id}/files/{name}" download>{name}</a>' in page
    assert "{&#39;train&#39;" not in page and "{'train'" not in page and "export_id" not in text


def test_the_curves_note_says_what_is_true_of_the_kind() -> None:
    from app.jobs.models import Job
    from app.jobs.views import curves_note

    validated = {"score": {"train": [(1, 0.1)], "validation": [(0, 0.0)]}}
    ppo = Job(
        kind=kinds.TRAIN_PPO, status=JobStatus.succeeded, params={"steps": 20, "eval_every": 5}
    )
    assert curves_note(ppo, validated) == (
        "Logged after every step. Validation: answers to held-out prompts, sampled and scored "
        "before the first step, every 5 steps and after the last."
    )
    ppo.params = {"steps": 20, "eval_every": 50}  # only before the first step and after the last
    assert "first step and after the last" in curves_note(ppo, validated)
    assert curves_note(ppo, {"score": {"train": [(1, 0.1)]}}) == "Logged after every step."
    rm = Job(kind=kinds.TRAIN_RM, status=JobStatus.running, params={"epochs": 3.0})
    assert curves_note(rm, validated) == (
        "Logged every few steps; they grow as the job runs. Validation is measured after each "
        "epoch."
    )


def test_a_chart_of_one_step_stands_its_points_in_the_middle() -> None:
    from app.web.charts import metric_chart

    chart = metric_chart("margin", {"validation": [(5, -0.8)]}, title="Margin")
    (line,) = chart.series
    middle = chart.left + (chart.width - chart.left - chart.right) / 2
    assert chart.title == "Margin" and line.dots == [(middle, line.dots[0][1])]
    assert chart.ticks == [(middle, "5")]
    several = metric_chart("loss", {"train": [(1, 0.9), (5, 0.7)], "validation": [(5, 1.2)]})
    assert several.title == "loss"  # no title given: the key
    assert [s.dots[-1][0] for s in several.series] == [several.width - several.right] * 2
