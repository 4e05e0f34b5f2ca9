"""Segmentation metrics as the VOC protocol defines them: one confusion matrix accumulated over the whole split,
scores computed from it once at the end.

A mean of per-image IoUs is a different (and larger, since easy images dominate) number; `per_image_iou` exists
only to rank images for rendering, never to report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C×C int64 counts on the tensors' device, rows = ground truth, columns = prediction, void pixels skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("prediction and target must be integer class indices (take argmax of the logits first)")
    keep = target != IGNORE_INDEX
    # int64 before the multiply: uint8 labels times 21 would wrap around.
    truth = target[keep].long()
    guess = pred[keep].long()
    bad = (truth < 0) | (truth >= num_classes) | (guess < 0) | (guess >= num_classes)
    if bad.any():
        values = torch.cat([truth[bad], guess[bad]]).unique().tolist()
        raise PipelineError(
            f"class indices {values[:10]} outside 0..{num_classes - 1} (and {IGNORE_INDEX} in the target): "
            "wrong num_classes or corrupt label files"
        )
    counts = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates over batches (and processes), then `compute()`; the shape of torchvision's reference class."""

    def __init__(self, num_classes: int, device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of any shape; the matrix follows the tensors' device so a GPU batch never round-trips."""
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        self.matrix += _confusion(pred, target.to(pred.device), self.num_classes)

    def reset(self) -> None:
        self.matrix.zero_()

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all DDP ranks; a no-op in a single process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.matrix)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        if class_names is None:
            class_names = [str(c) for c in range(self.num_classes)]  # the indices: names come with a label set
        return scores_from_confusion(self.matrix, class_names)


def _ious(matrix: np.ndarray) -> np.ndarray:
    """IoU per class, NaN where the class has no pixel in ground truth nor prediction (0/0)."""
    tp = np.diag(matrix)
    union = matrix.sum(axis=1) + matrix.sum(axis=0) - tp
    iou = np.full(len(matrix), math.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def _mean(values: np.ndarray) -> float:
    """Mean of the non-NaN values, NaN (without numpy's empty-slice warning) when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def scores_from_confusion(matrix: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict:
    """The VOC scores of an accumulated confusion matrix (rows = ground truth, columns = prediction).

    A class with neither ground-truth nor predicted pixels has IoU NaN and is left out of the mean (it is listed in
    `absent_classes`); a class that is predicted but absent from ground truth has IoU 0 and counts, as in the
    official VOC devkit and torchmetrics.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {len(class_names)} class names")
    tp = np.diag(matrix)
    truth = matrix.sum(axis=1)
    total = truth.sum()
    iou = _ious(matrix)
    present = truth > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / truth, math.nan)
    return {
        "miou": _mean(iou),
        "iou": {name: float(value) for name, value in zip(class_names, iou)},
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "mean_class_accuracy": _mean(recall),
        # Every class with ground-truth pixels has a defined IoU, so the NaNs drop out with weight 0.
        "fw_iou": float(np.sum(truth[present] / total * iou[present])) if total else math.nan,
        "absent_classes": [name for name, value in zip(class_names, iou) if math.isnan(value)],
    }


def per_image_iou(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int
) -> float:
    """Mean IoU over the classes present in this image's ground truth or prediction (void pixels ignored).

    NaN when every pixel is void. For ranking images to render only: the reported metric is the accumulated one.
    """
    # ascontiguousarray: torch cannot wrap numpy views with negative strides (a flipped label, say).
    pred, target = (torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
                    for x in (pred, target))
    matrix = _confusion(pred, target, num_classes)
    return _mean(_ious(matrix.cpu().numpy().astype(np.float64)))
