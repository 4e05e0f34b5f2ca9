"""Inference and the evaluation report: test-time augmentation and what the metrics file says."""

from __future__ import annotations

import math

import torch

from pipeline.core.labels import CLASSES, VOC_LABELS
from pipeline.core.params.inference import InferenceParams
from pipeline.core.runtime import resolve
from pipeline.evaluation.evaluate import confusion_rows, evaluate, per_class_rows, report, same_size_batches
from pipeline.evaluation.metrics import scores_from_confusion
from pipeline.evaluation.predict import predict, predict_batch

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
    assert torch.equal(predict(model, image, CPU, InferenceParams(flip=True)), predict(model, image, CPU))
    assert torch.equal(predict(model, image, CPU, InferenceParams(scales=[1.0, 1.0])), predict(model, image, CPU))


def test_multi_scale_tta_returns_the_input_size():
    image = torch.randint(0, 256, (3, 33, 47), dtype=torch.uint8)
    assert predict(pointwise_model(), image, CPU, InferenceParams(flip=True, scales=[0.5, 0.75, 1.5])).shape == (33, 47)


def test_report_writes_absent_classes_as_null_and_says_why():
    matrix = torch.zeros(21, 21, dtype=torch.int64)
    matrix[0, 0], matrix[1, 1], matrix[1, 0] = 90, 8, 2
    scores = scores_from_confusion(matrix, CLASSES)
    out = report(scores)
    assert out["iou"]["aeroplane"] == 0.8 and out["iou"]["background"] == round(90 / 92, 6)
    assert out["iou"]["tvmonitor"] is None and "tvmonitor" in out["absent_classes"]
    assert out["miou"] == round((0.8 + 90 / 92) / 2, 6)
    assert "19 class(es) absent" in out["note"]
    assert [row["class"] for row in per_class_rows(scores)] == ["background", "aeroplane"]
    rows = confusion_rows(matrix, CLASSES)
    assert len(rows) == 441 and {"truth": "aeroplane", "prediction": "background", "pixels": 2} in rows
    assert not any(isinstance(v, float) and math.isnan(v) for v in out["iou"].values())


class OneByOne(torch.nn.Module):
    """`pointwise_model` applied to each image of a batch on its own: batch-invariant by construction, whatever
    kernels the CPU picks for a batch, so the tests below check the batching, not the CPU's rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = pointwise_model()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(image.unsqueeze(0)) for image in batch])


class SizedImages:
    """A dataset in PreparedSplit's shape (`sizes`, `labels`, `ds[i]` → uint8 image, label) that counts its reads."""

    labels = VOC_LABELS

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        generator = torch.Generator().manual_seed(0)
        self.sizes = sizes
        self.items = [(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator),
                       torch.randint(0, 21, (h, w), dtype=torch.uint8, generator=generator)) for h, w in sizes]
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.items[index]


def test_batches_hold_one_size_in_index_order_and_never_more_than_asked():
    sizes = [(20, 30), (30, 20), (20, 30), (20, 30), (25, 25), (20, 30), (30, 20)]
    dataset = SizedImages(sizes)
    assert same_size_batches(dataset, list(range(7)), 1) == [[i] for i in range(7)]
    assert same_size_batches(dataset, list(range(7)), 2) == [[0, 2], [3, 5], [1, 6], [4]]
    assert same_size_batches(dataset, [6, 5, 3, 1], 8) == [[6, 1], [5, 3]]  # a rank's shard, in its order
    assert dataset.reads == 0  # sizes come from `sizes`, not from decoding
    assert same_size_batches(list(dataset.items), list(range(7)), 3) == [[0, 2, 3], [5], [1, 6], [4]]


def test_batched_evaluation_gives_each_image_its_own_prediction_and_the_same_scores():
    """Same-size batches, never padded: each image's prediction, label and score are its own (on a GPU, bf16 rounding
    can differ with the batch: that is why batching is opt-in)."""
    dataset = SizedImages([(20, 30), (30, 20), (20, 30), (20, 30), (25, 25), (20, 30), (30, 20)])
    model = OneByOne().eval()
    runs = {}
    for batch_size in (1, 3):
        seen: dict = {}

        def keep(index, prediction, label, seen=seen):
            seen[index] = prediction, label

        runs[batch_size] = evaluate(model, dataset, CPU, batch_size=batch_size, on_prediction=keep), seen
    (alone, alone_seen), (batched, batched_seen) = runs[1], runs[3]
    assert torch.equal(alone.confusion.matrix, batched.confusion.matrix) and batched.images == 7
    assert sorted(batched_seen) == list(range(7))
    for index, (prediction, label) in batched_seen.items():
        image, expected_label = dataset.items[index]
        assert torch.equal(prediction, predict(model, image, CPU)) and torch.equal(prediction, alone_seen[index][0])
        assert torch.equal(label, expected_label.long())


def test_a_batch_with_test_time_augmentation_predicts_each_image_as_alone():
    images = torch.randint(0, 256, (3, 3, 24, 36), dtype=torch.uint8)
    model = OneByOne().eval()
    batched = predict_batch(model, images, CPU, InferenceParams(flip=True, scales=[0.5, 1.0, 1.5]))
    assert batched.shape == (3, 24, 36)
    for image, prediction in zip(images, batched):
        assert torch.equal(prediction, predict(model, image, CPU, InferenceParams(flip=True, scales=[0.5, 1.0, 1.5])))
