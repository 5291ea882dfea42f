"""The judge job (``rlhf judge``, design §14): an AI's ranking of each prompt's answers,
stored as a comparison by ``ai:<name>``.

For every prompt with K answers that this judge has not ranked yet, the judge sees the K
answers labelers are served (``served_answer_ids``) in a random order seeded by the prompt
and the judge (stored as the comparison's ``displayed_completion_ids``) and ranks them:

- an OpenAI-compatible endpoint (``workers/ml/judging.py``): the job's first request checks
  the endpoint, so a wrong URL or model fails the job at once with the server's answer; later,
  a failed request leaves its prompt out (counted), and ``MAX_FAILURES_IN_A_ROW`` of them
  stop the job. An unparsable reply is asked again once, then its prompt is left out (a few
  such replies are quoted in the log);
- a registered reward model: ranked by score, close scores tied. Scores this version stored
  already (``rlhf score``) are reused, missing ones scored and stored as ``rlhf score`` does.

The comparisons have no labeler and no assignment: they never take a labeler's overlap slot
nor count as a person's. Each prompt's ranking is committed on its own (a batch of them for
the reward model), so a cancelled or lost job keeps what it judged and a rerun skips it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import session_scope
from app.jobs.errors import JobFailure
from app.jobs.judging import JudgeOptions, ScoreOptions, judge_params
from app.labeling.models import Comparison, Completion, CompletionScore, Prompt
from app.labeling.scores import refresh_score_gaps, served_answer_ids
from app.projects.models import Project
from workers.ml.long_inputs import LeftOut
from workers.runner import JobContext
from workers.score import load_reward_version, load_scorer, score_answers

#: this many failed requests in a row: the endpoint is gone, not one prompt unlucky
MAX_FAILURES_IN_A_ROW: Final = 5
#: unparsable replies quoted in the log (escaped, cut), so one can see what the model says
EXAMPLES_LOGGED: Final = 3
EXAMPLE_CHARS: Final = 300
#: prompts ranked by the reward model stored per transaction
STORE_BATCH: Final = 100
UNPARSABLE: Final = "prompts whose judge's reply gave no readable ranking, even after a reminder"
FAILED: Final = "prompts whose request to the endpoint failed"
UNSCORED: Final = "prompts with an answer the reward model could not score"
ADVICE: Final = {
    UNPARSABLE: "The judge's replies must end with a line like 'Ranking: B > A = C'; the job "
    "log quotes some of them. Try a model that follows instructions better, or --chat for "
    "a chat model.",
    UNSCORED: "Their answers are longer than the reward model reads: use --long-answers "
    "truncate, or a larger --max-length.",
    FAILED: "See the job log for the endpoint's errors.",
}


class JudgeJobError(JobFailure, RuntimeError):
    """The job cannot judge (no answers, an endpoint that does not answer); said as it is."""


@dataclass
class Tally:
    judged: int = 0
    already: int = 0  # judged meanwhile by another run of the same judge
    left_out: LeftOut = field(default_factory=LeftOut)


@dataclass(frozen=True)
class Task:
    prompt_id: int
    served: list[int]  # the K answers labelers are served, in id order


def _tasks(ctx: JobContext, project: Project, labeler: str) -> tuple[list[Task], int, int]:
    """The prompts to judge, how many this judge ranked already, and how many have K answers."""
    with session_scope(ctx.read_session_factory()) as session:
        answers: dict[int, list[int]] = {}
        for prompt_id, completion_id in session.execute(
            select(Completion.prompt_id, Completion.id)
            .join(Prompt, Prompt.id == Completion.prompt_id)
            .where(Prompt.project_id == project.id)
        ):
            answers.setdefault(prompt_id, []).append(completion_id)
        judged = set(
            session.scalars(
                select(Comparison.prompt_id)
                .join(Prompt, Prompt.id == Comparison.prompt_id)
                .where(Prompt.project_id == project.id, Comparison.labeler_external == labeler)
            )
        )
    ready = {pid: ids for pid, ids in answers.items() if len(ids) >= project.k}
    tasks = [
        Task(pid, sorted(served_answer_ids(pid, ids, project.k)))
        for pid, ids in sorted(ready.items())
        if pid not in judged
    ]
    return tasks, len(ready) - len(tasks), len(ready)


def _store(
    ctx: JobContext, labeler: str, rows: list[tuple[int, list[int], list[list[int]]]]
) -> int:
    """Store (prompt id, ids as shown, ranking) rows as this judge's comparisons; how many
    were new. A prompt another run of the same judge ranked meanwhile is left as it is."""

    def add(session: Any, batch: Iterable[tuple[int, list[int], list[list[int]]]]) -> int:
        batch = list(batch)
        taken = set(
            session.scalars(
                select(Comparison.prompt_id).where(
                    Comparison.labeler_external == labeler,
                    Comparison.prompt_id.in_([row[0] for row in batch]),
                )
            )
        )
        new = [
            Comparison(
                prompt_id=prompt_id,
                labeler_external=labeler,
                displayed_completion_ids=shown,
                ranking=ranking,
                not_rankable=False,
            )
            for prompt_id, shown, ranking in batch
            if prompt_id not in taken
        ]
        session.add_all(new)
        session.flush()
        return len(new)

    if not rows:
        return 0
    try:
        with session_scope(ctx.session_factory) as session:
            return add(session, rows)
    except IntegrityError:  # a parallel run of the same judge won a race: one at a time
        stored = 0
        for row in rows:
            try:
                with session_scope(ctx.session_factory) as session:
                    stored += add(session, [row])
            except IntegrityError:
                continue
        return stored


def _texts(ctx: JobContext, task: Task) -> tuple[str, dict[int, str]]:
    with session_scope(ctx.read_session_factory()) as session:
        question = session.scalar(select(Prompt.text).where(Prompt.id == task.prompt_id)) or ""
        texts = dict(
            session.execute(
                select(Completion.id, Completion.text).where(Completion.id.in_(task.served))
            ).all()
        )
    return question, texts


def _judge_with_endpoint(
    ctx: JobContext, options: JudgeOptions, tasks: list[Task], report: Any
) -> Tally:
    from workers.ml.judging import EndpointJudge, display_order
    from workers.ml.openai_backend import BackendError, OpenAIBackend

    try:
        backend = OpenAIBackend.from_params(options.endpoint or {})
    except BackendError as exc:
        raise JudgeJobError(str(exc)) from exc
    judge = EndpointJudge(backend, max_tokens=options.max_tokens, temperature=options.temperature)
    path = "/v1/chat/completions" if backend.chat else "/v1/completions"
    ctx.log(f"judging with {backend.model} at {backend.base_url}{path}")
    tally, failures_in_a_row, examples = Tally(), 0, 0
    for n, task in enumerate(tasks, start=1):
        question, texts = _texts(ctx, task)
        shown = display_order(task.served, prompt_id=task.prompt_id, judge=options.labeler)
        try:
            verdict = judge.rank(question, [texts[cid] for cid in shown])
        except BackendError as exc:
            if judge.answered == 0:
                raise JudgeJobError(
                    f"The judge endpoint did not answer: {exc}. Check --endpoint (is the server "
                    "up?) and --endpoint-model; nothing was judged."
                ) from exc
            failures_in_a_row += 1
            tally.left_out.add(FAILED)
            ctx.log(f"prompt {task.prompt_id} left out: {exc}")
            if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                report(tally, judge, n / len(tasks))
                raise JudgeJobError(
                    f"The judge endpoint failed {failures_in_a_row} prompts in a row (the last: "
                    f"{exc}); stopped. The {tally.judged:,} rankings stored are kept, and a "
                    "rerun goes on from there."
                ) from exc
            report(tally, judge, n / len(tasks))
            continue
        failures_in_a_row = 0
        if verdict.ranking is None:
            tally.left_out.add(UNPARSABLE)
            if examples < EXAMPLES_LOGGED:
                examples += 1
                quoted = " / then: ".join(repr(reply[:EXAMPLE_CHARS]) for reply in verdict.replies)
                ctx.log(f"prompt {task.prompt_id}: no readable ranking in the replies {quoted}")
        else:
            ranking = [[shown[i] for i in group] for group in verdict.ranking]
            stored = _store(ctx, options.labeler, [(task.prompt_id, shown, ranking)])
            tally.judged += stored
            tally.already += 1 - stored
        report(tally, judge, n / len(tasks))
    return tally


def _scores(ctx: JobContext, version_id: int, ids: list[int]) -> dict[int, float]:
    found: dict[int, float] = {}
    with session_scope(ctx.read_session_factory()) as session:
        for start in range(0, len(ids), 1000):
            found.update(
                session.execute(
                    select(CompletionScore.completion_id, CompletionScore.score).where(
                        CompletionScore.model_version_id == version_id,
                        CompletionScore.completion_id.in_(ids[start : start + 1000]),
                    )
                ).all()
            )
    return found


def _judge_with_reward_model(
    ctx: JobContext, options: JudgeOptions, tasks: list[Task], report: Any
) -> Tally:
    from workers.ml.judging import display_order, rank_by_score

    assert options.reward is not None
    version = load_reward_version(ctx, options.reward)
    needed = sorted({cid for task in tasks for cid in task.served})
    scores = _scores(ctx, version.id, needed)
    missing = [cid for cid in needed if cid not in scores]
    ctx.log(
        f"judging with the reward model {version.name!r} (version {version.id}), ties within "
        f"{options.tie_tolerance:g}: {len(needed) - len(missing):,} stored scores reused, "
        f"{len(missing):,} answers to score"
    )
    ctx.progress(0.0, "scoring", scores_reused=len(needed) - len(missing))
    tally = Tally()
    if missing:
        score_options = ScoreOptions(
            reward=str(version.id), batch_size=options.batch_size, max_length=options.max_length,
            long_answers=options.long_answers,
        )  # fmt: skip
        scorer = load_scorer(version, score_options)
        counts = score_answers(
            ctx, scorer, version_id=version.id, completion_ids=missing,
            batch_size=options.batch_size,
            on_batch=lambda n: ctx.progress(0.8 * n / len(missing), f"{n:,} / {len(missing):,} answers scored"),
        )  # fmt: skip
        if counts.left_out:
            ctx.log(f"answers left out of scoring: {counts.left_out.describe()}")
        scores.update(_scores(ctx, version.id, missing))
        with session_scope(ctx.session_factory) as session:
            project = session.get_one(Project, ctx.project_id)
            refresh_score_gaps(session=session, project=project, model_version_id=version.id)
    for start in range(0, len(tasks), STORE_BATCH):
        rows = []
        for task in tasks[start : start + STORE_BATCH]:
            if any(cid not in scores for cid in task.served):
                tally.left_out.add(UNSCORED)
                continue
            shown = display_order(task.served, prompt_id=task.prompt_id, judge=options.labeler)
            ranking = rank_by_score([(cid, scores[cid]) for cid in shown], options.tie_tolerance)
            rows.append((task.prompt_id, shown, ranking))
        stored = _store(ctx, options.labeler, rows)
        tally.judged += stored
        tally.already += len(rows) - stored
        report(tally, None, 0.8 + 0.2 * min(1.0, (start + STORE_BATCH) / len(tasks)))
    return tally


def judge_impl(ctx: JobContext) -> None:
    with session_scope(ctx.session_factory) as session:
        # checked again (a reward model may have gone since); JudgeError fails the job
        options = JudgeOptions.from_dict(judge_params(session=session, raw=ctx.params))
        project = session.get_one(Project, ctx.project_id)
        session.expunge(project)
    tasks, skipped, ready = _tasks(ctx, project, options.labeler)
    if not ready:
        raise JudgeJobError(
            f"No prompt of the project has K={project.k} answers to judge: generate or import "
            "answers first (rlhf generate)."
        )
    ctx.log(
        f"{options.labeler}: {len(tasks):,} prompts to judge, {skipped:,} judged already "
        f"(of {ready:,} with K={project.k} answers)"
    )
    ctx.progress(
        0.0, f"0 / {len(tasks):,} prompts", judge=options.labeler, prompts_to_judge=len(tasks),
        prompts_skipped=skipped, prompts_judged=0,
    )  # fmt: skip

    def report(tally: Tally, judge: Any, fraction: float) -> None:
        endpoint = {"requests": judge.requests, "retries": judge.retries} if judge else {}
        ctx.progress(
            fraction, f"{tally.judged:,} / {len(tasks):,} prompts judged",
            prompts_judged=tally.judged, prompts_skipped=skipped + tally.already,
            **endpoint, **tally.left_out.metrics(),
        )  # fmt: skip

    if not tasks:
        ctx.log("nothing new to judge")
        report(Tally(), None, 1.0)
        return
    if options.endpoint is not None:
        tally = _judge_with_endpoint(ctx, options, tasks, report)
    else:
        tally = _judge_with_reward_model(ctx, options, tasks, report)
    said = (
        f"{tally.judged:,} prompts judged by {options.labeler}, "
        f"{skipped + tally.already:,} judged already (skipped)"
    )
    if tally.left_out:
        said += f", {tally.left_out.total:,} left out ({tally.left_out.describe()})"
    ctx.log(f"done: {said}")
    if not tally.judged and tally.left_out:
        raise JudgeJobError(
            f"None of the {len(tasks):,} prompts got a ranking: {tally.left_out.describe()}. "
            + ADVICE.get(tally.left_out.reasons.most_common(1)[0][0], "See the job log.")
        )
    ctx.progress(1.0, said)
