"""What labelers produce and the leases that hand them work (design §3, §4)."""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, str_enum, utcnow
from app.dialogue import Message, PromptInput, as_messages


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PromptSource(enum.StrEnum):
    labeler = "labeler"
    import_ = "import"
    api = "api"


class TaskKind(enum.StrEnum):
    rank = "rank"
    demonstration = "demonstration"


class AssignmentState(enum.StrEnum):
    leased = "leased"
    submitted = "submitted"
    skipped = "skipped"
    expired = "expired"


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_prompts_project_id_created_at", "project_id", "created_at"),
        # The rank queue walks a project's open prompts in id order.
        Index("ix_prompts_project_id_rank_full_id", "project_id", "rank_full", "id"),
        # ... and, for queue_order="uncertain", in order of the RM's score gap.
        Index(
            "ix_prompts_project_id_rank_full_score_gap",
            "project_id",
            "rank_full",
            "score_gap",
            "id",
        ),
        # ... and, for queue_order="disagreement", the open prompts that have a disagreement
        # (two rankings or more: few at a time), which it walks first for those above the
        # threshold. The predicates are the queue's own, so the planners can prove they hold.
        Index(
            "ix_prompts_project_id_open_disagreement",
            "project_id",
            "id",
            postgresql_where=sql_text("rank_full IS false AND disagreement IS NOT NULL"),
            sqlite_where=sql_text("rank_full IS 0 AND disagreement IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # A dialogue's plain rendering (app.dialogue.plain_text) for a dialogue prompt.
    text: Mapped[str] = mapped_column(Text)
    # A dialogue prompt's turns [{"role", "content"}, ...] ending with a user turn (design
    # §11); None for a string prompt, which is one user message.
    messages: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    source: Mapped[PromptSource] = mapped_column(str_enum(PromptSource, "prompt_source"))
    external_id: Mapped[str | None] = mapped_column(String(200))
    # The submitter drives train/validation splits: a user, or an external id from an import.
    submitter_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    submitter_external: Mapped[str | None] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # True once the prompt has `overlap` counted rankings, so the queue skips it by index.
    # Kept by the submit (under the prompt's row lock) and refreshed when overlap changes.
    rank_full: Mapped[bool] = mapped_column(Boolean, default=False)
    # Active learning (design §14). The gap between the two best reward-model scores of the
    # answers the queue serves, from the latest ``rlhf score`` of the prompt (None: never
    # scored); ``queue_order="uncertain"`` serves the smallest first.
    score_gap: Mapped[float | None] = mapped_column(Float, default=None)
    # The share of answer pairs its labelers' counted rankings disagree on (None: fewer than
    # two rankings); kept by the submit, read by ``queue_order="disagreement"``.
    disagreement: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    completions: Mapped[list[Completion]] = relationship(
        back_populates="prompt", order_by="Completion.id"
    )

    @property
    def input(self) -> PromptInput:
        """What a model reads (``workers.ml.formatting.format_prompt``): the turns, or the text."""
        return self.messages if self.messages is not None else self.text

    @property
    def turns(self) -> list[Message]:
        """The prompt as turns; a string prompt is one user message."""
        return as_messages(self.input)

    @property
    def submitter_key(self) -> str:
        if self.submitter_id is not None:
            return f"user:{self.submitter_id}"
        return f"external:{self.submitter_external or ''}"


class Demonstration(Base):
    __tablename__ = "demonstrations"
    __table_args__ = (UniqueConstraint("prompt_id", "author_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    author_external: Mapped[str | None] = mapped_column(String(200))
    # The lease it answers (a demonstration task, or the rank task a rewrite came with);
    # unique so a double submit stores one demonstration.
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL"), unique=True
    )
    text: Mapped[str] = mapped_column(Text)
    # A rewrite (design §13): the answer it improves, ranked in the task ``assignment_id``
    # points at (a rank task); exported as a pair too, this text preferred over that answer.
    rewrite_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("completions.id", ondelete="SET NULL", use_alter=True)
    )
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Completion(Base):
    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("prompt_id", "text_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    # "model:<version id>" or "import:<name>"
    origin: Mapped[str] = mapped_column(String(200))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), index=True
    )
    # Set when the answer is a labeler's demonstration put up for ranking: its author must
    # not rank it (design §4).
    demonstration_id: Mapped[int | None] = mapped_column(
        ForeignKey("demonstrations.id", ondelete="SET NULL"), index=True
    )
    sampling_params: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    prompt: Mapped[Prompt] = relationship(back_populates="completions")


class CompletionScore(Base):
    """A reward model's score of one answer (``rlhf score``, design §14): one per answer and
    reward-model version, so a rerun with the same version skips what it scored."""

    __tablename__ = "completion_scores"

    completion_id: Mapped[int] = mapped_column(
        ForeignKey("completions.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assignment(Base):
    """A lease of one task (prompt x kind) to one labeler. One row per labeler, prompt and kind:
    re-leasing after expiry reuses it, and a skip or submit is never served again."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("kind", "prompt_id", "labeler_id"),
        Index("ix_assignments_prompt_id_kind_state", "prompt_id", "kind", "state"),
        Index("ix_assignments_labeler_id_state", "labeler_id", "state"),
        Index("ix_assignments_state_expires_at", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[TaskKind] = mapped_column(str_enum(TaskKind, "task_kind"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[AssignmentState] = mapped_column(
        str_enum(AssignmentState, "assignment_state"), default=AssignmentState.leased
    )
    # Completion ids in the per-labeler random order they are shown in (rank tasks).
    display_order: Mapped[list[Any] | None] = mapped_column()
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    # Autosaved work in progress (a demonstration being written): kept past the lease's end.
    draft: Mapped[str | None] = mapped_column(Text)
    draft_saved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)


#: The external labeler of an AI judge's rankings (``rlhf judge``, design §14): ``ai:<name>``.
#: Not a person: never counted in human agreement or overlap, exported only when asked.
AI_RATER_PREFIX = "ai:"


def is_ai_rater(external: str | None) -> bool:
    return external is not None and external.startswith(AI_RATER_PREFIX)


class Comparison(Base):
    """One labeler's ranking of a prompt's completions. Immutable: an edit adds a revision."""

    __tablename__ = "comparisons"
    __table_args__ = (
        # One ranking per prompt and labeler (internal or external), per revision.
        UniqueConstraint("prompt_id", "labeler_id", "revision"),
        UniqueConstraint("prompt_id", "labeler_external", "revision"),
        # ... and only one of them is the current one.
        Index(
            "uq_comparisons_latest_labeler",
            "prompt_id",
            "labeler_id",
            unique=True,
            sqlite_where=sql_text("is_latest"),
            postgresql_where=sql_text("is_latest"),
        ),
        Index(
            "uq_comparisons_latest_external",
            "prompt_id",
            "labeler_external",
            unique=True,
            sqlite_where=sql_text("is_latest"),
            postgresql_where=sql_text("is_latest"),
        ),
        CheckConstraint(
            "(labeler_id IS NOT NULL) <> (labeler_external IS NOT NULL)", name="one_labeler"
        ),
        CheckConstraint("revision >= 1", name="revision_positive"),
        Index("ix_comparisons_labeler_id_created_at", "labeler_id", "created_at"),
        Index("ix_comparisons_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    # RESTRICT: users are deactivated, never deleted, while their rankings exist.
    labeler_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    labeler_external: Mapped[str | None] = mapped_column(String(200))
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL"), unique=True
    )
    revision: Mapped[int] = mapped_column(default=1)
    is_latest: Mapped[bool] = mapped_column(Boolean, default=True)
    supersedes_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="SET NULL")
    )
    # Completion ids as shown, then the ranking as groups best first ([[3], [1, 7], [2]]).
    displayed_completion_ids: Mapped[list[Any]] = mapped_column()
    ranking: Mapped[list[Any]] = mapped_column()
    ratings: Mapped[dict[str, Any] | None] = mapped_column()  # {completion id: 1..7}
    flags: Mapped[dict[str, Any] | None] = mapped_column()  # {completion id: [flag, ...]}
    not_rankable: Mapped[bool] = mapped_column(Boolean, default=False)
    is_surplus: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GoldRanking(Base):
    """An admin's reference ranking; its prompt is mixed into queues at the project's gold rate."""

    __tablename__ = "gold_rankings"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), unique=True
    )
    ranking: Mapped[list[Any]] = mapped_column()
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
