"""Inference: images → their class maps at full resolution, with optional test-time augmentation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from pipeline.core.runtime import Runtime
from pipeline.prepared.transforms import normalize


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    runtime: Runtime,
    *,
    flip: bool = False,
    scales: Iterable[float] = (1.0,),
) -> torch.Tensor:
    """uint8 N×3×H×W images of one size, on the runtime's device → N×H×W long class maps.

    With test-time augmentation the softmax probabilities of every scale (and its mirror image) are averaged
    at full resolution, as in DeepLab's multi-scale evaluation.
    """
    height, width = images.shape[-2:]
    batch = normalize(images)
    views = [(scale, mirrored) for scale in scales for mirrored in ((False, True) if flip else (False,))]
    if views == [(1.0, False)]:
        with runtime.autocast():
            return model(runtime.place_input(batch)).argmax(1)
    total = None
    for scale, mirrored in views:
        x = batch if scale == 1.0 else F.interpolate(batch, scale_factor=scale, mode="bilinear", align_corners=False)
        x = x.flip(-1) if mirrored else x
        with runtime.autocast():
            logits = model(runtime.place_input(x)).float()
        logits = logits.flip(-1) if mirrored else logits
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        total = logits.softmax(1) if total is None else total + logits.softmax(1)
    return total.argmax(1)


def predict(model: torch.nn.Module, image: torch.Tensor, runtime: Runtime, *, flip: bool = False,
            scales: Iterable[float] = (1.0,)) -> torch.Tensor:
    """uint8 3×H×W image on the runtime's device → H×W long class map (`predict_batch` of one)."""
    return predict_batch(model, image.unsqueeze(0), runtime, flip=flip, scales=scales)[0]
