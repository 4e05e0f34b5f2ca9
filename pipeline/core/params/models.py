"""The `models` section: one entry per trained model. Its key names the model's stages (`train@<key>`), files and
runs; `architecture` picks a registered network (`pipeline.models.registry`), which checks its `options`; `train`
overrides the shared recipe (`pipeline.core.params.train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import ParamsFile, check_name, check_sha256


@dataclass(frozen=True)
class InitParams:
    """`models.<name>.init`: start from a trained segmentation model, every tensor whose name and shape match
    (pipeline.models.weights.load_init): a model file of this pipeline (any dataset, any class count), a
    torchvision-format state dict, or `torchvision` (its COCO_WITH_VOC_LABELS_V1 weights where the architecture
    has them)."""

    source: str = field(metadata={"key": "from"})
    sha256: str | None = None  # optional pin of a local file: a file with another sha256 is refused

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            if self.source == "torchvision":
                raise PipelineError("sha256: only used with a local file, not with from: torchvision; remove it")
            check_sha256(self.sha256, "sha256")


@dataclass(frozen=True)
class ModelParams:
    """One entry of `models`. `options` stay a mapping here: the architecture's own options dataclass types them
    (`pipeline.models.registry.typed_options`), so this module imports no model code."""

    architecture: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    init: InitParams | None = None


def model_params(params: ParamsFile, name: str) -> tuple[str, ModelParams]:
    """(key, entry) of model `name` (matched case-insensitively)."""
    key = params.model_key(name)
    with params.naming_errors():
        check_name(key, f"models.{key}")
    return key, params.section(f"models.{key}", ModelParams, raw=_entry(params, key))


def _entry(params: ParamsFile, key: str) -> dict:
    entry = params.raw["models"][key]
    if not isinstance(entry, dict):
        with params.naming_errors():
            raise PipelineError(f"models.{key}: must be a mapping with architecture and options, got {entry!r}")
    return entry
