"""Per-image review state: ``unreviewed`` | ``reviewed`` | ``no_objects`` (a person marked the
image as showing none of the collection's classes), who set it and when. Exports hold reviewed
images only by default, so the state must be known per image.

Existing images whose boxes a person already accepted, rejected, edited or drew become
``reviewed`` on upgrade.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("review_state", sa.String(16), nullable=False, server_default="unreviewed"))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reviewed_by_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_images_reviewed_by_id_users", "users", ["reviewed_by_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_images_collection_review_state", ["collection_id", "review_state", "id"])
    op.execute(
        "UPDATE images SET review_state = 'reviewed' WHERE EXISTS ("
        "SELECT 1 FROM boxes WHERE boxes.image_id = images.id AND boxes.source != 'ground_truth' "
        "AND (boxes.status IN ('accepted', 'rejected', 'edited') OR boxes.source = 'human'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_collection_review_state")
        batch.drop_constraint("fk_images_reviewed_by_id_users", type_="foreignkey")
        batch.drop_column("reviewed_by_id")
        batch.drop_column("reviewed_at")
        batch.drop_column("review_state")
