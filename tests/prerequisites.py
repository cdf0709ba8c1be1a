"""What a test needs from outside the checkout: servers on 127.0.0.1 and the real-photo dev datasets.

A test whose prerequisite is missing is skipped on a developer machine, the skip reason naming
what was looked for and where; with ``CI=true`` (``.ci/run`` exports it) it fails instead, so CI
never passes by skipping. The dev datasets live beside the checkout (``../shared/datasets``) or
in the folder ``CAMLABEL_SHARED_DATASETS`` names.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True when the environment variable ``CI`` is ``true`` (any case)."""
    return os.environ.get("CI", "").lower() == "true"


def missing(message: str) -> NoReturn:
    """Skip the running test with ``message``; under CI fail it instead."""
    if in_ci():
        pytest.fail(message + " (CI=true: tests that need it must not be skipped)")
    pytest.skip(message)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Go on when ``host:port`` accepts a TCP connection, else :func:`missing`."""
    if not _reachable(host, port):
        missing(f"{name} is not reachable on {host}:{port}")


def shared_datasets() -> Path:
    """The folder holding the dev datasets: ``CAMLABEL_SHARED_DATASETS``, else ``../shared/datasets``."""
    return Path(os.environ.get("CAMLABEL_SHARED_DATASETS") or ROOT.parent / "shared" / "datasets")


def dev_dataset(name: str) -> Path:
    """The dev dataset ``name`` (e.g. ``raccoon-kangaroo``); :func:`missing` when its folder is absent."""
    root = shared_datasets() / name
    if not root.is_dir():
        missing(f"the {name} dev dataset is not at {root} (CAMLABEL_SHARED_DATASETS names the folder holding the datasets)")
    return root


def copy_photos(shared_dataset: Path, dest: Path, per_class: int) -> Path:
    """``dest/<class>/images/*.jpg``: the first ``per_class`` real photos of each class (sorted)."""
    for cls in ("raccoon", "kangaroo"):
        target = dest / cls / "images"
        target.mkdir(parents=True, exist_ok=True)
        photos = sorted(p for p in (shared_dataset / cls / "images").glob("*.jpg") if p.name != "00090.jpg")[:per_class]
        for photo in photos:
            shutil.copy2(photo, target / photo.name)
    return dest
