"""Inference: images → their class maps at full resolution, with optional test-time augmentation, in whole mode
(the network sees the image at once) or slide mode (windows, for photos larger than the network should see).

Slide mode follows mmsegmentation's `slide_inference`: windows of `crop_size` every `stride`, the last of each row
and column flush with the image's edge, and each pixel's logits averaged over the windows that cover it. Its
memory is bounded by one row of windows, never by classes × pixels: the windows go row by row, and the rows above
the next row's first window are final, so their class is taken (argmax) and their logits freed. A window that
covers the whole image (`crop_size` at least its size) is whole mode's forward, and gives its mask exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.params.inference import InferenceParams
from pipeline.core.runtime import Runtime
from pipeline.prepared.transforms import normalize

WHOLE = InferenceParams()
# Windows per forward pass in slide mode: enough to keep a GPU busy at 512×512, few enough that a ResNet-101's
# activations for them stay well under a gigabyte on a CPU.
WINDOWS_PER_FORWARD = 4


def _views(inference: InferenceParams) -> list[tuple[float, bool]]:
    return [(scale, mirrored) for scale in inference.scales for mirrored in ((False, True) if inference.flip else
                                                                             (False,))]


def _scores(model: torch.nn.Module, batch: torch.Tensor, runtime: Runtime, inference: InferenceParams
            ) -> torch.Tensor:
    """Normalised N×3×h×w batch on the device → N×C×h×w scores: the logits as they are, or with test-time
    augmentation the sum of each view's softmax probabilities (scaled views resized back to h×w)."""
    views = _views(inference)
    if views == [(1.0, False)]:
        with runtime.autocast():
            return model(runtime.place_input(batch))
    height, width = batch.shape[-2:]
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
    return total


@torch.no_grad()
def predict_batch(model: torch.nn.Module, images: torch.Tensor, runtime: Runtime,
                  inference: InferenceParams = WHOLE) -> torch.Tensor:
    """uint8 N×3×H×W images of one size, on the runtime's device → N×H×W long class maps.

    With test-time augmentation the softmax probabilities of every scale (and its mirror image) are averaged
    at full resolution, as in DeepLab's multi-scale evaluation; in slide mode, within each window."""
    if inference.mode == "slide":
        return torch.stack([slide_mask(model, image, runtime, inference).long() for image in images])
    return _scores(model, normalize(images), runtime, inference).argmax(1)


def predict(model: torch.nn.Module, image: torch.Tensor, runtime: Runtime,
            inference: InferenceParams = WHOLE) -> torch.Tensor:
    """uint8 3×H×W image on the runtime's device → H×W long class map (`predict_batch` of one)."""
    return predict_batch(model, image.unsqueeze(0), runtime, inference)[0]


def predict_mask(model: torch.nn.Module, image: torch.Tensor, runtime: Runtime,
                 inference: InferenceParams = WHOLE) -> torch.Tensor:
    """uint8 3×H×W image (anywhere) → H×W uint8 class map on the CPU: what a photo's mask is written from. In slide
    mode the image stays where it is and only its windows move to the device."""
    if inference.mode == "slide":
        return slide_mask(model, image, runtime, inference).cpu()
    return predict(model, image.contiguous().to(runtime.device), runtime, inference).to(torch.uint8).cpu()


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Where the windows along one side start: every `stride`, the last flush with the end (mmsegmentation's
    grid: `max(length - window + stride - 1, 0) // stride + 1` windows)."""
    window = min(window, length)
    count = max(length - window + stride - 1, 0) // stride + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


def _coverage(length: int, window: int, starts: list[int], device: torch.device) -> torch.Tensor:
    """How many windows cover each position along one side."""
    covered = torch.zeros(length + 1, dtype=torch.float32, device=device)
    for start in starts:
        covered[start] += 1
        covered[start + window] -= 1
    return covered.cumsum(0)[:length]


@torch.no_grad()
def slide_mask(model: torch.nn.Module, image: torch.Tensor, runtime: Runtime, inference: InferenceParams
               ) -> torch.Tensor:
    """uint8 3×H×W image → H×W class map (uint8, on the runtime's device) by windows, row by row.

    Memory: the image, the mask, one row of windows' scores (classes × window height × W floats) and
    WINDOWS_PER_FORWARD windows through the network; a window's own padding (the network's) is its business."""
    height, width = image.shape[-2:]
    crop_h, crop_w = min(inference.crop_size[0], height), min(inference.crop_size[1], width)
    rows = window_starts(height, crop_h, inference.stride[0])
    cols = window_starts(width, crop_w, inference.stride[1])
    device = runtime.device
    coverage_h = _coverage(height, crop_h, rows, device)
    coverage_w = _coverage(width, crop_w, cols, device)
    mask = torch.empty(height, width, dtype=torch.uint8, device=device)
    band, band_top = None, 0  # the scores of rows band_top … band_top + crop_h - 1, all columns

    def finish(stop: int) -> None:  # rows band_top … stop - 1 are final: their class, then their scores freed
        count = coverage_h[band_top:stop, None] * coverage_w[None, :]
        mask[band_top:stop] = (band[:, :stop - band_top] / count).argmax(0).to(torch.uint8)

    for top in rows:
        if band is not None and top > band_top:
            finish(top)
            shift = top - band_top  # the rows still open move up; a copy of them only, not a second band
            band[:, :crop_h - shift] = band[:, shift:].clone()
            band[:, crop_h - shift:] = 0
            band_top = top
        for first in range(0, len(cols), WINDOWS_PER_FORWARD):
            lefts = cols[first:first + WINDOWS_PER_FORWARD]
            windows = torch.stack([image[:, top:top + crop_h, left:left + crop_w] for left in lefts])
            scores = _scores(model, normalize(windows.to(device)), runtime, inference).float()
            if band is None:
                if scores.shape[1] > 256:
                    raise ValueError(f"{scores.shape[1]} classes do not fit a uint8 mask")
                band, band_top = scores.new_zeros(scores.shape[1], crop_h, width), top
            for left, window_scores in zip(lefts, scores):
                band[:, :, left:left + crop_w] += window_scores
    finish(height)
    return mask
