import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from pipeline.core.errors import PipelineError
from pipeline.core.labels import CLASSES, IGNORE_INDEX
from pipeline.evaluation.metrics import ConfusionMatrix, per_image_iou, scores_from_confusion

V = IGNORE_INDEX
NAMES = ("a", "b", "c")
# Three classes, two void pixels. Pairs (truth, prediction) over the 10 labelled pixels:
#   truth a: a a b      truth b: b b b a      truth c: c b c
TARGET = torch.tensor([[0, 0, 1, 1], [0, 2, 2, V], [1, 1, 2, V]])
PRED = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 0], [1, 0, 2, 2]])
EXPECTED_MATRIX = [[2, 1, 0], [1, 3, 0], [0, 1, 2]]  # rows = truth, columns = prediction


def hand_made_scores():
    matrix = ConfusionMatrix(num_classes=3)
    matrix.update(PRED, TARGET)
    return matrix, matrix.compute(NAMES)


def test_confusion_matrix_and_iou_by_hand():
    matrix, scores = hand_made_scores()
    assert matrix.matrix.tolist() == EXPECTED_MATRIX
    assert matrix.matrix.dtype == torch.int64
    # truth totals 3, 4, 3; prediction totals 3, 5, 2
    # a: 2 / (3 + 3 - 2) = 0.5;  b: 3 / (4 + 5 - 3) = 0.5;  c: 2 / (3 + 2 - 2) = 2/3
    assert scores["iou"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 2 / 3})
    # (0.5 + 0.5 + 2/3) / 3 = 5/9
    assert scores["miou"] == pytest.approx(5 / 9)
    assert scores["absent_classes"] == []


def test_accuracies_and_frequency_weighted_iou_by_hand():
    _, scores = hand_made_scores()
    # trace 7 of 10 labelled pixels
    assert scores["pixel_accuracy"] == pytest.approx(0.7)
    # recalls 2/3, 3/4, 2/3 → (2/3 + 3/4 + 2/3) / 3 = 25/36
    assert scores["mean_class_accuracy"] == pytest.approx(25 / 36)
    # 3/10 · 0.5 + 4/10 · 0.5 + 3/10 · 2/3 = 0.15 + 0.2 + 0.2 = 0.55
    assert scores["fw_iou"] == pytest.approx(0.55)


def test_scores_are_plain_python_floats():
    _, scores = hand_made_scores()
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou"):
        assert type(scores[key]) is float
    assert all(type(value) is float for value in scores["iou"].values())


def test_void_pixels_are_skipped_whatever_is_predicted_there():
    other = PRED.clone()
    other[TARGET == V] = torch.tensor([2, 1])
    assert not torch.equal(other, PRED)
    matrix = ConfusionMatrix(num_classes=3)
    matrix.update(other, TARGET)
    assert matrix.matrix.tolist() == EXPECTED_MATRIX


def random_batch(seed, shape=(2, 48, 40)):
    """Labels where every class occurs, about 10 % void, and predictions right about 60 % of the time."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 21, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.1] = V
    pred = torch.where(torch.rand(shape, generator=generator) < 0.6, target, torch.randint(0, 21, shape,
                                                                                           generator=generator))
    pred[pred == V] = 0
    return pred, target


def test_equals_torchmetrics_jaccard_index():
    pred, target = random_batch(0)
    assert set(target.unique().tolist()) == set(range(21)) | {V}
    matrix = ConfusionMatrix(21)
    matrix.update(pred, target)
    scores = matrix.compute(CLASSES)

    macro = MulticlassJaccardIndex(num_classes=21, ignore_index=V, average="macro")
    assert scores["miou"] == pytest.approx(macro(pred, target).item(), rel=1e-6)
    per_class = MulticlassJaccardIndex(num_classes=21, ignore_index=V, average="none")(pred, target)
    assert [scores["iou"][name] for name in CLASSES] == pytest.approx(per_class.tolist(), rel=1e-6)


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out():
    matrix = np.zeros((4, 4), dtype=np.int64)
    matrix[:3, :3] = EXPECTED_MATRIX
    scores = scores_from_confusion(matrix, ("a", "b", "c", "d"))
    assert math.isnan(scores["iou"]["d"])
    assert scores["absent_classes"] == ["d"]
    assert scores["miou"] == pytest.approx(5 / 9)
    assert scores["mean_class_accuracy"] == pytest.approx(25 / 36)
    assert scores["fw_iou"] == pytest.approx(0.55)


def test_class_predicted_but_absent_from_truth_scores_zero_and_counts():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    matrix = ConfusionMatrix(num_classes=3)
    matrix.update(pred, target)
    scores = matrix.compute(NAMES)
    # a: 1 / (2 + 1 - 1) = 0.5;  b: 2 / 2 = 1;  c: 0 / (0 + 1 - 0) = 0
    assert scores["iou"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert scores["miou"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3
    assert scores["absent_classes"] == []
    # c has no ground truth, so its recall is undefined and not averaged: (1/2 + 2/2) / 2
    assert scores["mean_class_accuracy"] == pytest.approx(0.75)


def test_accumulating_batches_equals_one_update_on_everything():
    batches = [random_batch(seed, shape) for seed, shape in ((1, (3, 16, 16)), (2, (1, 40, 24)), (3, (5, 7)))]
    accumulated = ConfusionMatrix(21)
    for pred, target in batches:
        accumulated.update(pred, target)
    whole = ConfusionMatrix(21)
    whole.update(torch.cat([p.flatten() for p, _ in batches]), torch.cat([t.flatten() for _, t in batches]))
    assert torch.equal(accumulated.matrix, whole.matrix)
    # json rather than ==, since NaN != NaN for an absent class
    assert json.dumps(accumulated.compute(), sort_keys=True) == json.dumps(whole.compute(), sort_keys=True)


def test_accumulated_miou_is_not_the_mean_of_per_image_ious():
    # Image 1: all class a, predicted right → its IoU is 1.  Image 2: 1 pixel b predicted as a.
    # Accumulated: a: 4 / (4 + 5 - 4) = 0.8, b: 0 / 1 = 0 → mIoU 0.4; mean of per-image IoUs: (1 + 0) / 2 = 0.5.
    images = [(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 0])), (torch.tensor([0]), torch.tensor([1]))]
    matrix = ConfusionMatrix(num_classes=2)
    for pred, target in images:
        matrix.update(pred, target)
    assert matrix.compute(("a", "b"))["miou"] == pytest.approx(0.4)
    assert [per_image_iou(p, t, num_classes=2) for p, t in images] == [1.0, 0.0]


def test_uint8_labels_do_not_overflow():
    target = torch.tensor([20, 20, 19, V], dtype=torch.uint8)
    pred = torch.tensor([20, 19, 19, 3], dtype=torch.uint8)
    matrix = ConfusionMatrix(21)
    matrix.update(pred, target)
    assert matrix.matrix[20, 20] == 1 and matrix.matrix[20, 19] == 1 and matrix.matrix[19, 19] == 1
    assert matrix.matrix.sum() == 3


def test_bad_inputs_are_refused():
    matrix = ConfusionMatrix(num_classes=3)
    with pytest.raises(PipelineError, match="outside 0..2"):
        matrix.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="integer"):
        matrix.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class names"):
        scores_from_confusion(np.eye(3), CLASSES)


def test_reduce_without_distributed_is_a_no_op_and_reset_clears():
    matrix, _ = hand_made_scores()
    matrix.reduce_from_all_processes()
    assert matrix.matrix.tolist() == EXPECTED_MATRIX
    matrix.reset()
    assert matrix.matrix.sum() == 0
    assert math.isnan(matrix.compute(NAMES)["miou"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matrix_stays_on_the_tensors_device():
    pred, target = random_batch(4)
    matrix = ConfusionMatrix(21, device="cuda")
    matrix.update(pred.cuda(), target.cuda())
    assert matrix.matrix.is_cuda
    reference = ConfusionMatrix(21)
    reference.update(pred, target)
    assert torch.equal(matrix.matrix.cpu(), reference.matrix)


def test_per_image_iou_by_hand():
    target = np.array([[0, 0], [2, 2], [V, V]], dtype=np.uint8)
    pred = np.array([[0, 2], [2, 2], [5, 5]], dtype=np.uint8)
    # only classes 0 and 2 occur on labelled pixels (5 sits on void):
    # 0: 1 / (2 + 1 - 1) = 1/2;  2: 2 / (2 + 3 - 2) = 2/3 → (1/2 + 2/3) / 2 = 7/12
    assert per_image_iou(pred, target, 21) == pytest.approx(7 / 12)
    assert per_image_iou(torch.from_numpy(pred), torch.from_numpy(target), 21) == pytest.approx(7 / 12)
    assert per_image_iou(pred[:, ::-1], target[:, ::-1], 21) == pytest.approx(7 / 12)  # a flipped view works too
    assert per_image_iou(PRED, TARGET, num_classes=3) == pytest.approx(5 / 9)
