"""The `train` section: the shared training recipe, which each model may override under `models.<name>.train`
(see `pipeline.core.params.models`). The defaults here are params.yaml's values (tests/test_params.py holds them
together): mmsegmentation's DeepLabV3 R50-D8 512×512 20k VOC-aug schedule."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import ParamsFile, build, limits

# The loss: a weighted sum of registered losses (pipeline.training.losses), each entry its name, its weight and its
# own options. Cross-entropy alone is the recipe every published VOC number trains with.
DEFAULT_LOSS = ({"name": "cross_entropy", "weight": 1.0, "class_weights": None},)


@dataclass(frozen=True)
class TrainParams:
    """Shared training defaults (the `train` section); each model may override any of them."""

    epochs: int = field(default=30, metadata=limits(1))
    batch_size: int = field(default=16, metadata=limits(1))
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.01, metadata=limits(0, low_open=True))
    momentum: float = field(default=0.9, metadata=limits(0, 1, high_open=True))
    weight_decay: float = field(default=5e-4, metadata=limits(0))
    lr_schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = field(default=0.9, metadata=limits(0, low_open=True))
    warmup_epochs: int = field(default=0, metadata=limits(0))
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    loss: list[dict[str, Any]] = field(default_factory=lambda: [dict(term) for term in DEFAULT_LOSS])
    aux_weight: float = field(default=0.4, metadata=limits(0))
    bn_momentum: float | None = field(default=None, metadata=limits(0, 1, low_open=True))
    workers: int = field(default=0, metadata=limits(0))
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    seed: int = field(default=0, metadata=limits(0))
    val_every: int = field(default=5, metadata=limits(1))
    # Fine-tuning (docs/fine-tuning.md): the backbone's weights and BatchNorm statistics untouched for the first N
    # epochs, and the learning rate of everything outside the backbone times head_lr_mult.
    freeze_backbone_epochs: int = field(default=0, metadata=limits(0))
    head_lr_mult: float = field(default=1.0, metadata=limits(0, low_open=True))

    def __post_init__(self) -> None:
        # Messages name the field only: `build` prefixes the section (`train.` or `models.<name>.train.`).
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise PipelineError(f"crop_size: must be [height, width] of positive ints, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise PipelineError(f"scale_range: must be [low, high] with 0 < low <= high, got {self.scale_range}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise PipelineError(f"device: must be one of auto, cpu, cuda, cuda:N, got {self.device!r}")
        if not self.loss:
            raise PipelineError("loss: list at least one loss, e.g. [{name: cross_entropy, weight: 1.0}]")
        for i, term in enumerate(self.loss):
            name, weight = term.get("name"), term.get("weight", 1.0)
            if not isinstance(name, str) or not name:
                raise PipelineError(f"loss[{i}].name: missing: the registered loss to use, e.g. cross_entropy")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
                raise PipelineError(f"loss[{i}].weight: must be a number > 0, got {weight!r}")


def train_params(params: ParamsFile, key: str | None = None) -> TrainParams:
    """The shared `train` recipe, with model `key`'s own `models.<key>.train` overrides applied when given."""
    shared = params.section("train", TrainParams)
    if key is None:
        return shared
    entry = params.raw["models"][key]
    overrides = (entry or {}).get("train") or {}
    with params.naming_errors():
        if not isinstance(overrides, dict):
            raise PipelineError(f"models.{key}.train: must be a mapping of train keys, got {overrides!r}")
        return build(TrainParams, {**dataclasses.asdict(shared), **overrides}, f"models.{key}.train")
