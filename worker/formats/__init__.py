"""Exports (COCO, COCO results, YOLO, Pascal VOC) and ground-truth imports (COCO, VOC, YOLO)."""

from worker.formats.export import (
    EXPORT_FORMATS,
    FORMATS,
    SPLIT_FORMATS,
    ExportFile,
    ExportFormat,
    download_name,
    export_collection,
    export_file,
    export_format,
)
from worker.formats.gt_import import IMPORT_FORMATS, IMPORT_SUFFIXES, FileIssue, GtImportReport, import_ground_truth
from worker.formats.selection import BOX_STATUSES, FormatError
from worker.formats.sink import save_export

__all__ = [
    "BOX_STATUSES", "EXPORT_FORMATS", "FORMATS", "SPLIT_FORMATS", "ExportFile", "ExportFormat", "download_name", "export_collection",
    "export_file", "export_format", "IMPORT_FORMATS", "IMPORT_SUFFIXES", "FileIssue", "FormatError", "GtImportReport", "import_ground_truth", "save_export",
]
