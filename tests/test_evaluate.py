"""Inference and the evaluation report: test-time augmentation and what the metrics file says."""

from __future__ import annotations

import math

import torch

from pipeline.evaluation import confusion_rows, per_class_rows, report
from pipeline.inference import predict
from pipeline.metrics import scores_from_confusion
from pipeline.runtime import resolve
from pipeline.voc import CLASSES

CPU = resolve("cpu")


def pointwise_model() -> torch.nn.Module:
    """A 1×1 convolution: each pixel's class depends on its colour only, so a flip or a rescale of the input
    cannot change the prediction (up to interpolation at the edges)."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 21, kernel_size=1).eval()


def test_prediction_is_a_full_resolution_class_map():
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    prediction = predict(pointwise_model(), image, CPU)
    assert prediction.shape == (37, 53) and prediction.dtype == torch.long
    assert 0 <= prediction.min() and prediction.max() < 21


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    model = pointwise_model()
    assert torch.equal(predict(model, image, CPU, flip=True), predict(model, image, CPU))
    assert torch.equal(predict(model, image, CPU, scales=[1.0, 1.0]), predict(model, image, CPU))


def test_multi_scale_tta_returns_the_input_size():
    image = torch.randint(0, 256, (3, 33, 47), dtype=torch.uint8)
    assert predict(pointwise_model(), image, CPU, flip=True, scales=[0.5, 0.75, 1.5]).shape == (33, 47)


def test_report_writes_absent_classes_as_null_and_says_why():
    matrix = torch.zeros(21, 21, dtype=torch.int64)
    matrix[0, 0], matrix[1, 1], matrix[1, 0] = 90, 8, 2
    scores = scores_from_confusion(matrix)
    out = report(scores)
    assert out["iou"]["aeroplane"] == 0.8 and out["iou"]["background"] == round(90 / 92, 6)
    assert out["iou"]["tvmonitor"] is None and "tvmonitor" in out["absent_classes"]
    assert out["miou"] == round((0.8 + 90 / 92) / 2, 6)
    assert "19 class(es) absent" in out["note"]
    assert [row["class"] for row in per_class_rows(scores)] == ["background", "aeroplane"]
    rows = confusion_rows(matrix, CLASSES)
    assert len(rows) == 441 and {"truth": "aeroplane", "prediction": "background", "pixels": 2} in rows
    assert not any(isinstance(v, float) and math.isnan(v) for v in out["iou"].values())
