"""The score job (`rlhf score`) in-process on a tiny reward model built here: one score per
answer and reward-model version, the same score PPO's scorer gives; reruns skip what is
scored; each prompt's score gap comes from its served answers; long answers follow the
long-input policy; a missing or wrong model is refused before queueing and by the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.judging import JudgeError, score_params
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_job
from app.labeling.models import Completion, CompletionScore, Prompt, text_sha256
from app.labeling.scores import served_answer_ids
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project
from tests.helpers import build_tiny_reward_model, make_project, make_prompt, make_user
from workers.runner import run_job

TEXTS = [f"Answer {i} to Question {j}?" for i in range(5) for j in range(5)] * 4


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("score"), texts=TEXTS)


def register(session: Session, path: Path | str, kind: ModelKind = ModelKind.rm) -> ModelVersion:
    version = ModelVersion(name=f"{kind.value}-{make_user(session).id}", kind=kind, path=str(path))
    session.add(version)
    session.flush()
    return version


def run(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, kind: str,
    project: Project, **params: Any,
) -> Job:  # fmt: skip
    job = create_job(session=session, kind=kind, project_id=project.id, params=params)
    session.commit()
    run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    return job


def stored(session: Session, version: ModelVersion) -> dict[int, float]:
    return dict(
        session.execute(
            select(CompletionScore.completion_id, CompletionScore.score).where(
                CompletionScore.model_version_id == version.id
            )
        ).all()
    )


def add_answer(session: Session, prompt: Prompt, text: str) -> Completion:
    answer = Completion(
        prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="import:test"
    )
    session.add(answer)
    session.flush()
    return answer


def test_every_answer_is_scored_once_and_a_rerun_skips_what_is_scored(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_rm: Path
) -> None:
    from workers.ml.ppo import RewardModelScorer

    project = make_project(session, k=3)
    more = make_prompt(session, project, text="Question 1?", answers=4)  # 3 of 4 served
    exact = make_prompt(session, project, text="Question 2?", answers=3)
    few = make_prompt(session, project, text="Question 3?", answers=2)  # fewer than K
    dialogue = make_prompt(
        session, project, answers=3,
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "Question 4?"}],
    )  # fmt: skip
    other = make_prompt(session, make_project(session, k=3), text="Not this project", answers=3)
    version = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id),
              batch_size=2)  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    answers = [c for p in (more, exact, few, dialogue) for c in p.completions]
    scores = stored(session, version)
    assert sorted(scores) == sorted(c.id for c in answers)  # one each, none of another project
    assert not {c.id for c in other.completions} & set(scores)
    # the score PPO's scorer gives the answer after its own prompt (dialogues as turns)
    scorer = RewardModelScorer(tiny_rm, max_length=1024)
    expected = scorer([c.prompt.input for c in answers], [c.text for c in answers]).tolist()
    assert [scores[c.id] for c in answers] == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 4) for s in scores.values()}) > 1  # the answers are told apart
    assert job.metrics["answers_scored"] == 12 and job.metrics["answers_skipped"] == 0
    assert job.metrics["left_out"] == 0 and job.metrics["reward_model_id"] == version.id
    assert job.metrics["score_gaps"] == 3
    for prompt in (more, exact, dialogue):
        session.refresh(prompt)
        served = sorted(
            (
                scores[i]
                for i in served_answer_ids(prompt.id, [c.id for c in prompt.completions], 3)
            ),
            reverse=True,
        )
        assert prompt.score_gap == pytest.approx(served[0] - served[1])
    session.refresh(few)
    assert few.score_gap is None  # its labelers are never served K answers

    again = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id))
    assert again.status == JobStatus.succeeded, again.error
    assert (again.metrics["answers_scored"], again.metrics["answers_skipped"]) == (0, 12)
    assert stored(session, version) == scores

    new = add_answer(session, few, "Answer 4 to Question 3?")
    third = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id))
    assert third.status == JobStatus.succeeded, third.error
    assert (third.metrics["answers_scored"], third.metrics["answers_skipped"]) == (1, 12)
    assert set(stored(session, version)) == set(scores) | {new.id}
    session.refresh(few)
    assert few.score_gap is not None  # K answers now: it can be served, so it has a gap
    assert "1 answers scored, 12 already scored (skipped)" in third.progress_message

    # another version of the reward model scores every answer again, for itself
    second = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=second.name)
    assert job.status == JobStatus.succeeded, job.error
    assert len(stored(session, second)) == 13 and len(stored(session, version)) == 13


def test_long_answers_are_cut_to_fit_by_default_or_left_out_and_counted(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_rm: Path
) -> None:
    project = make_project(session, k=2)
    prompt = make_prompt(session, project, text="Question 1?", answers=2)
    long = add_answer(session, prompt, "Answer 3 to Question 4? " * 40)
    version = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id),
              max_length=32, long_answers="drop")  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    assert job.metrics["answers_scored"] == 2 and job.metrics["left_out"] == 1
    assert job.metrics["left_out_reasons"] == {"answers longer than max_length (32 tokens)": 1}
    assert long.id not in stored(session, version)
    cut = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id),
              max_length=32)  # fmt: skip
    assert cut.status == JobStatus.succeeded, cut.error
    assert cut.metrics["answers_scored"] == 1 and cut.metrics["truncated"] == 1
    assert long.id in stored(session, version)


def test_a_job_with_only_answers_too_long_says_what_to_change(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_rm: Path
) -> None:
    project = make_project(session, k=2)
    prompt = make_prompt(session, project, answers=0)
    add_answer(session, prompt, "Answer 3 to Question 4? " * 40)
    version = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id),
              max_length=32, long_answers="drop")  # fmt: skip
    assert job.status == JobStatus.failed
    assert job.error is not None and "None of the 1 answers to score can be used" in job.error
    assert "--long-answers truncate" in job.error and job.metrics["left_out"] == 1


def test_a_missing_or_wrong_model_is_refused_before_queueing(session: Session) -> None:
    policy = register(session, "/nowhere", ModelKind.policy)
    with pytest.raises(JudgeError, match=r"^no model version 'nope'; see rlhf models list$"):
        score_params(session=session, raw={"reward": "nope"})
    with pytest.raises(JudgeError, match=r"^no model version '999999'; see rlhf models list$"):
        score_params(session=session, raw={"reward": "999999"})
    message = (
        f"model version '{policy.name}' is a policy model, not a reward model; see rlhf models list"
    )
    with pytest.raises(JudgeError) as caught:
        score_params(session=session, raw={"reward": policy.name})
    assert str(caught.value) == message
    with pytest.raises(JudgeError, match="--reward is required"):
        score_params(session=session, raw={})
    with pytest.raises(JudgeError, match="long_answers must be one of drop, truncate"):
        score_params(session=session, raw={"reward": "x", "long_answers": "cut"})
    rm = register(session, "/nowhere")
    assert score_params(session=session, raw={"reward": rm.name})["reward"] == str(rm.id)


def test_the_job_checks_the_model_again(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """A job queued with a model that is not (or no longer) a usable reward model fails with
    the reason, and stores nothing."""
    project = make_project(session, k=2)
    make_prompt(session, project, answers=2)
    policy = register(session, tmp_path, ModelKind.policy)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(policy.id))
    assert job.status == JobStatus.failed
    assert job.error is not None and "is a policy model, not a reward model" in job.error
    empty = register(session, tmp_path / "nothing-here")
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(empty.id))
    assert job.status == JobStatus.failed
    assert job.error is not None and f"{empty.name!r} cannot score answers" in job.error
    assert stored(session, empty) == {}


def test_after_rlhf_score_the_uncertain_queue_serves_the_closest_scored_prompt_first(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_rm: Path
) -> None:
    """The loop design §14 describes: score the answers, switch the project to
    ``queue_order="uncertain"``, and labelers get the prompts the RM can least tell apart
    first (the order the stored scores give, not the order of the prompts)."""
    from datetime import timedelta

    from app.labeling.models import TaskKind
    from app.labeling.queue import lease_next_task

    project = make_project(session, k=2, overlap=1)
    prompts = [make_prompt(session, project, text=f"Question {j}?", answers=2) for j in range(4)]
    version = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.SCORE, project, reward=str(version.id))
    assert job.status == JobStatus.succeeded, job.error
    for prompt in prompts:
        session.refresh(prompt)
    gaps = {p.id: p.score_gap for p in prompts}
    assert None not in gaps.values() and len(set(gaps.values())) == 4
    expected = sorted(gaps, key=lambda pid: gaps[pid])
    assert expected != sorted(gaps)  # the scores decide, not the ids (all answers served)
    project.queue_order = "uncertain"
    session.flush()
    served = []
    for _ in prompts:  # overlap 1: each labeler's lease takes a prompt's only slot
        task = lease_next_task(session=session, project=project, labeler=make_user(session),
                               kind=TaskKind.rank, lease_for=timedelta(minutes=30))  # fmt: skip
        assert task is not None
        served.append(task.prompt.id)
    assert served == expected
