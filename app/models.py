"""Every table, imported in one place so Alembic and the mappers see the whole schema."""

from app.audit.models import AuditEvent
from app.auth.models import ApiToken, LoginAttempt, Role, User, UserSession
from app.db import Base
from app.exports.models import Export
from app.jobs.models import Job, JobStatus, JobStep
from app.labeling.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Completion,
    CompletionScore,
    Demonstration,
    GoldRanking,
    Prompt,
    PromptSource,
    TaskKind,
)
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project, ProjectMember
from app.review.models import Review, Verdict

__all__ = [
    "ApiToken",
    "Assignment",
    "AssignmentState",
    "AuditEvent",
    "Base",
    "Comparison",
    "Completion",
    "CompletionScore",
    "Demonstration",
    "Export",
    "GoldRanking",
    "Job",
    "JobStatus",
    "JobStep",
    "LoginAttempt",
    "ModelKind",
    "ModelVersion",
    "Project",
    "ProjectMember",
    "Prompt",
    "PromptSource",
    "Review",
    "Role",
    "TaskKind",
    "User",
    "UserSession",
    "Verdict",
]
