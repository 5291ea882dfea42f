"""Admin pages for a project's prompts and their gold (reference) rankings.

The list shows a page of prompts with their answer and ranking counts (grouped queries for the
page's prompts, never one per row). The gold page ranks all of a prompt's answers with the
labeler's answer cards and ``rank_<completion id>`` fields (equal numbers tie); the queue then
mixes the prompt into labelers' queues at the project's gold rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from math import ceil
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.audit.service import record
from app.auth.models import User
from app.deps import AdminUser, DbSession
from app.errors import NotFoundError
from app.labeling.models import Comparison, Completion, GoldRanking, Prompt
from app.labeling.ranking import Ranking, answer_label, missing_places, ranks_to_groups
from app.labeling.service import SubmissionError, set_gold_ranking
from app.labeling.views import FormDep
from app.projects.models import Project
from app.projects.service import get_project
from app.web.templating import render

router = APIRouter(tags=["gold"])

PAGE_SIZE = 50
PREVIEW_CHARS = 140
FILTERS = {"all": "All", "gold": "Gold", "rankable": "Ready to rank"}
# ?saved=...&prompt=<id> on the list after a redirect says what just happened.
SAVED_NOTES = {
    "set": "Gold ranking saved for prompt #{id}.",
    "deleted": "Gold ranking removed from prompt #{id}.",
    "absent": "Prompt #{id} had no gold ranking.",
}

FilterParam = Annotated[str, Query(alias="filter", max_length=20)]


@dataclass(frozen=True)
class PromptRow:
    id: int
    preview: str
    created_at: datetime
    answers: int
    rankings: int
    gold: bool


@dataclass(frozen=True)
class Back:
    """Where the gold page returns to: the list's page and filter it was opened from."""

    page: int = 1
    show: str = "all"

    @classmethod
    def of(cls, page: object, show: object) -> Back:
        number = page.strip() if isinstance(page, str) else page
        if isinstance(number, str):
            number = int(number) if number.isdecimal() and len(number) < 9 else 1
        return cls(
            page=number if isinstance(number, int) and number > 0 else 1,
            show=show if isinstance(show, str) and show in FILTERS else "all",
        )

    def query(self, **extra: object) -> str:
        params: dict[str, object] = {}
        if self.show != "all":
            params["filter"] = self.show
        if self.page > 1:
            params["page"] = self.page
        params.update(extra)
        return f"?{urlencode(params)}" if params else ""


def list_url(project_id: int, back: Back = Back(), **extra: object) -> str:
    return f"/admin/projects/{project_id}/prompts{back.query(**extra)}"


def _preview(snippet: str, length: int) -> str:
    text = " ".join(snippet.split())
    if len(text) > PREVIEW_CHARS:
        return text[:PREVIEW_CHARS].rstrip() + "\u2026"
    return text + ("\u2026" if length > len(snippet) else "")


def _answer_count() -> Any:
    return (
        select(func.count())
        .where(Completion.prompt_id == Prompt.id)
        .correlate(Prompt)
        .scalar_subquery()
    )


def _conditions(project: Project, show: str) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Prompt.project_id == project.id]
    if show == "gold":
        conditions.append(exists().where(GoldRanking.prompt_id == Prompt.id))
    elif show == "rankable":  # as the queue and the project page count it: K answers
        conditions.append(_answer_count() >= project.k)
    return conditions


def _grouped(session: Session, column: Any, ids: list[int], *where: Any) -> dict[int, int]:
    stmt = select(column, func.count()).where(column.in_(ids), *where).group_by(column)
    return {prompt_id: int(n) for prompt_id, n in session.execute(stmt).all()}


def prompt_rows(
    *, session: Session, project: Project, show: str, page: int
) -> tuple[list[PromptRow], int, int, int]:
    """One page of the project's prompts, newest first: (rows, total, page, pages); a page
    past the end shows the last one."""
    conditions = _conditions(project, show)
    total = session.scalar(select(func.count()).select_from(Prompt).where(*conditions)) or 0
    pages = max(1, ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    # Only the start of each text is read: prompts can be 100 KB each.
    found = session.execute(
        select(
            Prompt.id,
            func.substr(Prompt.text, 1, PREVIEW_CHARS + 60),
            func.length(Prompt.text),
            Prompt.created_at,
        )
        .where(*conditions)
        .order_by(Prompt.created_at.desc(), Prompt.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    ids = [row[0] for row in found]
    answers: dict[int, int] = {}
    rankings: dict[int, int] = {}
    gold: set[int] = set()
    if ids:
        answers = _grouped(session, Completion.prompt_id, ids)
        rankings = _grouped(
            session,
            Comparison.prompt_id,
            ids,
            Comparison.is_latest.is_(True),
            Comparison.is_surplus.is_(False),
        )
        gold = set(
            session.scalars(select(GoldRanking.prompt_id).where(GoldRanking.prompt_id.in_(ids)))
        )
    rows = [
        PromptRow(
            id=prompt_id,
            preview=_preview(snippet or "", int(length or 0)),
            created_at=created_at,
            answers=answers.get(prompt_id, 0),
            rankings=rankings.get(prompt_id, 0),
            gold=prompt_id in gold,
        )
        for prompt_id, snippet, length, created_at in found
    ]
    return rows, total, page, pages


@router.get("/admin/projects/{project_id}/prompts", name="gold_prompts")
def prompts_list(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    page: int = 1,
    show: FilterParam = "all",
    saved: Annotated[str, Query(max_length=20)] = "",
    prompt: int | None = None,
) -> Response:
    project = get_project(session=session, ref=project_id)
    show = show if show in FILTERS else "all"
    rows, total, page, pages = prompt_rows(session=session, project=project, show=show, page=page)
    note = SAVED_NOTES.get(saved, "").format(id=prompt) if prompt is not None else ""
    return render(
        request,
        "gold/prompts.html",
        {
            "project": project,
            "rows": rows,
            "total": total,
            "page": page,
            "pages": pages,
            "show": show,
            "filters": FILTERS,
            "note": note,
            "back": Back(page=page, show=show),
            "page_url": lambda number, key: list_url(project.id, Back(page=number, show=key)),
        },
    )


def _prompt(session: Session, prompt_id: int) -> Prompt:
    prompt = session.get(Prompt, prompt_id)
    if prompt is None:
        raise NotFoundError(f"no prompt {prompt_id}")
    return prompt


def _gold(session: Session, prompt: Prompt) -> GoldRanking | None:
    return session.scalar(select(GoldRanking).where(GoldRanking.prompt_id == prompt.id))


def _values_from_gold(gold: GoldRanking | None) -> dict[str, list[str]]:
    """The saved ranking as the form's fields: group n (best first) is place n."""
    if gold is None:
        return {}
    return {
        f"rank_{completion_id}": [str(place)]
        for place, group in enumerate(gold.ranking, 1)
        for completion_id in group
    }


def _gold_page(
    request: Request,
    session: Session,
    prompt: Prompt,
    *,
    back: Back,
    values: dict[str, list[str]],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    project = session.get_one(Project, prompt.project_id)
    answers = list(prompt.completions)
    gold = _gold(session, prompt)
    ranked = {cid for group in gold.ranking for cid in group} if gold else set()
    labels = [answer_label(i) for i in range(len(answers))]
    context = {
        "project": project,
        "prompt": prompt,
        "answers": list(zip(labels, answers, strict=True)),
        "gold": gold,
        "gold_by": session.get(User, gold.created_by_id) if gold and gold.created_by_id else None,
        # Answers added after the gold ranking was saved: it does not place them yet.
        "unranked": [
            label for label, c in zip(labels, answers, strict=True) if gold and c.id not in ranked
        ],
        "values": values,
        "error": error,
        "back": back,
        "list_url": list_url(project.id, back),
    }
    return render(request, "gold/form.html", context, status_code=status_code)


def _ranking_from_form(form: FormData, answers: list[Completion]) -> Ranking:
    if not answers:
        raise SubmissionError("This prompt has no answers yet, so there is nothing to rank.")
    ranks: dict[int, int] = {}
    missing: list[str] = []
    for index, completion in enumerate(answers):
        value = form.get(f"rank_{completion.id}")
        value = value.strip() if isinstance(value, str) else ""
        if not value:
            missing.append(answer_label(index))
            continue
        if not value.isdecimal() or not 1 <= int(value) <= len(answers):
            raise SubmissionError(
                f"{value[:20]!r} is not a place in the ranking (1 to {len(answers)})."
            )
        ranks[completion.id] = int(value)
    if missing:
        raise SubmissionError(missing_places(missing))
    return ranks_to_groups(ranks)


@router.get("/admin/prompts/{prompt_id}/gold", name="gold_form")
def gold_form(
    request: Request,
    session: DbSession,
    user: AdminUser,
    prompt_id: int,
    page: int = 1,
    show: FilterParam = "all",
) -> Response:
    prompt = _prompt(session, prompt_id)
    values = _values_from_gold(_gold(session, prompt))
    return _gold_page(request, session, prompt, back=Back.of(page, show), values=values)


@router.post("/admin/prompts/{prompt_id}/gold", name="gold_save")
def gold_save(
    request: Request, session: DbSession, user: AdminUser, prompt_id: int, form: FormDep
) -> Response:
    prompt = _prompt(session, prompt_id)
    back = Back.of(form.get("page"), form.get("filter"))
    before = _gold(session, prompt)
    previous = list(before.ranking) if before else None
    try:
        ranking = _ranking_from_form(form, list(prompt.completions))
        gold = set_gold_ranking(session=session, prompt=prompt, ranking=ranking, admin=user)
    except SubmissionError as exc:
        values = {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}
        return _gold_page(
            request, session, prompt, back=back, values=values, error=str(exc), status_code=422
        )
    record(
        session=session,
        actor_id=user.id,
        action="gold.set",
        target_type="prompt",
        target_id=prompt.id,
        details={"ranking": gold.ranking, "previous": previous},
    )
    session.commit()
    return RedirectResponse(
        list_url(prompt.project_id, back, saved="set", prompt=prompt.id), status_code=303
    )


@router.post("/admin/prompts/{prompt_id}/gold/delete", name="gold_delete")
def gold_delete(
    request: Request, session: DbSession, user: AdminUser, prompt_id: int, form: FormDep
) -> Response:
    prompt = _prompt(session, prompt_id)
    back = Back.of(form.get("page"), form.get("filter"))
    gold = _gold(session, prompt)
    if gold is None:  # deleted already (a second tab, a double click): nothing to do
        return RedirectResponse(
            list_url(prompt.project_id, back, saved="absent", prompt=prompt.id), status_code=303
        )
    record(
        session=session,
        actor_id=user.id,
        action="gold.delete",
        target_type="prompt",
        target_id=prompt.id,
        details={"ranking": gold.ranking},
    )
    session.delete(gold)
    session.commit()
    return RedirectResponse(
        list_url(prompt.project_id, back, saved="deleted", prompt=prompt.id), status_code=303
    )
