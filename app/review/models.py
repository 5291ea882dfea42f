"""An admin's verdict on a labeler's comparison or demonstration (design §13)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ColumnElement, ForeignKey, Text, exists
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, str_enum, utcnow


class Verdict(enum.StrEnum):
    accepted = "accepted"
    rejected = "rejected"


class Review(Base):
    """One review per item: a re-review replaces the verdict (the audit log keeps the history).
    No row means the item is pending. Rejected work is kept, and left out of exports,
    agreement, consensus, training snapshots and the leaderboard."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(
            "(comparison_id IS NOT NULL) <> (demonstration_id IS NOT NULL)", name="one_target"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    comparison_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="CASCADE"), unique=True
    )
    demonstration_id: Mapped[int | None] = mapped_column(
        ForeignKey("demonstrations.id", ondelete="CASCADE"), unique=True
    )
    verdict: Mapped[Verdict] = mapped_column(str_enum(Verdict, "review_verdict"))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


def not_rejected_comparison(comparison_id: Any) -> ColumnElement[bool]:
    """WHERE clause keeping the comparisons (``comparison_id``: their id column) that no
    admin rejected: what exports, agreement, consensus and the leaderboard count."""
    return ~exists().where(
        Review.comparison_id == comparison_id, Review.verdict == Verdict.rejected
    )


def not_rejected_demonstration(demonstration_id: Any) -> ColumnElement[bool]:
    """WHERE clause keeping the demonstrations no admin rejected (SFT exports and snapshots)."""
    return ~exists().where(
        Review.demonstration_id == demonstration_id, Review.verdict == Verdict.rejected
    )
