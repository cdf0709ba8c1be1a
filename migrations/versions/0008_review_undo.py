"""Review: recorded bulk operations, so one undo restores each box's previous status and each
image's previous review state; an index that counts a collection's images by status and review
state without reading the table (the review progress line).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

_STATUS = sa.Enum("proposed", "accepted", "rejected", "edited", name="review_status", native_enum=False, length=16)
_STATE = sa.Enum("unreviewed", "reviewed", "no_objects", name="image_review_state", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "review_operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("n_boxes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], name=op.f("fk_review_operations_collection_id_collections"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_review_operations_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_operations")),
    )
    op.create_index("ix_review_operations_collection_id", "review_operations", ["collection_id", "id"])
    op.create_table(
        "review_operation_boxes",
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("previous_status", _STATUS, nullable=False),
        sa.Column("previous_reviewer_id", sa.Integer(), nullable=True),
        sa.Column("version_after", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["operation_id"], ["review_operations.id"], name=op.f("fk_review_operation_boxes_operation_id_review_operations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["box_id"], ["boxes.id"], name=op.f("fk_review_operation_boxes_box_id_boxes"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("operation_id", "box_id", name=op.f("pk_review_operation_boxes")),
    )
    op.create_index(op.f("ix_review_operation_boxes_box_id"), "review_operation_boxes", ["box_id"])
    op.create_table(
        "review_operation_images",
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("previous_state", _STATE, nullable=False),
        sa.ForeignKeyConstraint(["operation_id"], ["review_operations.id"], name=op.f("fk_review_operation_images_operation_id_review_operations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_review_operation_images_image_id_images"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("operation_id", "image_id", name=op.f("pk_review_operation_images")),
    )
    op.create_index(op.f("ix_review_operation_images_image_id"), "review_operation_images", ["image_id"])
    with op.batch_alter_table("images") as batch:
        batch.create_index("ix_images_collection_status_review", ["collection_id", "status", "review_state"])


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_collection_status_review")
    op.drop_index(op.f("ix_review_operation_images_image_id"), table_name="review_operation_images")
    op.drop_table("review_operation_images")
    op.drop_index(op.f("ix_review_operation_boxes_box_id"), table_name="review_operation_boxes")
    op.drop_table("review_operation_boxes")
    op.drop_index("ix_review_operations_collection_id", table_name="review_operations")
    op.drop_table("review_operations")
