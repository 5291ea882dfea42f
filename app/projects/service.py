"""Projects: creating and changing them (one set of rules for both), and their counts."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.errors import NotFoundError
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    Demonstration,
    GoldRanking,
    Prompt,
    TaskKind,
)
from app.labeling.queue import cap_of_each_project
from app.projects.models import (
    DEFAULT_DISAGREEMENT_THRESHOLD,
    DEFAULT_FLAGS,
    QUEUE_ORDERS,
    Project,
    ProjectMember,
)


class ProjectError(ValueError):
    """A project could not be found, created or changed; the message is shown as it is."""


class ProjectFormError(ProjectError):
    """One message per field that is wrong (keys: the field names of ``ProjectSettings``).
    ``str()`` joins them, which is what the CLI prints."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


MIN_K, MAX_K = 2, 9
MAX_OVERLAP = 100  # more labelers than this per prompt is a typo, not a plan
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_FLAGS, MAX_FLAG_LENGTH = 12, 40
MAX_GUIDELINES = 100_000


@dataclass(frozen=True)
class ProjectSettings:
    """What an admin sets on a project; ``check_project_settings`` normalises and checks it."""

    name: str
    description: str = ""
    k: int = 4
    overlap: int = 3
    likert: bool = True
    flags: Sequence[str] = field(default_factory=lambda: list(DEFAULT_FLAGS))
    guidelines: str = ""
    gold_rate: float = 0.0
    # The rank queue's order (design §14); ``max_overlap`` None is ``overlap + 2``.
    queue_order: str = "oldest"
    max_overlap: int | None = None
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD

    @classmethod
    def of(cls, project: Project) -> ProjectSettings:
        schema = project.label_schema or {}
        return cls(
            name=project.name,
            description=project.description,
            k=project.k,
            overlap=project.overlap,
            likert=bool(schema.get("likert", False)),
            flags=list(schema.get("flags", [])),
            guidelines=project.guidelines,
            gold_rate=project.gold_rate,
            queue_order=project.queue_order,
            max_overlap=project.max_overlap,
            disagreement_threshold=project.disagreement_threshold,
        )


class _Keep(enum.Enum):
    KEEP = "keep"


#: ``update_project(max_overlap=KEEP)`` leaves it as it is (None there means the default).
KEEP = _Keep.KEEP


def clean_flags(flags: Sequence[str]) -> list[str]:
    """Trimmed, blank ones dropped, duplicates (ignoring case) dropped, first spelling kept."""
    seen: set[str] = set()
    cleaned = []
    for flag in flags:
        flag = " ".join(flag.split())
        if flag and flag.casefold() not in seen:
            seen.add(flag.casefold())
            cleaned.append(flag)
    return cleaned


def has_comparisons(*, session: Session, project: Project) -> bool:
    found = session.scalar(
        select(Comparison.id)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Prompt.project_id == project.id)
        .limit(1)
    )
    return found is not None


def check_project_settings(
    *, session: Session, settings: ProjectSettings, project: Project | None = None
) -> tuple[ProjectSettings, dict[str, str]]:
    """The settings normalised, and a message per wrong field (empty when all is well).
    ``project`` is the project being changed (None when creating one)."""
    errors: dict[str, str] = {}
    name = settings.name.strip()
    if not name:
        errors["name"] = "a project needs a name"
    elif len(name) > MAX_NAME:
        errors["name"] = f"a project name has at most {MAX_NAME} characters"
    elif name.isdigit():
        errors["name"] = "a project name cannot be only digits (it would read as an id)"
    else:
        same_name = select(Project.id).where(Project.name == name)
        if project is not None:
            same_name = same_name.where(Project.id != project.id)
        if session.scalar(same_name) is not None:
            errors["name"] = f"a project named {name!r} already exists"

    description = settings.description.strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"the description has at most {MAX_DESCRIPTION} characters"

    if not MIN_K <= settings.k <= MAX_K:
        errors["k"] = f"K must be between {MIN_K} and {MAX_K}, not {settings.k}"
    elif (
        project is not None
        and settings.k != project.k
        and has_comparisons(session=session, project=project)
    ):
        errors["k"] = (
            f"K cannot change from {project.k} to {settings.k}: this project already has "
            f"rankings of {project.k} answers, which would no longer match the new prompts"
        )

    if settings.overlap < 1:
        errors["overlap"] = f"overlap must be at least 1, not {settings.overlap}"
    elif settings.overlap > MAX_OVERLAP:
        errors["overlap"] = f"overlap must be at most {MAX_OVERLAP}, not {settings.overlap}"

    flags = clean_flags(settings.flags)
    too_long = [f for f in flags if len(f) > MAX_FLAG_LENGTH]
    if too_long:
        first = too_long[0]
        errors["flags"] = (
            f"a flag name has at most {MAX_FLAG_LENGTH} characters; "
            f"'{first[:24]}...' has {len(first)}"
        )
    elif len(flags) > MAX_FLAGS:
        errors["flags"] = f"at most {MAX_FLAGS} flags, not {len(flags)}"

    guidelines = settings.guidelines.strip()
    if len(guidelines) > MAX_GUIDELINES:
        errors["guidelines"] = f"the guidelines have at most {MAX_GUIDELINES:,} characters"

    rate = settings.gold_rate
    if not math.isfinite(rate) or not 0 <= rate <= 1:
        shown = f"{rate * 100:g}%" if math.isfinite(rate) else str(rate)
        errors["gold_rate"] = f"the gold rate must be between 0% and 100%, not {shown}"

    errors.update(_queue_errors(settings, overlap_ok="overlap" not in errors))

    cleaned = ProjectSettings(
        name=name,
        description=description,
        k=settings.k,
        overlap=settings.overlap,
        likert=settings.likert,
        flags=flags,
        guidelines=guidelines,
        gold_rate=rate,
        queue_order=settings.queue_order,
        max_overlap=settings.max_overlap,
        disagreement_threshold=settings.disagreement_threshold,
    )
    return cleaned, errors


def _queue_errors(settings: ProjectSettings, *, overlap_ok: bool) -> dict[str, str]:
    errors: dict[str, str] = {}
    if settings.queue_order not in QUEUE_ORDERS:
        errors["queue_order"] = (
            f"unknown queue order {settings.queue_order!r}; choose one of "
            + ", ".join(QUEUE_ORDERS)
        )
    top = settings.max_overlap
    if top is not None:
        if top > MAX_OVERLAP:
            errors["max_overlap"] = f"max overlap must be at most {MAX_OVERLAP}, not {top}"
        elif overlap_ok and top < settings.overlap:
            errors["max_overlap"] = (
                f"max overlap must be at least the overlap ({settings.overlap}), not {top}"
            )
    threshold = settings.disagreement_threshold
    if not math.isfinite(threshold) or not 0 <= threshold <= 1:
        errors["disagreement_threshold"] = (
            f"the disagreement threshold is a share of answer pairs, between 0 and 1, "
            f"not {threshold:g}"
        )
    return errors


def _apply(project: Project, settings: ProjectSettings) -> None:
    project.name = settings.name
    project.description = settings.description
    project.k = settings.k
    project.overlap = settings.overlap
    # A new dict (not an in-place change) so the JSON column is seen as changed; keys other
    # parts may have added to the schema are kept.
    project.label_schema = {
        **(project.label_schema or {}),
        "likert": settings.likert,
        "flags": list(settings.flags),
    }
    project.guidelines = settings.guidelines
    project.gold_rate = settings.gold_rate
    project.queue_order = settings.queue_order
    project.max_overlap = settings.max_overlap
    project.disagreement_threshold = settings.disagreement_threshold


def create_project(
    *,
    session: Session,
    name: str,
    k: int = 4,
    overlap: int = 3,
    guidelines: str = "",
    description: str = "",
    likert: bool = True,
    flags: Sequence[str] | None = None,
    gold_rate: float = 0.0,
    queue_order: str = "oldest",
    max_overlap: int | None = None,
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD,
    created_by_id: int | None = None,
) -> Project:
    """Raises ``ProjectFormError`` (a ``ProjectError``) with a message per wrong field."""
    settings, errors = check_project_settings(
        session=session,
        settings=ProjectSettings(
            name=name,
            description=description,
            k=k,
            overlap=overlap,
            likert=likert,
            flags=list(DEFAULT_FLAGS) if flags is None else flags,
            guidelines=guidelines,
            gold_rate=gold_rate,
            queue_order=queue_order,
            max_overlap=max_overlap,
            disagreement_threshold=disagreement_threshold,
        ),
    )
    if errors:
        raise ProjectFormError(errors)
    project = Project(created_by_id=created_by_id, label_schema={})
    _apply(project, settings)
    session.add(project)
    session.flush()
    return project


def update_project(
    *,
    session: Session,
    project: Project,
    name: str | None = None,
    description: str | None = None,
    k: int | None = None,
    overlap: int | None = None,
    likert: bool | None = None,
    flags: Sequence[str] | None = None,
    guidelines: str | None = None,
    gold_rate: float | None = None,
    queue_order: str | None = None,
    max_overlap: int | Literal[_Keep.KEEP] | None = KEEP,
    disagreement_threshold: float | None = None,
) -> Project:
    """Change what is given (None keeps a setting; for ``max_overlap``, ``KEEP`` does and None
    is the default, ``overlap + 2``), with the same rules as creating, and K fixed once the
    project has rankings. Prompts' fullness follows a new overlap or queue setting at once.
    Raises ``ProjectFormError``."""
    old = ProjectSettings.of(project)
    wanted = ProjectSettings(
        name=old.name if name is None else name,
        description=old.description if description is None else description,
        k=old.k if k is None else k,
        overlap=old.overlap if overlap is None else overlap,
        likert=old.likert if likert is None else likert,
        flags=old.flags if flags is None else flags,
        guidelines=old.guidelines if guidelines is None else guidelines,
        gold_rate=old.gold_rate if gold_rate is None else gold_rate,
        queue_order=old.queue_order if queue_order is None else queue_order,
        max_overlap=old.max_overlap if max_overlap is KEEP else max_overlap,
        disagreement_threshold=(
            old.disagreement_threshold if disagreement_threshold is None else disagreement_threshold
        ),
    )
    settings, errors = check_project_settings(session=session, settings=wanted, project=project)
    if errors:
        raise ProjectFormError(errors)
    caps_before = _caps(project)
    order_before = project.queue_order
    _apply(project, settings)
    session.flush()
    from app.labeling.service import refresh_disagreement, refresh_rank_full  # builds on us

    if project.queue_order == "disagreement" and order_before != "disagreement":
        # The submit keeps each prompt's disagreement; rankings from before it did, and
        # reviews since, are caught up once, so full prompts that disagree reopen.
        refresh_disagreement(session=session, project=project)
    if _caps(project) != caps_before:
        refresh_rank_full(session=session, project=project)
    return project


def _caps(project: Project) -> tuple[Any, ...]:
    """What decides each prompt's cap of rankings (``app.labeling.queue.rank_cap``)."""
    if project.queue_order != "disagreement":
        return (project.overlap,)
    return (project.overlap, project.extra_overlap, project.disagreement_threshold)


def settings_changes(before: ProjectSettings, after: ProjectSettings) -> dict[str, Any]:
    """What changed, as {setting: [old, new]} (for the audit log; guidelines only as a mark,
    they are long)."""
    changes: dict[str, Any] = {}
    keys = ("name", "description", "k", "overlap", "likert", "flags", "gold_rate", "queue_order",
            "max_overlap", "disagreement_threshold")  # fmt: skip
    for key in keys:
        old, new = getattr(before, key), getattr(after, key)
        if key == "flags":
            old, new = list(old), list(new)
        if old != new:
            changes[key] = [old, new]
    if before.guidelines != after.guidelines:
        changes["guidelines"] = "changed"
    return changes


def has_score_gaps(*, session: Session, project: Project) -> bool:
    """Whether ``rlhf score`` has given any prompt a score gap (``uncertain`` serves oldest
    first until it has)."""
    found = exists().where(Prompt.project_id == project.id, Prompt.score_gap.is_not(None))
    return bool(session.scalar(select(found)))


def get_project(*, session: Session, ref: str | int) -> Project:
    """A project by id or by exact name (the CLI's PROJECT argument)."""
    project: Project | None
    if isinstance(ref, int) or ref.isdigit():
        project = session.get(Project, int(ref))
    else:
        project = session.scalar(select(Project).where(Project.name == ref))
    if project is None:
        raise NotFoundError(f"no project {str(ref)!r}")
    return project


def list_projects(*, session: Session, for_user: User | None = None) -> Sequence[Project]:
    """Every project, or with ``for_user`` those that user may label (design §13)."""
    stmt = select(Project).order_by(Project.created_at, Project.id)
    if for_user is not None and for_user.role != Role.admin:
        member = exists().where(
            ProjectMember.project_id == Project.id, ProjectMember.user_id == for_user.id
        )
        stmt = stmt.where(or_(Project.restricted.is_(False), member))
    return session.scalars(stmt).all()


def may_label(*, session: Session, project: Project, user: User) -> bool:
    """Admins and, on an open project, every labeler; on a restricted one, its members."""
    if user.role == Role.admin or not project.restricted:
        return True
    return session.get(ProjectMember, (project.id, user.id)) is not None


def labeler_project(*, session: Session, ref: str | int, user: User) -> Project:
    """The project, as a labeler reaches it: one they may not label does not exist for them
    (NotFoundError, 404), so a restricted project shows nothing of itself to outsiders."""
    project = get_project(session=session, ref=ref)
    if not may_label(session=session, project=project, user=user):
        raise NotFoundError(f"no project {str(ref)!r}")
    return project


def project_members(*, session: Session, project: Project) -> list[User]:
    return list(
        session.scalars(
            select(User)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project.id)
            .order_by(User.email)
        )
    )


def add_member(*, session: Session, project: Project, user: User) -> bool:
    """Whether the user was added (False: a member already)."""
    if session.get(ProjectMember, (project.id, user.id)) is not None:
        return False
    session.add(ProjectMember(project_id=project.id, user_id=user.id))
    session.flush()
    return True


def remove_member(*, session: Session, project: Project, user: User) -> bool:
    """Whether the user was removed (False: not a member). On a restricted project they see
    nothing of it from now on; a task they hold goes back to the pool when its lease ends."""
    row = session.get(ProjectMember, (project.id, user.id))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


@dataclass(frozen=True)
class ProjectCounts:
    prompts: int = 0
    completions: int = 0
    demonstrations: int = 0
    comparisons: int = 0
    rankable_prompts: int = 0  # prompts with at least K completions
    # The queue's rank slots over the rankable prompts that are not gold: each prompt's cap
    # (overlap, or max overlap while its labelers disagree under the disagreement order),
    # and how many of them are filled by submitted tasks. Gold prompts go to every labeler,
    # so they have no cap to fill.
    rankings_wanted: int = 0
    rankings_done: int = 0

    @property
    def rankings_done_pct(self) -> int:
        if not self.rankings_wanted:
            return 0
        return min(100, round(100 * self.rankings_done / self.rankings_wanted))


def project_counts(*, session: Session, projects: Sequence[Project]) -> dict[int, ProjectCounts]:
    """Counts for many projects in a few grouped queries (not one query per project)."""
    ids = [p.id for p in projects]
    if not ids:
        return {}

    def grouped(stmt: Select[int, int]) -> dict[int, int]:
        return {pid: int(n or 0) for pid, n in session.execute(stmt).all()}

    prompts = grouped(
        select(Prompt.project_id, func.count())
        .where(Prompt.project_id.in_(ids))
        .group_by(Prompt.project_id)
    )
    answers = _answer_counts(session=session, ids=ids)
    demonstrations = grouped(
        select(Prompt.project_id, func.count())
        .join(Demonstration, Demonstration.prompt_id == Prompt.id)
        .where(Prompt.project_id.in_(ids))
        .group_by(Prompt.project_id)
    )
    comparisons = grouped(
        select(Prompt.project_id, func.count())
        .join(Comparison, Comparison.prompt_id == Prompt.id)
        .where(Prompt.project_id.in_(ids), Comparison.is_latest.is_(True))
        .group_by(Prompt.project_id)
    )
    return {
        p.id: dataclasses.replace(
            answers.get(p.id, ProjectCounts()),
            prompts=prompts.get(p.id, 0),
            demonstrations=demonstrations.get(p.id, 0),
            comparisons=comparisons.get(p.id, 0),
        )
        for p in projects
    }


def _answer_counts(*, session: Session, ids: list[int]) -> dict[int, ProjectCounts]:
    """Per project, in one grouped query: its answers; its rankable prompts (K answers or
    more); the rank slots of those that are not gold; and the slots filled by submitted
    tasks, each prompt's count capped at its cap (the queue's: overlap, or max overlap while
    its labelers disagree)."""
    per_prompt = (
        select(Completion.prompt_id, func.count().label("n"))
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(Prompt.project_id.in_(ids))
        .group_by(Completion.prompt_id)
        .subquery()
    )
    filled = (
        select(Assignment.prompt_id, func.count().label("n"))
        .join(Prompt, Prompt.id == Assignment.prompt_id)
        .where(
            Prompt.project_id.in_(ids),
            Assignment.kind == TaskKind.rank,
            Assignment.state == AssignmentState.submitted,
        )
        .group_by(Assignment.prompt_id)
        .subquery()
    )
    submitted = func.coalesce(filled.c.n, 0)
    cap = cap_of_each_project()
    rankable = per_prompt.c.n >= Project.k
    # Gold prompts go to every labeler: no cap to fill.
    queued = and_(rankable, ~exists().where(GoldRanking.prompt_id == Prompt.id))
    each = (
        select(
            Prompt.project_id,
            per_prompt.c.n,
            case((rankable, 1), else_=0).label("rankable"),
            case((queued, cap), else_=0).label("cap"),
            case((~queued, 0), (submitted < cap, submitted), else_=cap).label("done"),
        )
        .join(per_prompt, per_prompt.c.prompt_id == Prompt.id)
        .join(Project, Project.id == Prompt.project_id)
        .outerjoin(filled, filled.c.prompt_id == Prompt.id)
        .subquery()
    )
    totals = select(
        each.c.project_id,
        func.sum(each.c.n),
        func.sum(each.c.rankable),
        func.sum(each.c.cap),
        func.sum(each.c.done),
    ).group_by(each.c.project_id)
    return {
        pid: ProjectCounts(
            completions=int(n), rankable_prompts=int(ranked), rankings_wanted=int(wanted),
            rankings_done=int(done),
        )
        for pid, n, ranked, wanted, done in session.execute(totals).all()
    }  # fmt: skip
