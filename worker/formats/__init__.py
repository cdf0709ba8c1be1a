"""Exports (COCO, COCO results, YOLO, Pascal VOC) and ground-truth imports (COCO, VOC, YOLO)."""

from worker.formats.export import EXPORT_FORMATS, export_collection
from worker.formats.gt_import import IMPORT_FORMATS, FileIssue, GtImportReport, import_ground_truth
from worker.formats.selection import FormatError

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "FileIssue", "FormatError", "GtImportReport", "export_collection", "import_ground_truth"]
