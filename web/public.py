"""What users may see of job rows: no absolute server paths.

Import jobs carry the staging folder, the saved upload and the manifest as absolute paths in their
``params`` (the worker needs them); CLI imports carry the operator's own path. Users see the
parameters they chose, with those path keys replaced by a ``source`` label, and any text (errors,
results) with absolute paths written as their last component.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Parameters that hold server paths: the worker's business, never shown.
PRIVATE_PARAMS = frozenset({"path", "staging", "manifest", "upload_index", "source_path", "out", "output"})
_ABSOLUTE = re.compile(r"(?<![\w/.:])/(?:[\w.\-]+/)+([\w.\-]+)")  # /a/b/c.jpg (not URLs, not relative paths)


def public_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` without server paths; an import says ``source``: ``upload`` or ``server folder``."""
    if not params:
        return {}
    shown = {k: v for k, v in params.items() if k not in PRIVATE_PARAMS and not _is_absolute_path(v)}
    if "path" in params:
        shown["source"] = "upload" if params.get("staging") else "server folder"
        if params.get("manifest"):
            shown["manifest"] = True
    return shown


def public_text(text: Any, data_dir: str | Path | None = None) -> Any:
    """``text`` with absolute paths (under ``data_dir`` or elsewhere) shown as their last component;
    lists and dicts are cleaned recursively, other values returned as they are."""
    if isinstance(text, str):
        if data_dir:
            inside = re.compile(re.escape(str(Path(data_dir))) + r"(?:/([^/\s'\"]+))*")
            text = inside.sub(lambda m: m.group(1) or "<data>", text)
        return _ABSOLUTE.sub(lambda m: m.group(1), text)
    if isinstance(text, list):
        return [public_text(v, data_dir) for v in text]
    if isinstance(text, dict):
        return {k: public_text(v, data_dir) for k, v in text.items()}
    return text


def _is_absolute_path(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith("/") or bool(re.match(r"^[A-Za-z]:[\\/]", value)))
