"""The `export` section: the ONNX export and its check against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import limits


@dataclass(frozen=True)
class ExportParams:
    opset: int = field(default=20, metadata=limits(18))
    # [height, width] of the generated images each ONNX file is checked on against PyTorch
    check_sizes: list[list[int]] = field(
        default_factory=lambda: [[375, 500], [500, 333], [281, 500], [333, 427], [72, 88]])
    min_agreement: float = field(default=0.999, metadata=limits(0, 1))

    def __post_init__(self) -> None:
        if not self.check_sizes or any(len(size) != 2 or min(size) < 16 for size in self.check_sizes):
            raise PipelineError(f"check_sizes: must be a non-empty list of [height, width] pairs of at least 16 "
                                f"pixels, got {self.check_sizes}")
