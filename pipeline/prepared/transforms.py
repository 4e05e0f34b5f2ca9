"""Joint image/label transforms on uint8 tensors: run on whatever device the batch is on (GPU when there is one)."""

from __future__ import annotations

import torch

# ImageNet statistics: the pretrained backbones expect them, and from-scratch models do not mind.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W (0..255) → float32 normalised with the ImageNet mean and std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std
