"""Projects and the counts shown on the home pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.errors import NotFoundError
from app.labeling.models import Comparison, Completion, Demonstration, Prompt
from app.projects.models import Project


class ProjectError(ValueError):
    """A project could not be found, created or changed; the message is shown as it is."""


MIN_K, MAX_K = 2, 9


def create_project(
    *,
    session: Session,
    name: str,
    k: int = 4,
    overlap: int = 3,
    guidelines: str = "",
    description: str = "",
    created_by_id: int | None = None,
) -> Project:
    name = name.strip()
    if not name:
        raise ProjectError("a project needs a name")
    if len(name) > 200:
        raise ProjectError("a project name has at most 200 characters")
    if name.isdigit():
        raise ProjectError("a project name cannot be only digits (it would read as an id)")
    if not MIN_K <= k <= MAX_K:
        raise ProjectError(f"K must be between {MIN_K} and {MAX_K}, not {k}")
    if overlap < 1:
        raise ProjectError(f"overlap must be at least 1, not {overlap}")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise ProjectError(f"a project named {name!r} already exists")
    project = Project(
        name=name,
        k=k,
        overlap=overlap,
        guidelines=guidelines,
        description=description,
        created_by_id=created_by_id,
    )
    session.add(project)
    session.flush()
    return project


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


def list_projects(*, session: Session) -> Sequence[Project]:
    return session.scalars(select(Project).order_by(Project.created_at, Project.id)).all()


@dataclass(frozen=True)
class ProjectCounts:
    prompts: int = 0
    completions: int = 0
    demonstrations: int = 0
    comparisons: int = 0
    rankable_prompts: int = 0  # prompts with at least K completions
    rankings_wanted: int = 0  # rankable prompts x overlap

    @property
    def rankings_done_pct(self) -> int:
        if not self.rankings_wanted:
            return 0
        return min(100, round(100 * self.comparisons / self.rankings_wanted))


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
    per_prompt = (
        select(Prompt.project_id, Completion.prompt_id, func.count().label("n"))
        .join(Completion, Completion.prompt_id == Prompt.id)
        .where(Prompt.project_id.in_(ids))
        .group_by(Prompt.project_id, Completion.prompt_id)
        .subquery()
    )
    completions = grouped(
        select(per_prompt.c.project_id, func.sum(per_prompt.c.n)).group_by(per_prompt.c.project_id)
    )
    rankable = grouped(
        select(per_prompt.c.project_id, func.count())
        .join(Project, Project.id == per_prompt.c.project_id)
        .where(per_prompt.c.n >= Project.k)
        .group_by(per_prompt.c.project_id)
    )
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
        p.id: ProjectCounts(
            prompts=prompts.get(p.id, 0),
            completions=completions.get(p.id, 0),
            demonstrations=demonstrations.get(p.id, 0),
            comparisons=comparisons.get(p.id, 0),
            rankable_prompts=rankable.get(p.id, 0),
            rankings_wanted=rankable.get(p.id, 0) * p.overlap,
        )
        for p in projects
    }
