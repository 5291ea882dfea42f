"""A labeling project: what is asked of labelers and which policy samples its answers."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, CheckConstraint, Float, ForeignKey, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from app.models_registry.models import ModelVersion

#: The orders a project's rank queue may serve prompts in (design §14).
QUEUE_ORDERS = ("oldest", "uncertain", "disagreement")
#: A prompt whose labelers disagree on more than this share of answer pairs gets extra
#: rankings (``queue_order="disagreement"``), up to ``max_overlap``.
DEFAULT_DISAGREEMENT_THRESHOLD = 0.3

DEFAULT_FLAGS = ["hallucination", "harmful", "fails the instruction", "contains personal data"]


def default_label_schema() -> dict[str, Any]:
    return {"likert": True, "flags": list(DEFAULT_FLAGS)}


def default_sampling_params() -> dict[str, Any]:
    # Pure sampling, as InstructGPT samples its comparison answers (design §5).
    return {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 256}


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("k >= 2 AND k <= 9", name="k_range"),
        CheckConstraint("overlap >= 1", name="overlap_positive"),
        CheckConstraint("gold_rate >= 0 AND gold_rate <= 1", name="gold_rate_range"),
        CheckConstraint(
            "queue_order IN ('oldest', 'uncertain', 'disagreement')", name="queue_order_known"
        ),
        CheckConstraint("max_overlap IS NULL OR max_overlap >= overlap", name="max_overlap_range"),
        CheckConstraint(
            "disagreement_threshold >= 0 AND disagreement_threshold <= 1",
            name="disagreement_threshold_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    k: Mapped[int] = mapped_column(default=4)
    overlap: Mapped[int] = mapped_column(default=3)
    label_schema: Mapped[dict[str, Any]] = mapped_column(default=default_label_schema)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    sampling_params: Mapped[dict[str, Any]] = mapped_column(default=default_sampling_params)
    # use_alter: projects -> model_versions -> jobs -> projects is a cycle.
    current_policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL", use_alter=True)
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Open to every labeler, or (restricted) to its members only (design §13).
    restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Which prompt the rank queue serves next (design §14): "oldest" first, the RM's most
    # "uncertain" (closest top scores, from ``rlhf score``) first, or "disagreement": prompts
    # whose labelers disagree above ``disagreement_threshold`` get rankings up to
    # ``max_overlap`` (None: ``overlap + 2``).
    queue_order: Mapped[str] = mapped_column(String(20), default="oldest", server_default="oldest")
    max_overlap: Mapped[int | None] = mapped_column(default=None)
    disagreement_threshold: Mapped[float] = mapped_column(
        Float,
        default=DEFAULT_DISAGREEMENT_THRESHOLD,
        server_default=str(DEFAULT_DISAGREEMENT_THRESHOLD),
    )

    current_policy: Mapped[ModelVersion | None] = relationship(foreign_keys=[current_policy_id])

    @property
    def extra_overlap(self) -> int:
        """The most rankings a prompt whose labelers disagree may get (``disagreement``)."""
        return self.max_overlap if self.max_overlap is not None else self.overlap + 2

    def __repr__(self) -> str:
        return f"<Project {self.id} {self.name!r} k={self.k}>"


class ProjectMember(Base):
    """A labeler who may label a restricted project (an open project needs no members)."""

    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
