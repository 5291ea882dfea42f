"""`rlhf score` and `rlhf judge`: AI feedback (design §14), each a job on the `train` queue.

`rlhf score` stores a reward model's score of every answer (what `queue_order=uncertain`
reads); `rlhf judge` ranks each prompt's answers with an LLM endpoint or a reward model and
stores the rankings as comparisons by `ai:<name>`. Bad input is refused before anything is
queued."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.cli.common import db_session, fail, settings
from app.cli.jobs import echo_data_report, wait_for_job

judge_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)

ProjectArg = Annotated[str, typer.Argument(help="Project name or id")]
QueueOpt = Annotated[
    str | None,
    typer.Option("--queue", help="Send the job to one training machine's own queue (train-NAME)"),
]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job, with progress")]
BatchOpt = Annotated[int | None, typer.Option(help="Answers per reward-model forward pass")]
MaxLenOpt = Annotated[
    int | None,
    typer.Option(help="Tokens of prompt and answer the reward model reads (prompts cut first)"),
]
LongOpt = Annotated[
    str | None,
    typer.Option(
        "--long-answers",
        help="An answer longer than --max-length: truncate (cut from the right, the default) "
        "or drop (leave it out, counted)",
    ),
]


def _start(kind: str, project: str, raw: dict[str, Any], queue: str | None, wait: bool) -> None:
    from app.jobs import kinds
    from app.jobs.judging import JudgeError, judge_params, score_params
    from app.jobs.service import JobError, commit_and_enqueue, create_job
    from app.projects.service import get_project
    from workers.celery_app import create_celery_app

    with db_session() as session:
        target = get_project(session=session, ref=project)
        try:
            check = score_params if kind == kinds.SCORE else judge_params
            params = check(session=session, raw={k: v for k, v in raw.items() if v is not None})
            job = create_job(
                session=session, kind=kind, project_id=target.id, params=params, queue=queue
            )
        except (JudgeError, JobError) as exc:
            fail(str(exc))
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if not wait:
        return
    failed = None
    try:
        wait_for_job(job_id)
    except typer.Exit as exc:  # the job failed: its counts are still worth showing
        failed = exc
    from app.jobs.service import get_job

    with db_session() as session:
        metrics = dict(get_job(session=session, job_id=job_id).metrics)
    echo_data_report(metrics)
    if kind == kinds.SCORE and "answers_to_score" in metrics:
        typer.echo(
            f"scored {metrics.get('answers_scored', 0):,} answers, skipped "
            f"{metrics.get('answers_skipped', 0):,} already scored, left out "
            f"{metrics.get('left_out', 0):,}"
        )
    elif "judge" in metrics:
        typer.echo(
            f"judged {metrics.get('prompts_judged', 0):,} prompts as {metrics.get('judge')}, "
            f"skipped {metrics.get('prompts_skipped', 0):,} already judged, left out "
            f"{metrics.get('left_out', 0):,}"
        )
    if failed is not None:
        raise failed


@judge_app.command()
def score(
    project: ProjectArg,
    reward: Annotated[str, typer.Option("--reward", help="A registered reward model (id or name)")],
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = None,
    long_answers: LongOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Store a reward model's score of every answer of PROJECT (a job).

    Answers this version scored already are skipped; each prompt's score gap (what
    queue_order=uncertain serves by) is set from the scores of its served answers."""
    from app.jobs import kinds

    raw = {"reward": reward, "batch_size": batch_size, "max_length": max_length,
           "long_answers": long_answers}  # fmt: skip
    _start(kinds.SCORE, project, raw, queue, wait)


@judge_app.command()
def judge(
    project: ProjectArg,
    endpoint: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible server (vLLM, TGI, llama.cpp) to judge with"),
    ] = None,
    endpoint_model: Annotated[
        str | None, typer.Option(help="The model name the endpoint serves")
    ] = None,
    chat: Annotated[
        bool, typer.Option("--chat", help="Use /v1/chat/completions (else /v1/completions)")
    ] = False,
    reward: Annotated[
        str | None,
        typer.Option("--reward", help="Judge with a registered reward model (id or name)"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="The judge's name: its rankings are by ai:NAME (default: the endpoint's model "
            "or the reward model's name)"
        ),
    ] = None,
    tie_tolerance: Annotated[
        float | None,
        typer.Option(
            help="--reward: answers whose scores are within this of the next better one tie "
            "(default 0.1: a 52.5:47.5 preference)"
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="--endpoint: the longest reply, in tokens (default 256)")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="--endpoint: sampling temperature (default 0: greedy)")
    ] = None,
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = None,
    long_answers: LongOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Rank each prompt's answers with an AI judge (a job): an endpoint or a reward model.

    The rankings are stored as comparisons by ai:NAME, never counted as a person's; prompts
    this judge ranked already are skipped."""
    from app.jobs import kinds

    raw = {"endpoint_url": endpoint, "endpoint_model": endpoint_model, "chat": chat,
           "reward": reward, "name": name, "tie_tolerance": tie_tolerance,
           "max_tokens": max_tokens, "temperature": temperature, "batch_size": batch_size,
           "max_length": max_length, "long_answers": long_answers}  # fmt: skip
    _start(kinds.JUDGE, project, raw, queue, wait)
