"""Evaluation of a trained model on a split: full-resolution predictions, one confusion matrix accumulated on the
device, and the files the evaluate stage writes from it (metrics, per-class and confusion tables, speed).

Images are predicted one at a time by default. VOC's sizes vary and are never padded; `batch_size` > 1 predicts the
images that share a size together, which a GPU runs faster but, in bf16, not always to the same pixels (see
docs/performance.md), so it is opt-in (`evaluate.batch_size`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_dir
from pipeline.core.labels import LabelSet, label_png
from pipeline.core.params.inference import InferenceParams
from pipeline.core.progress import Progress
from pipeline.core.runtime import Runtime
from pipeline.evaluation.metrics import ConfusionMatrix
from pipeline.evaluation.predict import WHOLE, predict_batch


@dataclasses.dataclass
class EvaluationRun:
    confusion: ConfusionMatrix
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def dataset_labels(dataset, labels: LabelSet | None = None) -> LabelSet:
    """The label set of `dataset` (a `PreparedSplit`'s own, or `labels` for a dataset without one): it sizes the
    confusion matrix and names the scores. Never guessed: a dataset's class count decides every score."""
    labels = labels or getattr(dataset, "labels", None)
    if not isinstance(labels, LabelSet):
        raise TypeError(f"{type(dataset).__name__} has no label set (`labels`); evaluate a PreparedSplit, or pass "
                        "labels=")
    return labels


def evaluate(
    model: torch.nn.Module,
    dataset,
    runtime: Runtime,
    *,
    indices: Iterable[int] | None = None,
    inference: InferenceParams = WHOLE,
    on_prediction: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = False,
    batch_size: int = 1,
    labels: LabelSet | None = None,
) -> EvaluationRun:
    """Predict every image of `dataset` (or `indices` of it: a rank's shard) and accumulate the confusion matrix.

    `on_prediction(index, prediction, label)` receives each H×W prediction and label (on the device), e.g. to
    write the palette PNG; with `batch_size` > 1 images come grouped by size, so not in index order.
    """
    model.eval()
    confusion = ConfusionMatrix(dataset_labels(dataset, labels).num_classes, device=runtime.device)
    indices = list(range(len(dataset)) if indices is None else indices)
    start = time.perf_counter()
    with runtime.without_autotuning(), Progress(len(indices), desc="evaluate", unit="images",
                                                enabled=progress) as bar:
        for batch in same_size_batches(dataset, indices, batch_size):
            images, labels = _load(dataset, batch, runtime)
            predictions = predict_batch(model, images, runtime, inference)
            confusion.update(predictions, labels)
            if on_prediction is not None:
                for index, prediction, label in zip(batch, predictions, labels):
                    on_prediction(index, prediction, label)
            bar.update(len(batch))
    runtime.synchronize()
    return EvaluationRun(confusion, len(indices), time.perf_counter() - start)


def same_size_batches(dataset, indices: list[int], batch_size: int) -> list[list[int]]:
    """`indices` cut into batches of at most `batch_size` images of one size (a size's images in index order).

    The sizes come from `dataset.sizes` ((height, width) per index, as `PreparedSplit` has them) without reading
    the images; any other dataset is asked for its items."""
    if batch_size == 1:
        return [[index] for index in indices]
    sizes = getattr(dataset, "sizes", None)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index in indices:
        size = tuple(sizes[index]) if sizes is not None else tuple(dataset[index][0].shape[-2:])
        by_size.setdefault(size, []).append(index)
    return [group[start:start + batch_size] for group in by_size.values()
            for start in range(0, len(group), batch_size)]


def _load(dataset, batch: list[int], runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images (N×3×H×W uint8) and labels (N×H×W) on the device; through pinned memory to a GPU, so the
    copy does not wait for the previous batch's kernels."""
    images, labels = (torch.stack(tensors) for tensors in zip(*(dataset[index] for index in batch)))
    if runtime.on_gpu:
        images, labels = images.pin_memory(), labels.pin_memory()
    return (images.to(runtime.device, non_blocking=True),
            labels.to(runtime.device, non_blocking=True).long())


@dataclasses.dataclass
class EvaluationReport:
    """Everything the evaluate stage writes: `metrics` (compared by CI), `speed` (varies run to run, kept apart),
    the per-class and confusion rows for DVC plots, and the raw confusion matrix."""

    metrics: dict
    speed: dict
    per_class: list[dict]
    confusion: list[dict]
    matrix: torch.Tensor


def evaluate_split(model: torch.nn.Module, dataset, runtime: Runtime, predictions_dir: Path, *,
                   inference: InferenceParams = WHOLE, batch_size: int = 1) -> EvaluationReport:
    """Evaluate `model` on all of `dataset`, writing each prediction as `<id>.png` (palette PNG in the dataset's
    colours) into `predictions_dir`, which is replaced as a whole once every image is done. The metrics record
    the inference settings they were measured with."""
    labels = dataset_labels(dataset)
    if runtime.on_gpu:
        torch.cuda.reset_peak_memory_stats(runtime.device)
    with atomic_dir(predictions_dir) as out:
        def save(index, prediction, _label):
            label_png(prediction.to(torch.uint8).cpu().numpy(), labels).save(out / f"{dataset.ids[index]}.png")

        run = evaluate(model, dataset, runtime, inference=inference, on_prediction=save, batch_size=batch_size)
    scores = run.confusion.compute(labels.classes)
    speed = {"images_per_second": round(run.images_per_second, 2), "peak_memory_mb": round(runtime.peak_memory_mb(), 1),
             "device": str(runtime.device), "images": run.images, "batch_size": batch_size}
    metrics = {**report(scores), "inference": dataclasses.asdict(inference)}
    return EvaluationReport(metrics=metrics, speed=speed, per_class=per_class_rows(scores),
                            confusion=confusion_rows(run.confusion.matrix, labels.classes), matrix=run.confusion.matrix)


def log_evaluation(tracker, evaluation: EvaluationReport) -> None:
    """The evaluation's scores, speed and per-class table, into the model's MLflow run (the render stage adds the
    confusion figure)."""
    metrics = evaluation.metrics
    tracker.log_metrics({f"val_{name}": metrics[name]
                         for name in ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou")})
    tracker.log_metrics({f"val_{name}": value for name, value in evaluation.speed.items() if isinstance(value, float)})
    tracker.log_table({"class": list(metrics["iou"]), "iou": list(metrics["iou"].values())}, "val_per_class_iou.json")


def report(scores: dict) -> dict:
    """The DVC metrics file: the VOC scores, with NaN (a class absent from labels and predictions) written as
    null, and a note saying those classes are left out of the mean."""
    iou = {name: (None if value != value else round(value, 6)) for name, value in scores["iou"].items()}
    out = {
        "miou": round(scores["miou"], 6),
        "pixel_accuracy": round(scores["pixel_accuracy"], 6),
        "mean_class_accuracy": round(scores["mean_class_accuracy"], 6),
        "fw_iou": round(scores["fw_iou"], 6),
        "iou": iou,
        "absent_classes": scores["absent_classes"],
    }
    if scores["absent_classes"]:
        out["note"] = (f"{len(scores['absent_classes'])} class(es) absent from both labels and predictions have "
                       "IoU null and are left out of the mIoU")
    return out


def per_class_rows(scores: dict) -> list[dict]:
    """Rows for the per-class bar chart (`dvc plots`); absent classes have no IoU and no bar."""
    return [{"class": name, "iou": round(value, 6)} for name, value in scores["iou"].items() if value == value]


def confusion_rows(matrix, class_names) -> list[dict]:
    """One row per (truth, prediction) pair with its pixel count, for the `confusion_counts` DVC template."""
    matrix = matrix.cpu().tolist() if hasattr(matrix, "cpu") else matrix
    return [{"truth": t, "prediction": p, "pixels": int(matrix[i][j])}
            for i, t in enumerate(class_names) for j, p in enumerate(class_names)]
