"""Model versions (trained or built-in classifiers), their concept maps and evaluations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import Base, utcnow


class ModelVersion(Base):
    """A classifier with a GAP head that infer jobs can apply to any collection.

    ``spec`` is camcore's model spec as JSON (architecture, class names, input size,
    normalisation); ``class_names`` repeats its class list for queries. ``collection_id``
    is the collection it was trained on, ``None`` for built-in ones (ImageNet-1k).
    ``calibration`` holds the ``BoxParams`` infer jobs use: the threshold the train job chose
    without ground truth (:mod:`camcore.threshold_choice`), refitted on reviewed boxes by a
    calibrate job; ``None``: camcore's defaults.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collections.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column()
    class_names: Mapped[list[str]] = mapped_column()
    checkpoint_key: Mapped[str | None] = mapped_column(String(200))
    metrics: Mapped[dict[str, Any] | None] = mapped_column()
    calibration: Mapped[dict[str, Any] | None] = mapped_column()
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConceptMap(Base):
    """The stored CAM of one (image, category) under one model version.

    ``raw_key``: the low-resolution map (float16 array blob) for recomputing boxes;
    ``overlay_key``: the colour-mapped PNG shown in the browser;
    ``codes_key``: the image's descriptor codes (float16 ``[d, h, w]`` array blob, shared by the
    image's maps under this version) that calibration learns a location map from; ``None`` for
    models without them.
    """

    __tablename__ = "concept_maps"
    __table_args__ = (UniqueConstraint("image_id", "category_id", "model_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    raw_key: Mapped[str] = mapped_column(String(200))
    overlay_key: Mapped[str | None] = mapped_column(String(200))
    codes_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """Localization metrics of a collection's boxes against its ground truth."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_collection_created", "collection_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    box_status: Mapped[str] = mapped_column(String(20), default="all")
    metrics: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
