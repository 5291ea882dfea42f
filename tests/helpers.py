"""Plain helpers that make test data and drive the login form like a browser would."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.auth.service import create_user
from app.dialogue import Message, plain_text
from app.labeling.models import (
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    PromptSource,
    text_sha256,
)
from app.projects.models import Project
from app.projects.service import create_project

PASSWORD = "correct horse battery"
_counter = iter(range(1, 10**9))


def make_user(session: Session, *, role: Role = Role.labeler, email: str | None = None) -> User:
    n = next(_counter)
    return create_user(
        session=session,
        email=email or f"user{n}@example.test",
        password=PASSWORD,
        role=role,
        display_name=f"User {n}",
    )


def make_admin(session: Session) -> User:
    return make_user(session, role=Role.admin)


def make_project(
    session: Session, *, name: str | None = None, k: int = 4, overlap: int = 3
) -> Project:
    return create_project(
        session=session, name=name or f"Project {next(_counter)}", k=k, overlap=overlap
    )


def make_prompt(
    session: Session,
    project: Project,
    *,
    text: str = "Say hello",
    answers: int = 4,
    messages: list[Message] | None = None,
) -> Prompt:
    """A prompt with ``answers`` imported answers; ``messages`` makes it a dialogue (its
    ``text`` then is the dialogue's plain rendering)."""
    if messages is not None:
        text = plain_text(messages)
    prompt = Prompt(
        project_id=project.id,
        text=text,
        messages=[dict(m) for m in messages] if messages is not None else None,
        source=PromptSource.import_,
    )
    session.add(prompt)
    session.flush()
    for i in range(answers):
        body = f"Answer {i} to {text}"
        session.add(
            Completion(
                prompt_id=prompt.id, text=body, text_sha256=text_sha256(body), origin="import:test"
            )
        )
    session.flush()
    return prompt


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    response = await client.get(path)
    match = CSRF_INPUT.search(response.text)
    assert match, f"no CSRF token on {path} ({response.status_code})"
    return match.group(1)


async def login(client: httpx.AsyncClient, user: User, password: str = PASSWORD) -> httpx.Response:
    token = await csrf_token(client)
    response = await client.post(
        "/login", data={"email": user.email, "password": password, "csrf_token": token}
    )
    assert response.status_code == 303, response.text
    return response


def visible_text(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def field_error(page: str, field: str) -> str:
    """The inline message a form page shows next to a field ('' when there is none)."""
    match = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', page)
    return match.group(1) if match else ""


def answers(prompt: Prompt) -> list[int]:
    return [c.id for c in prompt.completions]


def rank(
    session: Session,
    prompt: Prompt,
    labeler: User,
    places: list[int],
    *,
    shown: list[int] | None = None,
    ratings: list[int] | None = None,
    flags: dict[int, list[str]] | None = None,
    seconds: float = 30.0,
    at: datetime | None = None,
    not_rankable: bool = False,
) -> Comparison:
    """``places[i]``: the place (0 = best; equal places tie) of the prompt's answer i."""
    ids = answers(prompt)
    groups: dict[int, list[int]] = {}
    for answer, place in zip(ids, places or [0] * len(ids), strict=True):
        groups.setdefault(place, []).append(answer)
    comparison = Comparison(
        prompt_id=prompt.id,
        labeler_id=labeler.id,
        displayed_completion_ids=[ids[i] for i in shown] if shown else ids,
        ranking=[] if not_rankable else [groups[p] for p in sorted(groups)],
        ratings={str(a): r for a, r in zip(ids, ratings, strict=True)} if ratings else None,
        flags={str(ids[i]): names for i, names in flags.items()} if flags else None,
        not_rankable=not_rankable,
        seconds_spent=seconds,
        created_at=at or datetime.now(UTC),
    )
    session.add(comparison)
    session.flush()
    return comparison


def make_ranked_project(session: Session, *, n: int = 10, k: int = 4) -> Project:
    """A project of ``n`` prompts "Question i?", each from a submitter of its own (so a split
    by submitter holds some out) and each with ``k`` answers ranked in order by one labeler."""
    project = make_project(session, k=k)
    labeler = make_user(session)
    for i in range(n):
        prompt = make_prompt(session, project, text=f"Question {i}?", answers=k)
        prompt.submitter_id = make_user(session).id
        rank(session, prompt, labeler, list(range(k)))
    session.flush()
    return project


def make_demonstrated_project(
    session: Session,
    *,
    n: int = 8,
    prompt: str = "How do I boil egg number {i}?",
    answer: str = "Put it in boiling water for nine minutes.",
) -> Project:
    """A project of ``n`` prompts (``prompt`` with its number), each from a submitter of its
    own who wrote ``answer`` as its demonstration."""
    project = make_project(session, k=4)
    for i in range(n):
        submitter = make_user(session)
        row = make_prompt(session, project, text=prompt.format(i=i), answers=0)
        row.submitter_id = submitter.id
        session.add(Demonstration(prompt_id=row.id, author_id=submitter.id, text=answer))
    session.flush()
    return project


def build_tiny_reward_model(folder: Path, *, texts: list[str], seed: int = 0) -> Path:
    """A tiny GPT-2 reward model built here (no download): random weights, its score head
    drawn with ``seed`` and saved with it, so every load scores alike. Returns its folder."""
    import json

    import torch

    from workers.ml.reward_model import load_reward_model
    from workers.ml.tiny import build_tiny_causal_lm

    base = build_tiny_causal_lm(folder / "base", texts=texts, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, tokenizer = load_reward_model(base)
    out = folder / "rm"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = json.loads((base / "rlhf.json").read_text(encoding="utf-8"))
    (out / "rlhf.json").write_text(json.dumps({**meta, "kind": "rm"}), encoding="utf-8")
    return out
