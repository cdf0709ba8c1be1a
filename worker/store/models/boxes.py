"""Boxes: CAM proposals, human boxes and ground truth, with review state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Enum, Float, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import Base, BoxSource, ReviewStatus, enum_values, utcnow


class Box(Base):
    """An axis-aligned box ``(x1, y1, x2, y2)`` in pixels of the displayed image (xyxy).

    ``version`` is the row version for optimistic concurrency: an update names the version
    it read and is refused when the row moved on.
    """

    __tablename__ = "boxes"
    __table_args__ = (
        Index("ix_boxes_image_source", "image_id", "source"),
        Index("ix_boxes_category_status_score", "category_id", "status", "score"),
        # FK lookups by model version, and replace_boxes' "this model's proposals of these images".
        Index("ix_boxes_model_version_image", "model_version_id", "image_id"),
        CheckConstraint("x1 <= x2 AND y1 <= y2", name="xyxy_ordered"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    source: Mapped[BoxSource] = mapped_column(Enum(BoxSource, name="box_source", values_callable=enum_values, native_enum=False, length=16))
    status: Mapped[ReviewStatus] = mapped_column(
        Enum(ReviewStatus, name="review_status", values_callable=enum_values, native_enum=False, length=16),
        default=ReviewStatus.proposed,
    )
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}
