"""Reviews: an admin's verdict and note on a comparison or a demonstration (design §13).

Revision ID: 5c1d9e7a3b20
Revises: 3d8b6f2a9e41
Create Date: 2026-12-02 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "5c1d9e7a3b20"
down_revision: str | Sequence[str] | None = "3d8b6f2a9e41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A table of its own rather than columns on ``comparisons``: nothing existing is rebuilt
    # (a batch copy of ``comparisons`` on SQLite would break the tables that point at it), and
    # every item without a row is pending.
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=True),
        sa.Column("demonstration_id", sa.Integer(), nullable=True),
        sa.Column(
            "verdict",
            sa.Enum(
                "accepted",
                "rejected",
                name="review_verdict",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(comparison_id IS NOT NULL) <> (demonstration_id IS NOT NULL)",
            name=op.f("ck_reviews_one_target"),
        ),
        sa.ForeignKeyConstraint(
            ["comparison_id"],
            ["comparisons.id"],
            name=op.f("fk_reviews_comparison_id_comparisons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["demonstration_id"],
            ["demonstrations.id"],
            name=op.f("fk_reviews_demonstration_id_demonstrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["users.id"],
            name=op.f("fk_reviews_reviewer_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("comparison_id", name=op.f("uq_reviews_comparison_id")),
        sa.UniqueConstraint("demonstration_id", name=op.f("uq_reviews_demonstration_id")),
    )
    op.create_index("ix_reviews_reviewed_at", "reviews", ["reviewed_at"])
    op.create_index("ix_reviews_reviewer_id", "reviews", ["reviewer_id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_reviewer_id", table_name="reviews")
    op.drop_index("ix_reviews_reviewed_at", table_name="reviews")
    op.drop_table("reviews")
