"""Recorded review operations: a bulk review write (bulk accept by score, accept or reject a
grid selection), the state each box and image had before it, so one "undo" restores them all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import Base, ImageReviewState, ReviewStatus, enum_values, utcnow


class ReviewOperation(Base):
    """One bulk review write over many boxes. ``kind``: ``bulk_accept`` | ``selection``;
    ``params``: what was asked (category, minimum score, image ids ...); ``n_boxes``: boxes
    changed; ``undone_at``: when it was undone (an operation is undone at most once)."""

    __tablename__ = "review_operations"
    __table_args__ = (Index("ix_review_operations_collection_id", "collection_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[ReviewStatus] = mapped_column(
        Enum(ReviewStatus, name="review_status", values_callable=enum_values, native_enum=False, length=16))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_boxes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column()


class ReviewOperationBox(Base):
    """A box an operation changed: its status and reviewer before, and the row version the
    operation left it at (undo restores it only while the box is still at that version)."""

    __tablename__ = "review_operation_boxes"

    operation_id: Mapped[int] = mapped_column(ForeignKey("review_operations.id", ondelete="CASCADE"), primary_key=True)
    box_id: Mapped[int] = mapped_column(ForeignKey("boxes.id", ondelete="CASCADE"), primary_key=True, index=True)
    previous_status: Mapped[ReviewStatus] = mapped_column(
        Enum(ReviewStatus, name="review_status", values_callable=enum_values, native_enum=False, length=16))
    previous_reviewer_id: Mapped[int | None] = mapped_column(Integer)
    version_after: Mapped[int] = mapped_column(Integer)


class ReviewOperationImage(Base):
    """An image whose review state an operation changed, and the state it had before."""

    __tablename__ = "review_operation_images"

    operation_id: Mapped[int] = mapped_column(ForeignKey("review_operations.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    previous_state: Mapped[ImageReviewState] = mapped_column(
        Enum(ImageReviewState, name="image_review_state", values_callable=enum_values, native_enum=False, length=16))
