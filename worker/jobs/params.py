"""Typed parameters of every job kind: one class per kind, shared by job submission, the web and the CLI.

Each class has ``from_dict(d) -> Self`` (plain JSON values or form text: ``"20"`` is an integer,
``""`` is absent; keys it does not know are ignored) raising :class:`ParamError`, a
``ValueError`` whose ``field`` names the parameter at fault, and ``to_dict()``, the JSON stored in
``jobs.params`` (only the fields that differ from their default, so
``from_dict(p.to_dict()) == p``). :func:`parse_params` picks the class by job kind.

What needs the database or torch (does the model version exist, is the architecture known) is
checked by :mod:`worker.preflight`; these classes check shapes, types and ranges only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from camcore.limits import MAX_EPOCHS, check_epochs
from worker.formats.export import EXPORT_FORMATS, SOURCES, SPLIT_FORMATS
from worker.formats.selection import BOX_STATUSES as EXPORT_BOX_STATUSES
from worker.store.models import JobKind

__all__ = [
    "CalibrateParams", "EvaluateParams", "ExportParams", "IMAGENET_ARCHS", "ImportParams", "InferParams", "JobParams",
    "ParamError", "TRAIN_MODES", "TrainParams", "parse_params",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Largest train/val draw seed of an export.
MAX_SEED = 2**31 - 1
#: Train modes: a linear probe on frozen features, or fine-tuning the whole network.
TRAIN_MODES: tuple[str, ...] = tuple(MAX_EPOCHS)
#: Which boxes an evaluate job scores: all proposals, accepted boxes, accepted boxes on reviewed images.
EVALUATE_BOX_STATUSES = ("all", "accepted", "reviewed")
#: The built-in ImageNet classifiers an infer job can use (``imagenet`` = the first).
IMAGENET_ARCHS = ("efficientnet_lite0", "resnet18", "resnet50")
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no", "")


class ParamError(ValueError):
    """A job parameter that cannot be used; ``field`` names it and the message says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MAX_INPUT_SIZE = 4096
"""Largest network input side in pixels a train job accepts."""

def _absent(d: Mapping[str, Any], name: str) -> bool:
    return d.get(name) is None or (isinstance(d.get(name), str) and not d[name].strip())


def _int(d: Mapping[str, Any], name: str, default: int | None = None, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int | None:
    """``d[name]`` as an integer in ``[minimum, maximum]`` (text allowed), or ``default`` when absent."""
    if _absent(d, name):
        return default
    raw = d[name]
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ParamError(name, f"must be an integer, not {_show(raw)}")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else raw
    except ValueError:
        raise ParamError(name, f"must be an integer, not {_show(raw)}") from None
    if not minimum <= value <= maximum:
        raise ParamError(name, f"must be between {minimum} and {maximum}, not {value}")
    return value


def _fraction(d: Mapping[str, Any], name: str) -> float | None:
    """``d[name]`` as a finite float in ``[0, 1)`` (text allowed), or ``None`` when absent."""
    if _absent(d, name):
        return None
    raw = d[name]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ParamError(name, f"must be a number in [0, 1), not {_show(raw)}")
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(name, f"must be a number in [0, 1), not {_show(raw)}") from None
    if not 0 <= value < 1:
        raise ParamError(name, f"must be in [0, 1), not {_show(raw)}")
    return value


def _bool(d: Mapping[str, Any], name: str) -> bool:
    """``d[name]`` as true or false (JSON booleans, or ``1/true/on/yes`` and ``0/false/off/no``)."""
    raw = d.get(name)
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ParamError(name, f"must be true or false, not {_show(raw)}")


def _str(d: Mapping[str, Any], name: str, default: str | None = None, *, choices: tuple[str, ...] | None = None) -> str | None:
    """``d[name]`` as text (one of ``choices`` when given), or ``default`` when absent."""
    if _absent(d, name):
        return default
    raw = d[name]
    if not isinstance(raw, str):
        raise ParamError(name, f"must be text, not {_show(raw)}")
    value = raw.strip()
    if choices is not None and value not in choices:
        raise ParamError(name, f"must be one of {list(choices)}, not {_show(value)}")
    return value


def _model_ref(d: Mapping[str, Any], name: str = "model_version_id") -> int | str | None:
    """A model version id, or ``imagenet`` / ``imagenet:<arch>`` (lower case) for a built-in classifier."""
    raw = d.get(name)
    if isinstance(raw, str) and raw.strip().lower().startswith("imagenet"):
        ref = raw.strip().lower()
        arch = ref.split(":", 1)[1] if ":" in ref else IMAGENET_ARCHS[0]
        if ref not in ("imagenet", f"imagenet:{arch}") or arch not in IMAGENET_ARCHS:
            raise ParamError(name, f"must be a model version id, 'imagenet' or 'imagenet:<arch>' with arch one of {list(IMAGENET_ARCHS)}")
        return ref
    return _int(d, name, minimum=1)


@dataclass(frozen=True)
class JobParams:
    """Base of the parameter classes: :meth:`to_dict` (fields that differ from their default)."""

    kind: ClassVar[JobKind]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON values of the fields that differ from their default."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


@dataclass(frozen=True)
class ImportParams(JobParams):
    """``path``: folder or .zip the worker reads; ``manifest``: a CSV of ``file_name,tags``; a web
    upload adds ``staging`` (its folder, deleted when the job ends) and ``upload_index``."""

    kind: ClassVar[JobKind] = JobKind.import_
    path: str = ""
    manifest: str | None = None
    staging: str | None = None
    upload_index: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        path = _str(d, "path")
        if path is None:
            raise ParamError("path", "is required: the folder, .zip or upload to import")
        return cls(path=path, manifest=_str(d, "manifest"), staging=_str(d, "staging"), upload_index=_str(d, "upload_index"))


@dataclass(frozen=True)
class TrainParams(JobParams):
    """``arch`` (a camcore architecture), ``mode`` (:data:`TRAIN_MODES`), ``epochs`` (``None``: the
    mode's default; at most ``camcore.limits.MAX_EPOCHS[mode]``), ``seed``, ``input_size`` (pixels;
    ``None``: the architecture's), ``name`` of the model version, ``weights`` (``imagenet``, ``none``
    or ``default``: ImageNet except for ``tiny_cnn``)."""

    kind: ClassVar[JobKind] = JobKind.train
    arch: str = "efficientnet_lite0"
    mode: str = "linear"
    epochs: int | None = None
    seed: int = 0
    input_size: int | None = None
    name: str | None = None
    weights: str = "default"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        mode = _str(d, "mode", cls.mode, choices=TRAIN_MODES) or cls.mode
        try:
            epochs = check_epochs(mode, d.get("epochs") if not _absent(d, "epochs") else None)
        except ValueError as exc:
            raise ParamError("epochs", str(exc).removeprefix("epochs ")) from exc
        weights = "none" if "weights" in d and d["weights"] is None else _str(d, "weights", cls.weights, choices=("imagenet", "none", "default"))
        return cls(arch=_str(d, "arch", cls.arch) or cls.arch, mode=mode, epochs=epochs, seed=_int(d, "seed", 0) or 0,
                   input_size=_int(d, "input_size", minimum=16, maximum=MAX_INPUT_SIZE), name=_str(d, "name"), weights=weights or cls.weights)

    @property
    def pretrained(self) -> str | None:
        """The weights to start from: ``"imagenet"`` or ``None`` (random initialisation)."""
        if self.weights == "default":
            return None if self.arch == "tiny_cnn" else "imagenet"
        return None if self.weights == "none" else self.weights


@dataclass(frozen=True)
class InferParams(JobParams):
    """``model_version_id`` (an id, ``imagenet``/``imagenet:<arch>``, or ``None``: the newest model of
    the collection), ``top_k`` (classes per image without a known tag), ``box_params`` (camcore
    ``BoxParams`` fields; ``None``: the model version's calibration), ``batch_size``."""

    kind: ClassVar[JobKind] = JobKind.infer
    model_version_id: int | str | None = None
    top_k: int = 1
    box_params: dict[str, Any] | None = None
    batch_size: int = 16

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        box_params = d.get("box_params")
        if box_params is not None and not isinstance(box_params, Mapping):
            raise ParamError("box_params", f"must be an object of BoxParams fields, not {_show(box_params)}")
        return cls(model_version_id=_model_ref(d), top_k=_int(d, "top_k", 1, minimum=1, maximum=1000) or 1,
                   box_params=dict(box_params) if box_params is not None else None,
                   batch_size=_int(d, "batch_size", 16, minimum=1, maximum=4096) or 16)


@dataclass(frozen=True)
class ExportParams(JobParams):
    """``format`` (``worker.formats.export.EXPORT_FORMATS``), ``status`` (accepted boxes or all),
    ``source`` (predictions or ground truth), ``model_version_id``, ``include_unreviewed``, and for
    split formats (yolo, voc) ``val_fraction`` (``[0, 1)``) with its ``seed`` (``0..MAX_SEED``)."""

    kind: ClassVar[JobKind] = JobKind.export
    format: str = "coco"
    status: str = "accepted"
    source: str | None = None
    model_version_id: int | None = None
    include_unreviewed: bool = False
    val_fraction: float | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        fmt = _str(d, "format", cls.format, choices=EXPORT_FORMATS) or cls.format
        fraction = _fraction(d, "val_fraction")
        if fraction and fmt not in SPLIT_FORMATS:
            raise ParamError("val_fraction", f"(a train/val split) is for {' and '.join(SPLIT_FORMATS)} exports, not {fmt}")
        return cls(format=fmt, status=_str(d, "status", cls.status, choices=EXPORT_BOX_STATUSES) or cls.status,
                   source=_str(d, "source", choices=SOURCES), model_version_id=_int(d, "model_version_id", minimum=1),
                   include_unreviewed=_bool(d, "include_unreviewed"), val_fraction=fraction,
                   seed=_int(d, "seed", minimum=0, maximum=MAX_SEED))


@dataclass(frozen=True)
class EvaluateParams(JobParams):
    """``box_status`` (:data:`EVALUATE_BOX_STATUSES`) and ``model_version_id`` (``None``: all versions)."""

    kind: ClassVar[JobKind] = JobKind.evaluate
    box_status: str = "all"
    model_version_id: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        return cls(box_status=_str(d, "box_status", cls.box_status, choices=EVALUATE_BOX_STATUSES) or cls.box_status,
                   model_version_id=_int(d, "model_version_id", minimum=1))


@dataclass(frozen=True)
class CalibrateParams(JobParams):
    """``model_version_id`` (``None``: the newest version with maps here) and ``preview`` (report
    what would be learned, store nothing)."""

    kind: ClassVar[JobKind] = JobKind.calibrate
    model_version_id: int | None = None
    preview: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        return cls(model_version_id=_int(d, "model_version_id", minimum=1), preview=_bool(d, "preview"))


PARAMS: dict[JobKind, type[JobParams]] = {cls.kind: cls for cls in (ImportParams, TrainParams, InferParams, ExportParams, EvaluateParams, CalibrateParams)}


def parse_params(kind: JobKind | str, d: Mapping[str, Any]) -> JobParams:
    """``d`` checked by the parameter class of job kind ``kind`` (:class:`ParamError` when it cannot be used)."""
    return PARAMS[JobKind(kind)].from_dict(d)
