"""The score job (``rlhf score PROJECT --reward VERSION``, design §14): a registered reward
model's score of every answer of the project, for ``queue_order="uncertain"``.

Answers this version scored already are skipped (a rerun, or a worker lost mid-job, only
scores what is missing); the rest are scored in batches, each stored and committed on its
own, with progress after each. An answer too long for the reward model follows the
long-input policy (left out and counted, or cut). Then every prompt's ``score_gap`` is set
from the scores of the answers its labelers are served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from app.db import session_scope
from app.jobs.errors import JobFailure
from app.jobs.judging import ScoreOptions, reward_model
from app.labeling.models import Completion, Prompt
from app.labeling.scores import refresh_score_gaps, scored_completion_ids, store_scores
from app.models_registry.models import ModelVersion
from app.projects.models import Project
from workers.ml.long_inputs import LeftOut, nothing_left_message
from workers.ml.scoring import Answer, AnswerScorer
from workers.runner import JobContext


class ScoreError(JobFailure, RuntimeError):
    """The job cannot score (not a reward model, nothing that fits); said as it is."""


@dataclass
class ScoreCounts:
    scored: int = 0
    left_out: LeftOut = field(default_factory=LeftOut)
    truncated: int = 0


def load_reward_version(ctx: JobContext, ref: str) -> ModelVersion:
    """The job's reward model, checked again in the worker (it may have gone since)."""
    with session_scope(ctx.session_factory) as session:
        version = reward_model(session=session, ref=ref)
        session.expunge(version)
    return version


def load_scorer(version: ModelVersion, options: ScoreOptions) -> AnswerScorer:
    from workers.ml.reward_model import RewardModelError

    try:
        return AnswerScorer(
            version.path, max_length=options.max_length, batch_size=options.batch_size,
            long_answers=options.long_answers,
        )  # fmt: skip
    except RewardModelError as exc:
        raise ScoreError(f"Model version {version.name!r} cannot score answers: {exc}") from exc


def score_answers(
    ctx: JobContext, scorer: AnswerScorer, *, version_id: int, completion_ids: Sequence[int],
    batch_size: int, on_batch: Callable[[int], None],
) -> ScoreCounts:  # fmt: skip
    """Score and store these answers, a batch at a time (``on_batch(done)`` after each
    stored batch); returns what was scored, left out and cut."""
    counts, done = ScoreCounts(), 0
    for start in range(0, len(completion_ids), batch_size):
        batch = list(completion_ids[start : start + batch_size])
        with session_scope(ctx.read_session_factory()) as session:
            answers = [
                Answer(key=cid, prompt=messages if messages is not None else prompt_text, text=text)
                for cid, text, prompt_text, messages in session.execute(
                    select(Completion.id, Completion.text, Prompt.text, Prompt.messages)
                    .join(Prompt, Prompt.id == Completion.prompt_id)
                    .where(Completion.id.in_(batch))
                    .order_by(Completion.id)
                )
            ]
        kept, left_out, cut = scorer.fit(answers)
        scores = scorer(kept)
        with session_scope(ctx.session_factory) as session:
            counts.scored += store_scores(
                session=session, model_version_id=version_id, scores=scores
            )
        counts.left_out.update(left_out)
        counts.truncated += cut
        done += len(batch)
        on_batch(done)
    return counts


def score_impl(ctx: JobContext) -> None:
    options = ScoreOptions.from_dict(ctx.params)  # JudgeError: the job fails with the message
    version = load_reward_version(ctx, options.reward)
    with session_scope(ctx.session_factory) as session:
        project = session.get_one(Project, ctx.project_id)
        session.expunge(project)
        answer_ids = list(
            session.scalars(
                select(Completion.id)
                .join(Prompt, Prompt.id == Completion.prompt_id)
                .where(Prompt.project_id == project.id)
                .order_by(Completion.id)
            )
        )
        done = scored_completion_ids(session=session, project=project, model_version_id=version.id)
    todo = [cid for cid in answer_ids if cid not in done]
    skipped = len(answer_ids) - len(todo)
    ctx.log(
        f"scoring with {version.name!r} (version {version.id}): {len(todo):,} answers to "
        f"score, {skipped:,} scored by it already"
    )
    ctx.progress(
        0.0, f"0 / {len(todo):,} answers", reward_model_id=version.id,
        answers_to_score=len(todo), answers_skipped=skipped, answers_scored=0,
    )  # fmt: skip
    counts = ScoreCounts()
    if todo:
        scorer = load_scorer(version, options)

        def on_batch(n: int) -> None:
            ctx.progress(0.98 * n / len(todo), f"{n:,} / {len(todo):,} answers")

        counts = score_answers(
            ctx, scorer, version_id=version.id, completion_ids=todo,
            batch_size=options.batch_size, on_batch=on_batch,
        )  # fmt: skip
        if counts.left_out and counts.left_out.total == len(todo):
            ctx.progress(0.98, "nothing scored", **counts.left_out.metrics())
            raise ScoreError(
                nothing_left_message(
                    what="answers to score",
                    total=len(todo),
                    max_length=scorer.max_length,
                    context=None,
                    left_out=counts.left_out,
                )
            )
    with session_scope(ctx.session_factory) as session:
        project = session.get_one(Project, ctx.project_id)
        gaps = refresh_score_gaps(session=session, project=project, model_version_id=version.id)
    said = f"{counts.scored:,} answers scored, {skipped:,} already scored (skipped)"
    if counts.left_out:
        said += f", {counts.left_out.total:,} left out ({counts.left_out.describe()})"
    if counts.truncated:
        said += f", {counts.truncated:,} cut to fit"
    ctx.log(f"done: {said}; {gaps:,} prompts have a score gap")
    ctx.progress(
        1.0, said, answers_scored=counts.scored, score_gaps=gaps,
        **({"truncated": counts.truncated} if counts.truncated else {}),
        **counts.left_out.metrics(),
    )  # fmt: skip
