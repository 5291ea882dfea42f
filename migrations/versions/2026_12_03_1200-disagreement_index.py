"""The rank queue's ``disagreement`` order (design §14) first serves a project's open prompts
whose labelers disagree above its threshold: a partial index of the open prompts that have a
disagreement (two rankings or more, few at a time) finds them without walking every open
prompt of the project on each lease.

Revision ID: 5d1b7f3e9a20
Revises: 3a7c5e9b2d41
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1b7f3e9a20"
down_revision: str | Sequence[str] | None = "3a7c5e9b2d41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_prompts_project_id_open_disagreement",
        "prompts",
        ["project_id", "id"],
        postgresql_where=sa.text("rank_full IS false AND disagreement IS NOT NULL"),
        sqlite_where=sa.text("rank_full IS 0 AND disagreement IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_prompts_project_id_open_disagreement", table_name="prompts")
