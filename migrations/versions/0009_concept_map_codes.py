"""Concept maps: ``codes_key``, the image's descriptor codes (a float16 ``[d, h, w]`` array blob,
shared by the image's maps under one model version) that calibration learns a location map from;
NULL for models without them and for maps stored before.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("concept_maps") as batch:
        batch.add_column(sa.Column("codes_key", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("concept_maps") as batch:
        batch.drop_column("codes_key")
