"""``rlhf demo``: an admin, three labelers and one project whose prompts each have K=4 answers.

Safe to run again: what exists is kept, only what is missing is added.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import create_user, get_user_by_email
from app.demo.content import (
    DEMO_DIALOGUES,
    DEMO_GUIDELINES,
    DEMO_PROJECT_NAME,
    DEMO_PROMPTS,
    DEMO_UNANSWERED_PROMPTS,
    DemoAnswer,
)
from app.dialogue import Message, plain_text
from app.labeling.models import Completion, Prompt, PromptSource, text_sha256
from app.projects.models import Project
from app.projects.service import create_project

DEMO_ADMIN = "admin@demo.local"
DEMO_LABELERS = ("labeler1@demo.local", "labeler2@demo.local", "labeler3@demo.local")
DEMO_ADMIN_PASSWORD = "demo-admin"  # noqa: S105 - shown on the demo login page on purpose
DEMO_LABELER_PASSWORD = "demo-labeler"  # noqa: S105


@dataclass
class DemoSummary:
    project_id: int
    # email -> password, for the accounts created by this run (existing ones keep theirs)
    created_logins: dict[str, str] = field(default_factory=dict)
    existing_logins: list[str] = field(default_factory=list)
    prompts_added: int = 0


def _ensure_user(
    *, session: Session, email: str, role: Role, name: str, password: str, summary: DemoSummary
) -> None:
    if get_user_by_email(session=session, email=email) is not None:
        summary.existing_logins.append(email)
        return
    create_user(session=session, email=email, password=password, role=role, display_name=name)
    summary.created_logins[email] = password


def seed_demo(*, session: Session, fixed_passwords: bool) -> DemoSummary:
    """Fixed, documented passwords in demo mode; random ones (printed once) otherwise."""

    def password(demo_value: str) -> str:
        return demo_value if fixed_passwords else secrets.token_urlsafe(12)

    project = session.scalar(select(Project).where(Project.name == DEMO_PROJECT_NAME))
    if project is None:
        project = create_project(
            session=session,
            name=DEMO_PROJECT_NAME,
            k=4,
            overlap=3,
            guidelines=DEMO_GUIDELINES,
            description="Everyday questions, each answered by four demo models. "
            "Rank the answers from best to worst.",
        )
    summary = DemoSummary(project_id=project.id)

    _ensure_user(
        session=session, email=DEMO_ADMIN, role=Role.admin, name="Ada Admin",
        password=password(DEMO_ADMIN_PASSWORD), summary=summary,
    )  # fmt: skip
    for number, (email, name) in enumerate(
        zip(DEMO_LABELERS, ("Lin", "Sam", "Noor"), strict=True), start=1
    ):
        _ensure_user(
            session=session, email=email, role=Role.labeler, name=f"{name} (labeler {number})",
            password=password(DEMO_LABELER_PASSWORD), summary=summary,
        )  # fmt: skip

    existing = set(
        session.scalars(select(Prompt.external_id).where(Prompt.project_id == project.id))
    )
    items: list[tuple[str, str, list[Message] | None, list[DemoAnswer]]] = [
        (f"demo-{i}", p["prompt"], None, p["answers"]) for i, p in enumerate(DEMO_PROMPTS, 1)
    ]
    items += [
        (f"demo-chat-{i}", plain_text(d["messages"]), d["messages"], d["answers"])
        for i, d in enumerate(DEMO_DIALOGUES, 1)
    ]
    items += [
        (f"demo-open-{i}", text, None, []) for i, text in enumerate(DEMO_UNANSWERED_PROMPTS, 1)
    ]
    for external_id, text, messages, answers in items:
        if external_id in existing:
            continue
        prompt = Prompt(
            project_id=project.id,
            text=text,
            messages=messages,
            source=PromptSource.import_,
            external_id=external_id,
            submitter_external="demo",
        )
        session.add(prompt)
        session.flush()
        for answer in answers:
            session.add(
                Completion(
                    prompt_id=prompt.id,
                    text=answer["text"],
                    text_sha256=text_sha256(answer["text"]),
                    origin=f"import:{answer['model']}",
                )
            )
        summary.prompts_added += 1
    session.flush()
    return summary
