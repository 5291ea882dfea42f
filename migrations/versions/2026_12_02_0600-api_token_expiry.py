"""An API token may expire (design §15).

Revision ID: 5c2e9a7d4b18
Revises: 8e4b6f1c2d35
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "5c2e9a7d4b18"
down_revision: str | Sequence[str] | None = "8e4b6f1c2d35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on both databases: a batch copy of ``api_tokens`` is not needed to add a
# nullable column.
def upgrade() -> None:
    op.add_column(
        "api_tokens", sa.Column("expires_at", app.db.UTCDateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("api_tokens", "expires_at")
