"""Full-resolution inference over a split, one image at a time (VOC sizes vary, so no padding waste), with
optional test-time augmentation, accumulating one confusion matrix on the device."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from pipeline.metrics import ConfusionMatrix
from pipeline.transforms import normalize
from pipeline.voc import NUM_CLASSES


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    flip: bool = False,
    scales: Iterable[float] = (1.0,),
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 3×H×W image on the model's device → H×W long class map.

    With test-time augmentation the softmax probabilities of every scale (and its mirror image) are averaged
    at full resolution, as in DeepLab's multi-scale evaluation.
    """
    height, width = image.shape[-2:]
    batch = normalize(image.unsqueeze(0))
    scales = list(scales)
    views = [(scale, mirrored) for scale in scales for mirrored in ((False, True) if flip else (False,))]
    if views == [(1.0, False)]:
        with autocast_for(image.device, amp):
            x = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
            return model(x).argmax(1)[0]
    total = torch.zeros(1, NUM_CLASSES, height, width, device=image.device)
    for scale, mirrored in views:
        x = batch if scale == 1.0 else F.interpolate(batch, scale_factor=scale, mode="bilinear", align_corners=False)
        x = x.flip(-1) if mirrored else x
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(image.device, amp):
            logits = model(x).float()
        logits = logits.flip(-1) if mirrored else logits
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        total += logits.softmax(1)
    return total.argmax(1)[0]


@dataclass
class EvaluationRun:
    confusion: ConfusionMatrix
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def evaluate(
    model: torch.nn.Module,
    dataset,
    device: torch.device,
    *,
    indices: Iterable[int] | None = None,
    flip: bool = False,
    scales: Iterable[float] = (1.0,),
    amp: bool = False,
    channels_last: bool = False,
    on_prediction: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> EvaluationRun:
    """Predict every image of `dataset` (or `indices` of it: a rank's shard) and accumulate the confusion matrix.

    `on_prediction(index, prediction, label)` receives each H×W prediction and label (on the device), e.g. to
    write the palette PNG or score the image.
    """
    model.eval()
    confusion = ConfusionMatrix(NUM_CLASSES, device=device)
    indices = list(range(len(dataset)) if indices is None else indices)
    start = time.perf_counter()
    for index in progress(indices):
        image, label = dataset[index]
        image = image.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True)
        prediction = predict(model, image, flip=flip, scales=scales, amp=amp, channels_last=channels_last)
        confusion.update(prediction, label.long())
        if on_prediction is not None:
            on_prediction(index, prediction, label)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EvaluationRun(confusion, len(indices), time.perf_counter() - start)


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
