"""The `evaluate` section: how the evaluate stage batches val and what CI tolerates (how it predicts each image is
the `inference` section's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.core.params.schema import limits


@dataclass(frozen=True)
class EvaluateParams:
    MOVED: ClassVar[dict[str, str]] = {"flip": "inference.flip", "scales": "inference.scales"}  # schema.build
    max_miou_drop: float = field(default=0.005, metadata=limits(0))  # CI fails when a model's val mIoU falls more
    # >1: same-size images predicted together; faster on a GPU, not always the same pixels (evaluation/evaluate.py)
    batch_size: int = field(default=1, metadata=limits(1))

