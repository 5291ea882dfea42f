"""``rlhf demo --feedback``: the simulated rankings behave like submitted tasks, so the queue
never hands a labeler a prompt they ranked, and the next round (new answers) is what they get."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.service import get_user_by_email
from app.demo.feedback import simulate_feedback
from app.demo.seed import DEMO_LABELERS, seed_demo
from app.labeling.models import Comparison, Completion, Prompt, TaskKind, text_sha256
from app.labeling.queue import lease_next_task
from app.projects.models import Project


def test_simulated_rankings_use_up_the_queue_like_submitted_tasks(session: Session) -> None:
    summary = seed_demo(session=session, fixed_passwords=True)
    project = session.get_one(Project, summary.project_id)
    done = simulate_feedback(session=session, project=project)
    assert done.rankings == 36
    ranked = set(session.scalars(select(Comparison.prompt_id).distinct()))
    full = set(session.scalars(select(Prompt.id).where(Prompt.rank_full.is_(True))))
    assert full == ranked and len(ranked) == 12  # overlap 3 reached by the 3 labelers

    labeler = get_user_by_email(session=session, email=DEMO_LABELERS[0])
    assert labeler is not None
    lease = timedelta(minutes=30)
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.rank, lease_for=lease
    )
    assert task is None  # every answered prompt is ranked already; the open ones have no answers

    # The next round: a policy answers an open prompt, which becomes the labeler's task.
    open_prompt = session.scalars(
        select(Prompt).where(Prompt.project_id == project.id, Prompt.id.not_in(ranked))
    ).first()
    assert open_prompt is not None
    for i in range(project.k):
        text = f"policy answer {i}"
        session.add(Completion(prompt_id=open_prompt.id, text=text, text_sha256=text_sha256(text),
                               origin="model:1"))  # fmt: skip
    session.flush()
    task = lease_next_task(
        session=session, project=project, labeler=labeler, kind=TaskKind.rank, lease_for=lease
    )
    assert task is not None and task.prompt.id == open_prompt.id
    again = simulate_feedback(session=session, project=project)  # safe to run again
    assert again.rankings == 0
    assert session.scalar(select(func.count()).select_from(Comparison)) == 36
