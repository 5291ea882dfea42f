"""Dialogue prompts: prompts.messages holds a dialogue's turns (design §11).

Revision ID: 3d8b6f2a9e41
Revises: 7a3f1e9c2b64
Create Date: 2026-12-02 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3d8b6f2a9e41"
down_revision: str | Sequence[str] | None = "7a3f1e9c2b64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (a batch copy of ``prompts`` on SQLite would break the tables that
    # point at it); every existing prompt is a string prompt (NULL).
    op.add_column("prompts", sa.Column("messages", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prompts") as batch:
        batch.drop_column("messages")
