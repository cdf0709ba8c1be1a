"""All tables, importable from one place (Alembic's ``target_metadata`` is ``Base.metadata``)."""

from worker.store.models.base import (
    Base,
    BoxSource,
    ImageReviewState,
    ImageStatus,
    JobKind,
    JobStatus,
    ReviewStatus,
    Role,
    table_of,
)
from worker.store.models.boxes import Box
from worker.store.models.collections import Category, Collection
from worker.store.models.images import Image, ImageTag
from worker.store.models.jobs import Job
from worker.store.models.modeling import ConceptMap, Evaluation, ModelVersion
from worker.store.models.review import ReviewOperation, ReviewOperationBox, ReviewOperationImage
from worker.store.models.users import ApiToken, User

__all__ = [
    "ApiToken", "Base", "Box", "BoxSource", "Category", "Collection", "ConceptMap", "Evaluation", "Image",
    "ImageReviewState", "ImageStatus", "ImageTag", "Job", "JobKind", "JobStatus", "ModelVersion", "ReviewOperation", "ReviewOperationBox",
    "ReviewOperationImage", "ReviewStatus", "Role", "User", "table_of",
]
