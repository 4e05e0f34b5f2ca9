"""The `inference` section: how evaluate, `tools.predict` and the served model run a network over one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class InferenceParams:
    # whole: the network sees the whole image at once; slide: windows of crop_size every stride, their logits
    # averaged where they overlap (mmsegmentation's slide mode), in memory bounded by the window, not the image
    mode: Literal["whole", "slide"] = "whole"
    crop_size: list[int] = field(default_factory=lambda: [512, 512])  # slide: the window, [height, width]
    stride: list[int] = field(default_factory=lambda: [341, 341])  # slide: its step, [height, width]
    flip: bool = False  # test-time augmentation: average with the horizontally flipped image
    scales: list[float] = field(default_factory=lambda: [1.0])  # test-time augmentation: average over these scales

    def __post_init__(self) -> None:
        for key in ("crop_size", "stride"):
            value = getattr(self, key)
            if len(value) != 2 or min(value) < 1:
                raise PipelineError(f"{key}: must be [height, width], two positive integers, got {value}")
        if any(step > crop for step, crop in zip(self.stride, self.crop_size)):
            raise PipelineError(f"stride: {self.stride} is larger than crop_size {self.crop_size}: pixels between "
                                "windows would never be predicted; use a stride at most the window's size")
        if not self.scales or min(self.scales) <= 0:
            raise PipelineError(f"scales: must be a non-empty list of positive numbers, got {self.scales}")

    @property
    def augmented(self) -> bool:
        """Whether test-time augmentation is on (more than the image as it is)."""
        return self.flip or list(self.scales) != [1.0]
