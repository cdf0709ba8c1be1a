"""Images of a collection and their image-level tags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import Base, ImageReviewState, ImageStatus, enum_values, utcnow


class Image(Base):
    """One imported image file.

    ``width``/``height`` are pixels as displayed (after EXIF rotation); ``rel_path`` is the
    path relative to what was imported (``raccoon/images/raccoon-1.jpg``), ``storage_key`` the
    content-addressed blob key. Failed images keep their row with ``failure_reason``.
    ``n_boxes``/``min_score``/``max_score`` summarise the image's non-ground-truth boxes so
    the review grid can filter and sort 100k images on an index. ``review_state`` says whether a
    person reviewed the image (``worker.store.review_state``); exports hold reviewed images only
    unless asked otherwise.
    """

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("collection_id", "sha256"),
        # Keyset pagination of one collection: WHERE collection_id = ? AND id > ? ORDER BY id LIMIT n.
        Index("ix_images_collection_id_id", "collection_id", "id"),
        Index("ix_images_collection_min_score", "collection_id", "min_score", "id"),
        Index("ix_images_collection_n_boxes", "collection_id", "n_boxes", "id"),
        Index("ix_images_collection_review_state", "collection_id", "review_state", "id"),
        # Review progress (images by status and review state) from the index alone.
        Index("ix_images_collection_status_review", "collection_id", "status", "review_state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    rel_path: Mapped[str] = mapped_column(String(1024))
    storage_key: Mapped[str | None] = mapped_column(String(200))
    thumb_key: Mapped[str | None] = mapped_column(String(200))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[ImageStatus] = mapped_column(
        Enum(ImageStatus, name="image_status", values_callable=enum_values, native_enum=False, length=16),
        default=ImageStatus.ok,
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    n_boxes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    min_score: Mapped[float | None] = mapped_column(Float)
    max_score: Mapped[float | None] = mapped_column(Float)
    review_state: Mapped[ImageReviewState] = mapped_column(
        Enum(ImageReviewState, name="image_review_state", values_callable=enum_values, native_enum=False, length=16),
        default=ImageReviewState.unreviewed, server_default=ImageReviewState.unreviewed.value,
    )
    reviewed_at: Mapped[datetime | None] = mapped_column()
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageTag(Base):
    """An image-level label: image ``image_id`` shows category ``category_id``."""

    __tablename__ = "image_tags"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True, index=True)
