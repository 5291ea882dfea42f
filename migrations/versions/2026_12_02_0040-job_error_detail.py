"""A failed job's traceback beside its plain message (design §10).

Revision ID: 8e4b6f1c2d35
Revises: 3f1d2b7c9a10
Create Date: 2026-12-02 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "8e4b6f1c2d35"
down_revision: str | Sequence[str] | None = "3f1d2b7c9a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on both databases (SQLite >= 3.35 drops a column in place): a batch
# copy of ``jobs`` on SQLite would drop the table that ``job_steps`` points at.
def upgrade() -> None:
    op.add_column("jobs", sa.Column("error_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "error_detail")
