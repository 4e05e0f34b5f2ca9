"""The `evaluate` section: how the evaluate stage predicts val and what CI tolerates."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import limits


@dataclass(frozen=True)
class EvaluateParams:
    flip: bool = False  # test-time augmentation: average with the horizontally flipped image
    scales: list[float] = field(default_factory=lambda: [1.0])  # test-time augmentation: average over these scales
    max_miou_drop: float = field(default=0.005, metadata=limits(0))  # CI fails when a model's val mIoU falls more
    # >1: same-size images predicted together; faster on a GPU, not always the same pixels (evaluation/evaluate.py)
    batch_size: int = field(default=1, metadata=limits(1))

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise PipelineError(f"scales: must be a non-empty list of positive numbers, got {self.scales}")
