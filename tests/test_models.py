"""The database keeps the rules itself (on SQLite and Postgres alike)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import utcnow
from app.labeling.models import (
    Assignment,
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    PromptSource,
    TaskKind,
    text_sha256,
)
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project
from tests.helpers import make_project, make_prompt, make_user


def _fails(session: Session, row: object) -> None:
    nested = session.begin_nested()
    session.add(row)
    with pytest.raises(IntegrityError):
        session.flush()
    nested.rollback()


def _comparison(prompt: Prompt, labeler_id: int, **kw: object) -> Comparison:
    ids = [c.id for c in prompt.completions]
    return Comparison(
        prompt_id=prompt.id,
        labeler_id=labeler_id,
        displayed_completion_ids=ids,
        ranking=[[i] for i in ids],
        **kw,
    )


def test_one_comparison_per_prompt_and_labeler(session: Session) -> None:
    prompt = make_prompt(session, make_project(session))
    labeler = make_user(session)
    first = _comparison(prompt, labeler.id)
    session.add(first)
    session.flush()
    _fails(session, _comparison(prompt, labeler.id))
    # An edit is a new revision; only one revision is the latest.
    _fails(session, _comparison(prompt, labeler.id, revision=2))
    first.is_latest = False
    session.add(_comparison(prompt, labeler.id, revision=2, supersedes_id=first.id))
    session.flush()


def test_a_comparison_has_exactly_one_labeler(session: Session) -> None:
    prompt = make_prompt(session, make_project(session))
    ids = [c.id for c in prompt.completions]
    both = Comparison(
        prompt_id=prompt.id, labeler_id=make_user(session).id, labeler_external="import:x",
        displayed_completion_ids=ids, ranking=[ids],
    )  # fmt: skip
    _fails(session, both)
    neither = Comparison(prompt_id=prompt.id, displayed_completion_ids=ids, ranking=[ids])
    _fails(session, neither)


def test_completion_text_is_unique_per_prompt(session: Session) -> None:
    project = make_project(session)
    first, second = make_prompt(session, project, text="x"), make_prompt(session, project, text="y")
    text = "the same answer"
    session.add(
        Completion(prompt_id=first.id, text=text, text_sha256=text_sha256(text), origin="import:a")
    )
    session.flush()
    _fails(
        session,
        Completion(prompt_id=first.id, text=text, text_sha256=text_sha256(text), origin="import:b"),
    )
    # The same text under another prompt is fine.
    session.add(
        Completion(prompt_id=second.id, text=text, text_sha256=text_sha256(text), origin="import:a")
    )
    session.flush()


def test_foreign_keys_are_enforced(session: Session) -> None:
    _fails(session, Prompt(project_id=987654, text="orphan", source=PromptSource.api))


def test_project_k_and_overlap_are_checked(session: Session) -> None:
    _fails(session, Project(name="too many", k=12, overlap=1))
    _fails(session, Project(name="no overlap", k=4, overlap=0))


def test_one_lease_row_per_labeler_prompt_and_kind(session: Session) -> None:
    prompt = make_prompt(session, make_project(session))
    labeler = make_user(session)
    expires = utcnow() + timedelta(minutes=30)
    session.add(
        Assignment(
            kind=TaskKind.rank, prompt_id=prompt.id, labeler_id=labeler.id, expires_at=expires
        )
    )
    session.flush()
    _fails(
        session,
        Assignment(
            kind=TaskKind.rank, prompt_id=prompt.id, labeler_id=labeler.id, expires_at=expires
        ),
    )
    session.add(
        Assignment(
            kind=TaskKind.demonstration,
            prompt_id=prompt.id,
            labeler_id=labeler.id,
            expires_at=expires,
        )
    )
    session.flush()


def test_one_demonstration_per_prompt_and_author(session: Session) -> None:
    prompt = make_prompt(session, make_project(session))
    author = make_user(session)
    session.add(Demonstration(prompt_id=prompt.id, author_id=author.id, text="a"))
    session.flush()
    _fails(session, Demonstration(prompt_id=prompt.id, author_id=author.id, text="b"))


def test_timestamps_come_back_in_utc(session: Session) -> None:
    project = make_project(session)
    session.expire_all()
    reloaded = session.get_one(Project, project.id)
    assert reloaded.created_at.utcoffset() == timedelta(0)


def test_json_columns_round_trip_unicode(session: Session) -> None:
    prompt = make_prompt(session, make_project(session))
    prompt.meta = {"lang": "עברית", "emoji": "🧪", "nested": {"k": [1, 2.5, None]}}
    session.flush()
    session.expire_all()
    assert session.get_one(Prompt, prompt.id).meta["nested"] == {"k": [1, 2.5, None]}


def test_model_lineage_and_current_policy(session: Session) -> None:
    base = ModelVersion(name="tiny-base", kind=ModelKind.base, path="/models/base")
    session.add(base)
    session.flush()
    sft = ModelVersion(name="tiny-sft", kind=ModelKind.sft, path="/models/sft", parent_id=base.id)
    session.add(sft)
    project = make_project(session)
    project.current_policy_id = None
    session.flush()
    project.current_policy = sft
    session.flush()
    session.expire_all()
    reloaded = session.get_one(Project, project.id)
    assert reloaded.current_policy is not None
    assert reloaded.current_policy.parent is not None
    assert reloaded.current_policy.parent.name == "tiny-base"
