"""Declarative base, the one constraint naming convention, shared column types and enums."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, MetaData, Table
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware current UTC time (stored as ``timestamp with time zone``)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamp with time zone`` that always hands back timezone-aware UTC datetimes.

    PostgreSQL keeps the zone; SQLite stores text without one, so values read back there would
    be naive and comparing them with :func:`utcnow` would raise. Naive values written are taken
    to be UTC; aware ones are converted to UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every camlabel table; shares one ``MetaData`` with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class ImageStatus(str, enum.Enum):
    ok = "ok"
    failed = "failed"


class JobKind(str, enum.Enum):
    import_ = "import"
    train = "train"
    infer = "infer"
    export = "export"
    evaluate = "evaluate"
    calibrate = "calibrate"


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class BoxSource(str, enum.Enum):
    cam = "cam"
    human = "human"
    ground_truth = "ground_truth"


class ReviewStatus(str, enum.Enum):
    proposed = "proposed"
    accepted = "accepted"
    rejected = "rejected"
    edited = "edited"


class ImageReviewState(str, enum.Enum):
    """Where a person's review of one image stands (``images.review_state``)."""

    unreviewed = "unreviewed"
    reviewed = "reviewed"  # a person accepted, rejected, edited, drew or deleted one of its boxes
    no_objects = "no_objects"  # a person marked it as showing none of the classes (a negative)


class Role(str, enum.Enum):
    admin = "admin"
    reviewer = "reviewer"


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` a mapped class is declared on (its ``__table__``, which the ORM types as
    any ``FromClause``), for bulk statements that bypass the ORM."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


def enum_values(enum_cls: type[enum.Enum]) -> list[str]:
    """Store enums by value (``"import"``), not by Python member name (``"import_"``)."""
    return [str(member.value) for member in enum_cls]
