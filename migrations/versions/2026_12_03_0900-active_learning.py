"""Active learning and AI feedback (design §14): the project's queue order, per-answer reward
model scores, and the per-prompt figures the queue orders by.

Revision ID: 3a7c5e9b2d41
Revises: 8e2f4a6c1d39
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "3a7c5e9b2d41"
down_revision: str | Sequence[str] | None = "8e2f4a6c1d39"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("queue_order", sa.String(length=20), server_default="oldest", nullable=False)
        )
        batch.add_column(sa.Column("max_overlap", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("disagreement_threshold", sa.Float(), server_default="0.3", nullable=False)
        )
        batch.create_check_constraint(
            op.f("ck_projects_queue_order_known"),
            "queue_order IN ('oldest', 'uncertain', 'disagreement')",
        )
        batch.create_check_constraint(
            op.f("ck_projects_max_overlap_range"), "max_overlap IS NULL OR max_overlap >= overlap"
        )
        batch.create_check_constraint(
            op.f("ck_projects_disagreement_threshold_range"),
            "disagreement_threshold >= 0 AND disagreement_threshold <= 1",
        )
    with op.batch_alter_table("prompts") as batch:
        batch.add_column(sa.Column("score_gap", sa.Float(), nullable=True))
        batch.add_column(sa.Column("disagreement", sa.Float(), nullable=True))
    op.create_index(
        "ix_prompts_project_id_rank_full_score_gap",
        "prompts",
        ["project_id", "rank_full", "score_gap", "id"],
    )
    op.create_table(
        "completion_scores",
        sa.Column("completion_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["completion_id"],
            ["completions.id"],
            name=op.f("fk_completion_scores_completion_id_completions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_completion_scores_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "completion_id", "model_version_id", name=op.f("pk_completion_scores")
        ),
    )
    op.create_index(
        op.f("ix_completion_scores_model_version_id"),
        "completion_scores",
        ["model_version_id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_completion_scores_model_version_id"), table_name="completion_scores")
    op.drop_table("completion_scores")
    op.drop_index("ix_prompts_project_id_rank_full_score_gap", table_name="prompts")
    with op.batch_alter_table("prompts") as batch:
        batch.drop_column("disagreement")
        batch.drop_column("score_gap")
    with op.batch_alter_table("projects") as batch:
        batch.drop_constraint(op.f("ck_projects_disagreement_threshold_range"), type_="check")
        batch.drop_constraint(op.f("ck_projects_max_overlap_range"), type_="check")
        batch.drop_constraint(op.f("ck_projects_queue_order_known"), type_="check")
        batch.drop_column("disagreement_threshold")
        batch.drop_column("max_overlap")
        batch.drop_column("queue_order")
