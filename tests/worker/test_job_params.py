"""Job parameter classes: what they accept, the field a refusal names, and the stored form."""

from __future__ import annotations

from typing import Any

import pytest

from worker.jobs.params import (
    PARAMS,
    CalibrateParams,
    EvaluateParams,
    ExportParams,
    ImportParams,
    InferParams,
    ParamError,
    TrainParams,
    parse_params,
)
from worker.store.models import JobKind


def test_every_job_kind_has_a_parameter_class() -> None:
    assert set(PARAMS) == set(JobKind)


def test_form_text_and_json_values_read_the_same() -> None:
    from_form = TrainParams.from_dict({"mode": "finetune", "epochs": "20", "arch": "tiny_cnn", "csrf_token": "x"})
    from_json = TrainParams.from_dict({"mode": "finetune", "epochs": 20, "arch": "tiny_cnn"})
    assert from_form == from_json and from_form.epochs == 20
    assert from_form.to_dict() == {"mode": "finetune", "epochs": 20, "arch": "tiny_cnn"}


@pytest.mark.parametrize("cls, d", [
    (TrainParams, {}), (TrainParams, {"mode": "finetune", "epochs": 3, "seed": 7, "input_size": 128, "name": "m", "weights": None}),
    (InferParams, {"model_version_id": "ImageNet:resnet18", "top_k": 2, "box_params": {"threshold": 0.3}}),
    (ExportParams, {"format": "yolo", "status": "all", "val_fraction": 0.2, "seed": 1, "include_unreviewed": "on"}),
    (EvaluateParams, {"box_status": "reviewed", "model_version_id": 4}), (CalibrateParams, {"preview": True}),
    (ImportParams, {"path": "/data/photos", "manifest": "/data/tags.csv"}),
])
def test_stored_form_reads_back_to_the_same_parameters(cls: Any, d: dict[str, Any]) -> None:
    params = cls.from_dict(d)
    assert cls.from_dict(params.to_dict()) == params
    assert parse_params(cls.kind, params.to_dict()) == params


def test_defaults_are_not_stored() -> None:
    assert InferParams.from_dict({"model_version_id": "imagenet"}).to_dict() == {"model_version_id": "imagenet"}
    assert EvaluateParams.from_dict({"box_status": ""}).to_dict() == {}


@pytest.mark.parametrize("kind, d, field, words", [
    ("train", {"mode": "deep"}, "mode", "must be one of ['linear', 'finetune']"),
    ("train", {"epochs": [3]}, "epochs", "must be an integer"),
    ("train", {"epochs": 10**6}, "epochs", "must be between 1 and 20000"),
    ("train", {"mode": "finetune", "epochs": 501}, "epochs", "must be between 1 and 500"),
    ("infer", {"model_version_id": "imagenet:vgg"}, "model_version_id", "'imagenet:<arch>'"),
    ("infer", {"model_version_id": 2**63}, "model_version_id", "must be between"),
    ("export", {"format": "csv"}, "format", "must be one of ['coco', 'coco-results', 'yolo', 'voc']"),
    ("export", {"val_fraction": "half"}, "val_fraction", "must be a number in [0, 1)"),
    ("export", {"format": "coco", "val_fraction": 0.2}, "val_fraction", "is for yolo and voc exports"),
    ("export", {"format": "voc", "val_fraction": 1}, "val_fraction", "must be in [0, 1)"),
    ("export", {"include_unreviewed": "maybe"}, "include_unreviewed", "must be true or false"),
    ("evaluate", {"box_status": "maybe"}, "box_status", "must be one of ['all', 'accepted', 'reviewed']"),
    ("calibrate", {"preview": "maybe"}, "preview", "must be true or false"),
    ("import", {"manifest": "/x.csv"}, "path", "is required"),
])
def test_a_refusal_names_the_field(kind: str, d: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ParamError) as refused:
        parse_params(kind, d)
    assert refused.value.field == field and str(refused.value).startswith(f"{field} ") and words in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_pretrained_weights_follow_the_architecture_unless_given() -> None:
    assert TrainParams.from_dict({}).pretrained == "imagenet"
    assert TrainParams.from_dict({"arch": "tiny_cnn"}).pretrained is None
    assert TrainParams.from_dict({"weights": None}).pretrained is None
