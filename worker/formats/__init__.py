"""Exports (COCO, COCO results, YOLO, Pascal VOC) and ground-truth imports (COCO, VOC, YOLO)."""

from worker.formats.export import EXPORT_FORMATS, download_name, export_collection
from worker.formats.gt_import import IMPORT_FORMATS, FileIssue, GtImportReport, import_ground_truth
from worker.formats.selection import FormatError

__all__ = ["EXPORT_FORMATS", "download_name", "IMPORT_FORMATS", "FileIssue", "FormatError", "GtImportReport", "export_collection", "import_ground_truth"]
