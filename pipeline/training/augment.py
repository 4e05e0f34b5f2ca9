"""Training-time augmentation of (uint8 image, label) pairs, done on the batch's device (the GPU when there is one).

Recipe of torchvision's segmentation reference: random scale, pad-if-smaller, random crop, horizontal flip.
Random draws come from the CPU generator so a seed gives the same crops on CPU and GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.labels import IGNORE_INDEX
from pipeline.prepared.transforms import MEAN, normalize


def scale_crop_flip(
    image: torch.Tensor,
    label: torch.Tensor,
    crop_size: tuple[int, int],
    scale_range: tuple[float, float],
    hflip: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: uint8 3×H×W image and H×W label → float 3×h×w image (0..255) and long h×w label, h×w = crop_size.

    Images smaller than the crop are padded with the mean colour (zero after normalisation) and their labels
    with 255, so small images are never dropped and padding never counts in the loss.
    """
    crop_h, crop_w = crop_size
    scale = float(torch.empty(()).uniform_(scale_range[0], scale_range[1]))
    height, width = image.shape[-2:]
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    img = image.float().unsqueeze(0)
    lab = label.unsqueeze(0).unsqueeze(0).float()
    if (new_h, new_w) != (height, width):
        img = F.interpolate(img, size=(new_h, new_w), mode="bilinear", align_corners=False)
        lab = F.interpolate(lab, size=(new_h, new_w), mode="nearest")
    img, lab = img[0], lab[0, 0].long()

    pad_h, pad_w = max(crop_h - new_h, 0), max(crop_w - new_w, 0)
    if pad_h or pad_w:
        mean = torch.tensor(MEAN, device=img.device).view(3, 1, 1) * 255
        canvas = mean.expand(3, new_h + pad_h, new_w + pad_w).clone()
        canvas[:, :new_h, :new_w] = img
        img = canvas
        padded_label = torch.full((new_h + pad_h, new_w + pad_w), IGNORE_INDEX, dtype=torch.long, device=lab.device)
        padded_label[:new_h, :new_w] = lab
        lab = padded_label

    top = int(torch.randint(0, img.shape[-2] - crop_h + 1, ()))
    left = int(torch.randint(0, img.shape[-1] - crop_w + 1, ()))
    img = img[:, top : top + crop_h, left : left + crop_w]
    lab = lab[top : top + crop_h, left : left + crop_w]
    if hflip and bool(torch.rand(()) < 0.5):
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab


def train_batch(samples, device: torch.device, crop_size, scale_range, hflip: bool, channels_last: bool = False):
    """A list of (uint8 image, label) pairs → normalised float N×3×h×w on `device` and long N×h×w labels."""
    images, labels = [], []
    for image, label in samples:
        image = image.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True)
        image, label = scale_crop_flip(image, label, tuple(crop_size), tuple(scale_range), hflip)
        images.append(image)
        labels.append(label)
    batch = normalize(torch.stack(images))
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch, torch.stack(labels)


def collate_samples(samples):
    """Keep variable-size samples as a list: they are cropped to one size on the device, not in the workers."""
    return samples
