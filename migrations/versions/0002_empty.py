"""An empty revision: no schema change.

Databases created by earlier releases record it in their revision chain, so it stays (Alembic
must find every revision a database names); each schema change gets a revision file of its own.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
