"""Rewrites: a demonstration may improve one of the answers its author ranked (design §13).

Revision ID: 8e2f4a6c1d39
Revises: 5c1d9e7a3b20
Create Date: 2026-12-02 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e2f4a6c1d39"
down_revision: str | Sequence[str] | None = "5c1d9e7a3b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A batch copy on SQLite (it cannot add a foreign key in place): env.py migrates with
    # its foreign keys off, so dropping the old table sets no completion's
    # demonstration_id to NULL. Every existing demonstration is no rewrite (NULL).
    with op.batch_alter_table("demonstrations") as batch:
        batch.add_column(sa.Column("rewrite_of_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_demonstrations_rewrite_of_id_completions"),
            "completions",
            ["rewrite_of_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("demonstrations") as batch:
        batch.drop_constraint(
            op.f("fk_demonstrations_rewrite_of_id_completions"), type_="foreignkey"
        )
        batch.drop_column("rewrite_of_id")
